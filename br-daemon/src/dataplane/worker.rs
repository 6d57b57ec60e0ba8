//! One forwarding worker per receive queue.
//!
//! The worker owns a UMEM and one AF_XDP socket per attached interface for
//! its queue; all of them share the UMEM, so a frame received on the LAN is
//! transmitted on the WAN by handing over its address, without a copy.
//! [`dispose`] is the per-frame decision (pure but for the counters): it
//! runs the relay on the frame in place, rewrites the Ethernet header and
//! says where the frame goes. The loop around it moves descriptors between
//! rings in batches, keeps the fill rings full and honours need_wakeup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::counters::{Counters, Io};
use super::fib::{Fib, NextHop};
use super::publish::Reader;
use super::slow_send::KernelBatch;
pub use super::slowpath::Handoff;
use super::slowpath::SlowPath;
use super::tracer::{self, Tracer};
use super::xfrm::Ipsec;
use super::xsk::{Umem, XskSocket, FRAME_SIZE};
use crate::relay::{DropReason, Egress, Frame, Path, Relay, Verdict, WorkerState};

const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Descriptors taken from a ring at a time.
pub const BATCH: usize = 64;

/// Where a frame goes after [`dispose`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Out of attached port `port`; the frame is `chunk[head..head + len]`.
    Transmit {
        port: usize,
        head: usize,
        len: usize,
    },
    /// To the kernel to route: IPv4 packet `chunk[head..head + len]`,
    /// for the reason `via` says.
    KernelIpv4 {
        dst: Ipv4Addr,
        head: usize,
        len: usize,
        via: Handoff,
    },
    /// To the kernel to route: IPv6 packet.
    KernelIpv6 {
        dst: Ipv6Addr,
        head: usize,
        len: usize,
        via: Handoff,
    },
    /// To the host's own stack: IPv6 packet.
    Host { head: usize, len: usize },
    /// Dropped, counted with its reason.
    Drop(DropReason),
}

/// What [`dispose`] reads besides the frame.
pub struct Context<'a> {
    pub relay: &'a Relay,
    pub fib: &'a Fib,
    /// The ifindexes of the attached interfaces, in port order.
    pub ports: &'a [u32],
    pub counters: &'a Counters,
}

/// A relayed packet's disposition and the path to count once it has
/// left (None for a drop: its reason is counted instead).
pub type Routed = (Disposition, Option<Path>);

/// Runs the relay on the Ethernet frame `chunk[head..head + len]` and
/// decides where it goes.
pub fn dispose(
    ctx: &Context,
    state: &mut WorkerState,
    chunk: &mut [u8],
    head: usize,
    len: usize,
    now_ns: u64,
) -> Routed {
    let drop = |reason| (Disposition::Drop(reason), None);
    let Some(mut frame) = Frame::new(chunk, head, len) else {
        return drop(DropReason::Truncated);
    };
    if frame.len() < ETH_HEADER_LEN {
        return drop(DropReason::Truncated);
    }
    let ethertype = u16::from_be_bytes([frame.data()[12], frame.data()[13]]);
    let _ = frame.pull(ETH_HEADER_LEN);
    if ethertype == ETHERTYPE_IPV4 && arrived_unprotected(ctx.fib.ipsec(), frame.data()) {
        return drop(DropReason::IpsecRequired);
    }
    let verdict = match ethertype {
        ETHERTYPE_IPV6 => ctx.relay.from_ipv6(state, &mut frame, now_ns),
        ETHERTYPE_IPV4 => ctx.relay.from_ipv4(state, &mut frame, now_ns),
        _ => Verdict::Drop(DropReason::NotIp),
    };
    match verdict {
        Verdict::Drop(reason) => drop(reason),
        Verdict::Forward { path, egress } => {
            route(ctx, state, &mut frame, now_ns, path, egress, true)
        }
    }
}

/// Where the relayed packet in `frame` goes, with `path` to count once it
/// has left. A native IPv6 packet too big for its link is answered
/// instead (`may_answer`: once; the answer is an encapsulated IPv4 packet).
pub(super) fn route(
    ctx: &Context,
    state: &mut WorkerState,
    frame: &mut Frame,
    now_ns: u64,
    path: Path,
    egress: Egress,
    may_answer: bool,
) -> Routed {
    let next_hop = match (egress, source(frame.data(), egress)) {
        (Egress::Host, _) => None,
        (Egress::Ipv4 { dst }, Some(src)) => Some(ctx.fib.lookup_from(src, dst.into())),
        (Egress::Ipv6 { dst }, Some(src)) => Some(ctx.fib.lookup_from(src, dst.into())),
        _ => return (Disposition::Drop(DropReason::Truncated), None),
    };
    let link_mtu = next_hop.and_then(|h| h.mtu());
    if let (Egress::Ipv6 { .. }, Some(mtu), true) = (egress, link_mtu, may_answer) {
        if frame.len() > mtu as usize {
            return match ctx.relay.too_big_for_link(state, frame, now_ns, mtu) {
                Verdict::Drop(reason) => (Disposition::Drop(reason), None),
                Verdict::Forward { path, egress } => {
                    route(ctx, state, frame, now_ns, path, egress, false)
                }
            };
        }
    }
    match place(ctx, frame, egress, next_hop) {
        d @ Disposition::Drop(_) => (d, None),
        d => (d, Some(path)),
    }
}

/// The disposition of a relayed packet with its next hop (None: for the host).
fn place(
    ctx: &Context,
    frame: &mut Frame,
    egress: Egress,
    next_hop: Option<NextHop>,
) -> Disposition {
    let (head, len) = (frame.head(), frame.len());
    let to_kernel = |via| kernel_disposition(egress, head, len, via);
    // A frame sent from here never meets xfrm: IPsec is the kernel's.
    if protected_out(ctx.fib.ipsec(), frame.data(), egress) {
        return to_kernel(Handoff::Ipsec);
    }
    let ethertype = match egress {
        Egress::Host => return Disposition::Host { head, len },
        Egress::Ipv4 { .. } => ETHERTYPE_IPV4,
        Egress::Ipv6 { .. } => ETHERTYPE_IPV6,
    };
    match next_hop.unwrap_or(NextHop::Local) {
        NextHop::Direct {
            ifindex,
            src_mac,
            dst_mac,
            ..
        } => {
            let Some(port) = ctx.ports.iter().position(|&p| p == ifindex) else {
                // An egress without XDP: the kernel sends it.
                return to_kernel(Handoff::Route);
            };
            if !frame.push(ETH_HEADER_LEN) {
                return Disposition::Drop(DropReason::NoHeadroom);
            }
            let eth = frame.data_mut();
            eth[0..6].copy_from_slice(&dst_mac);
            eth[6..12].copy_from_slice(&src_mac);
            eth[12..14].copy_from_slice(&ethertype.to_be_bytes());
            Disposition::Transmit {
                port,
                head: frame.head(),
                len: frame.len(),
            }
        }
        // The kernel resolves the neighbour; the next packets go direct.
        NextHop::Unresolved { .. } => to_kernel(Handoff::Neighbour),
        // Ours: an encapsulated packet for a local IPv4 address, or an
        // IPv6 destination on this host.
        NextHop::Local => match egress {
            Egress::Ipv6 { .. } => Disposition::Host { head, len },
            _ => to_kernel(Handoff::Route),
        },
        NextHop::Unreachable => Disposition::Drop(DropReason::NoRoute),
        NextHop::Broadcast => Disposition::Drop(DropReason::Ipv4Broadcast),
    }
}

/// Where the kernel takes a relayed packet `chunk[head..head + len]`.
fn kernel_disposition(egress: Egress, head: usize, len: usize, via: Handoff) -> Disposition {
    match egress {
        Egress::Ipv4 { dst } => Disposition::KernelIpv4 {
            dst,
            head,
            len,
            via,
        },
        Egress::Ipv6 { dst } => Disposition::KernelIpv6 {
            dst,
            head,
            len,
            via,
        },
        Egress::Host => Disposition::Host { head, len },
    }
}

/// The source address of the relayed packet `ip` (an IPv4 or IPv6
/// header first, as `egress` says).
fn source(ip: &[u8], egress: Egress) -> Option<IpAddr> {
    match egress {
        Egress::Host => None,
        Egress::Ipv4 { .. } => {
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(src))
        }
        Egress::Ipv6 { .. } => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(src))
        }
    }
}

/// Whether an outbound IPsec policy covers the relayed packet `ip` (an
/// IPv4 or IPv6 header first).
fn protected_out(ipsec: &Ipsec, ip: &[u8], egress: Egress) -> bool {
    if ipsec.policies().is_empty() {
        return false;
    }
    let (dst, proto) = match egress {
        Egress::Host => return false,
        Egress::Ipv4 { dst } => (IpAddr::V4(dst), ip.get(9)),
        Egress::Ipv6 { dst } => (IpAddr::V6(dst), ip.get(6)),
    };
    match (source(ip, egress), proto) {
        (Some(src), Some(&proto)) => ipsec.protecting_out(src, dst, proto).is_some(),
        // Too short to have been relayed; let the kernel judge it.
        _ => true,
    }
}

/// Whether the IPv4 packet `ip` is protocol 41 that an inbound IPsec
/// policy requires to arrive encrypted (it came straight off the wire).
fn arrived_unprotected(ipsec: &Ipsec, ip: &[u8]) -> bool {
    if ipsec.policies().is_empty() || ip.len() < 20 || ip[9] != 41 {
        return false;
    }
    let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
    let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
    ipsec.requires_in(IpAddr::from(src), IpAddr::from(dst), 41)
}

/// An attached interface as one worker sees it.
pub struct Port {
    pub ifindex: u32,
    pub socket: XskSocket,
    tx: Vec<(u64, u32)>,
    /// The path of each frame in `tx`, counted once it is sent.
    tx_paths: Vec<Option<Path>>,
}

impl Port {
    pub fn new(ifindex: u32, socket: XskSocket) -> Port {
        Port {
            ifindex,
            socket,
            tx: Vec::with_capacity(BATCH * 4),
            tx_paths: Vec::with_capacity(BATCH * 4),
        }
    }
}

/// A worker: its queue's sockets, UMEM and state.
pub struct Worker {
    pub queue: u32,
    pub ports: Vec<Port>,
    pub umem: Umem,
    pub relay: Reader<Relay>,
    pub fib: Reader<Fib>,
    pub slow: Arc<SlowPath>,
    pub counters: Arc<Counters>,
    pub busy_poll: bool,
    pub stop: Arc<AtomicBool>,
    pub tracer: Arc<Tracer>,
}

impl Worker {
    /// Forwards until `stop` is set. Every frame received is transmitted,
    /// handed to the kernel, or dropped and counted.
    pub fn run(mut self) {
        let epoch = Instant::now();
        let mut state = self.relay.get().worker_state(self.queue as u16);
        let mut free: Vec<u64> = (0..self.umem.frames())
            .map(|i| u64::from(i * FRAME_SIZE))
            .collect();
        let ifindexes: Vec<u32> = self.ports.iter().map(|p| p.ifindex).collect();
        let mut rx = [(0u64, 0u32); BATCH];
        // Packets for the kernel, copied out of their frames.
        let mut kernel = KernelBatch::default();
        let mut pollfds: Vec<libc::pollfd> = self
            .ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Split the frames fairly between the fill rings at the start.
        let share = free.len() / (2 * self.ports.len().max(1));
        for p in &mut self.ports {
            let n = share.min(free.len());
            let given = p.socket.fill(&free[free.len() - n..]);
            free.truncate(free.len() - given);
        }

        while !self.stop.load(Ordering::Relaxed) {
            self.counters.turn();
            if self.relay.refresh() {
                self.counters.tcp_mss(state.take_mss_events());
                state = self.relay.get().worker_state(self.queue as u16);
            }
            self.fib.refresh();
            let now_ns = epoch.elapsed().as_nanos() as u64;
            for p in &mut self.ports {
                p.socket.complete(&mut free, usize::MAX);
            }
            for p in &mut self.ports {
                let n = (p.socket.fill_free() as usize).min(free.len());
                if n > 0 {
                    let given = p.socket.fill(&free[free.len() - n..]);
                    free.truncate(free.len() - given);
                }
            }
            let mut received = 0;
            let trace = self.tracer.filter_if_active();
            for i in 0..self.ports.len() {
                let n = self.ports[i].socket.receive(&mut rx);
                received += n;
                self.counters.io(Io::ReceivedAfxdp, n as u64);
                for &(addr, len) in &rx[..n] {
                    let (chunk, offset) = self.umem.chunk_mut(addr);
                    let base = addr - offset as u64;
                    let frame = chunk.get(offset..offset + len as usize).unwrap_or(&[]);
                    let traced = tracer::matched(trace, frame, self.relay.get().domains());
                    let ctx = Context {
                        relay: self.relay.get(),
                        fib: self.fib.get(),
                        ports: &ifindexes,
                        counters: &self.counters,
                    };
                    let (d, path) = dispose(&ctx, &mut state, chunk, offset, len as usize, now_ns);
                    if let Some(packet) = traced {
                        let port = tracer::interface_name(self.ports[i].ifindex);
                        let routed = (d, path);
                        let e = tracer::relay_event(
                            "forwarder",
                            port,
                            packet,
                            &routed,
                            &ifindexes,
                            chunk,
                        );
                        self.tracer.offer(e);
                    }
                    if let Disposition::Transmit { port, head, len } = d {
                        let p = &mut self.ports[port];
                        p.tx.push((base + head as u64, len as u32));
                        p.tx_paths.push(path);
                        continue;
                    }
                    kernel.deliver(&self.slow, &self.counters, chunk, (d, path));
                    free.push(base);
                }
            }
            kernel.flush(&self.slow, &self.counters);
            self.counters.tcp_mss(state.take_mss_events());
            let mut tx_pending = false;
            for p in &mut self.ports {
                if !p.tx.is_empty() {
                    let sent = p.socket.transmit(&p.tx);
                    for &(addr, _) in &p.tx[sent..] {
                        self.counters.dropped(DropReason::TxRingFull);
                        free.push(addr & !u64::from(FRAME_SIZE - 1));
                    }
                    self.counters.io(Io::SentAfxdp, sent as u64);
                    for path in p.tx_paths[..sent].iter().flatten() {
                        self.counters.path(*path);
                    }
                    p.tx.clear();
                    p.tx_paths.clear();
                }
                // Also what an earlier kick left in the ring.
                if p.socket.tx_pending() > 0 {
                    p.socket.flush_tx();
                    tx_pending |= p.socket.tx_pending() > 0;
                }
            }
            if received == 0 && !tx_pending && !self.busy_poll {
                // SAFETY: pollfds is a live array of the length passed.
                unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 50) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Domain, DomainSpec, Domains, IcmpRate, Path};

    const LAN_IF: u32 = 7;
    const WAN_IF: u32 = 8;
    const GW_LAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const GW_WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 8];
    const CE_MAC: [u8; 6] = [2, 0xce, 0, 0, 0, 1];

    fn setup() -> (Relay, Fib) {
        let spec = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().unwrap(),
            0,
            "10.255.255.222".parse().unwrap(),
        );
        let relay = Relay::new(
            Domains::new(vec![Domain::new(&spec).unwrap().0]).unwrap(),
            IcmpRate::default(),
        );
        let mut fib = Fib::default();
        fib.add_link(LAN_IF, "lan0", GW_LAN_MAC);
        fib.add_link(WAN_IF, "wan0", GW_WAN_MAC);
        fib.add_route("10.96.0.0/16".parse().unwrap(), WAN_IF, None);
        fib.add_route("2001:db8:0:100::/64".parse().unwrap(), LAN_IF, None);
        fib.add_neighbour(WAN_IF, "10.96.1.100".parse().unwrap(), CE_MAC);
        (relay, fib)
    }

    fn ctx<'a>(
        relay: &'a Relay,
        fib: &'a Fib,
        ports: &'a [u32],
        counters: &'a Counters,
    ) -> Context<'a> {
        Context {
            relay,
            fib,
            ports,
            counters,
        }
    }

    fn lan_frame(dst: &str) -> Vec<u8> {
        let mut f = vec![0u8; 256];
        f.extend_from_slice(&GW_LAN_MAC);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x55]);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 59, 64]);
        f.extend_from_slice(&"2001:db8:0:100::5".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        f
    }

    /// Disposes of a LAN frame to `dst` with both ports attached.
    fn from_lan(relay: &Relay, fib: &Fib, counters: &Counters, dst: &str) -> (Routed, Vec<u8>) {
        let mut st = relay.worker_state(0);
        let mut chunk = lan_frame(dst);
        let len = chunk.len() - 256;
        let ports = [LAN_IF, WAN_IF];
        let d = dispose(
            &ctx(relay, fib, &ports, counters),
            &mut st,
            &mut chunk,
            256,
            len,
            0,
        );
        (d, chunk)
    }

    #[test]
    fn lan_to_resolved_ce_is_transmitted_on_the_wan_port_with_macs() {
        let (relay, fib) = setup();
        let counters = Counters::default();
        let ((d, path), chunk) = from_lan(&relay, &fib, &counters, "2001:db8:0:f096:a60:164::1");
        // 14 + 20 + 40: the Ethernet header moved 20 bytes into the headroom.
        assert_eq!(
            d,
            Disposition::Transmit {
                port: 1,
                head: 256 - 20,
                len: 74
            }
        );
        let out = &chunk[236..236 + 74];
        assert_eq!(&out[0..6], &CE_MAC);
        assert_eq!(&out[6..12], &GW_WAN_MAC);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(out[14 + 9], 41);
        assert_eq!(path, Some(Path::Encapsulated));
        // Counted when it leaves, not before.
        let t = super::super::counters::Totals::sum([&counters]);
        assert_eq!(t.get_path(Path::Encapsulated), 0);
    }

    #[test]
    fn unresolved_neighbour_goes_to_the_kernel_and_no_route_is_dropped() {
        let (relay, mut fib) = setup();
        let counters = Counters::default();
        let ((d, _), _) = from_lan(&relay, &fib, &counters, "2001:db8:0:f096:a60:165::1");
        assert_eq!(
            d,
            Disposition::KernelIpv4 {
                dst: "10.96.1.101".parse().unwrap(),
                head: 256 + 14 - 20,
                len: 60,
                via: Handoff::Neighbour,
            }
        );
        // 11.0.0.1 has no route at all.
        let ((d, path), _) = from_lan(&relay, &fib, &counters, "2001:db8:0:f096:b00:1::1");
        assert_eq!((d, path), (Disposition::Drop(DropReason::NoRoute), None));
        // An egress interface without XDP: the kernel sends it.
        fib.add_link(9, "ipsec0", [0; 6]);
        fib.add_route("11.0.0.0/8".parse().unwrap(), 9, None);
        fib.add_neighbour(9, "11.0.0.1".parse().unwrap(), [1; 6]);
        let ((d, _), _) = from_lan(&relay, &fib, &counters, "2001:db8:0:f096:b00:1::1");
        assert!(matches!(d, Disposition::KernelIpv4 { .. }), "{d:?}");
    }

    /// CE1's protocol-41 frame on the WAN carrying an IPv6 packet of
    /// `inner_len` bytes to a LAN host, hop limit 64.
    fn ce1_frame(inner_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 256];
        f.extend_from_slice(&GW_WAN_MAC);
        f.extend_from_slice(&CE_MAC);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut v4 = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, 41, 0, 0, 10, 96, 1, 100, 10, 255, 255, 222,
        ];
        v4[2..4].copy_from_slice(&((20 + inner_len) as u16).to_be_bytes());
        let sum = crate::relay::wire::checksum(&v4);
        v4[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&v4);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((inner_len - 40) as u16).to_be_bytes());
        f.extend_from_slice(&[59, 64]);
        f.extend_from_slice(
            &"2001:db8:0:f096:a60:164::1"
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        f.extend_from_slice(&"2001:db8:0:100::5".parse::<Ipv6Addr>().unwrap().octets());
        f.resize(256 + 14 + 20 + inner_len, 0xab);
        f
    }

    /// Disposes of CE1's frame of `inner_len` bytes with `ports` attached.
    fn from_wan(
        relay: &Relay,
        fib: &Fib,
        counters: &Counters,
        ports: &[u32],
        st: &mut WorkerState,
        inner_len: usize,
    ) -> (Routed, Vec<u8>) {
        let mut chunk = ce1_frame(inner_len);
        let len = chunk.len() - 256;
        let d = dispose(
            &ctx(relay, fib, ports, counters),
            st,
            &mut chunk,
            256,
            len,
            0,
        );
        (d, chunk)
    }

    #[test]
    fn decapsulated_packet_too_big_for_its_link_gets_packet_too_big_back_to_the_ce() {
        let (relay, mut fib) = setup();
        fib.add_neighbour(
            LAN_IF,
            "2001:db8:0:100::5".parse().unwrap(),
            [2, 0, 0, 0, 0, 0x55],
        );
        fib.set_link_mtu(LAN_IF, 1400);
        let counters = Counters::default();
        let mut st = relay.worker_state(0);
        let ports = [LAN_IF, WAN_IF];
        // 1400 bytes fit the LAN: decapsulated and sent.
        let ((d, path), _) = from_wan(&relay, &fib, &counters, &ports, &mut st, 1400);
        assert_eq!(path, Some(Path::Decapsulated));
        assert!(
            matches!(
                d,
                Disposition::Transmit {
                    port: 0,
                    len: 1414,
                    ..
                }
            ),
            "{d:?}"
        );
        // 1401 do not: a Packet Too Big with the LAN's MTU goes back to
        // CE1, encapsulated, quoting the packet as it arrived.
        let ((d, path), chunk) = from_wan(&relay, &fib, &counters, &ports, &mut st, 1401);
        assert_eq!(path, Some(Path::IcmpPacketTooBig));
        let Disposition::Transmit { port: 1, head, len } = d else {
            panic!("{d:?}");
        };
        let out = &chunk[head..head + len];
        assert_eq!(len, 14 + 20 + 1280);
        assert_eq!(&out[14 + 16..14 + 20], &[10, 96, 1, 100]);
        let icmp = &out[14 + 20 + 40..];
        assert_eq!((icmp[0], icmp[1]), (2, 0));
        assert_eq!(&icmp[4..8], &1400u32.to_be_bytes());
        assert_eq!(icmp[8 + 7], 64, "hop limit as it arrived");
        // The slow path (no ports: the kernel sends) answers the same.
        let ((d, _), _) = from_wan(&relay, &fib, &counters, &[], &mut st, 1401);
        assert!(
            matches!(d, Disposition::KernelIpv4 { len: 1300, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn non_ip_and_short_frames_are_dropped() {
        let (relay, fib) = setup();
        let mut st = relay.worker_state(0);
        let counters = Counters::default();
        let mut arp = vec![0u8; 64];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            dispose(
                &ctx(&relay, &fib, &[], &counters),
                &mut st,
                &mut arp,
                0,
                64,
                0
            ),
            (Disposition::Drop(DropReason::NotIp), None)
        );
        assert_eq!(
            dispose(
                &ctx(&relay, &fib, &[], &counters),
                &mut st,
                &mut arp,
                0,
                10,
                0
            ),
            (Disposition::Drop(DropReason::Truncated), None)
        );
        assert_eq!(
            dispose(
                &ctx(&relay, &fib, &[], &counters),
                &mut st,
                &mut arp,
                60,
                10,
                0
            ),
            (Disposition::Drop(DropReason::Truncated), None)
        );
    }
}

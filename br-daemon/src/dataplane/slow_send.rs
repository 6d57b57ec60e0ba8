//! Handing relayed packets to the kernel in batches: one `sendmmsg(2)` for
//! up to [`SEND_BATCH`] packets on one raw socket, instead of a
//! `sendmsg(2)` each. Besides the syscalls, it saves wakeups: packets that
//! leave back to back find the next receiver (a veth peer's NAPI thread,
//! say) still scheduled, where packets sent one by one between reads woke
//! it once each (an IPI, under a hypervisor a VM exit: a quarter of the
//! slow-path thread's time in its profile).
//!
//! [`KernelBatch`] carries out what the relay decided for a packet that
//! does not leave by an AF_XDP socket: counts a drop, writes a packet for
//! the host into the TUN, or collects one for a raw socket (copied, so
//! the receive buffer can be reused) and sends the wakeup's collection in
//! order, each run of one socket in one call, counting each packet.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use super::counters::{Counters, Io};
use super::slowpath::{Handoff, SlowPath};
use super::worker::{Disposition, Routed};
use crate::relay::{DropReason, Path};

/// Packets per `sendmmsg` call (and per [`KernelBatch`] before it sends).
pub const SEND_BATCH: usize = 64;

/// Sends `packets` (complete IP packets, all of one family, header
/// included) on the raw socket `fd` in order, [`SEND_BATCH`] per call,
/// without blocking; then `done(i, result)` for packet `i`. A packet's own source goes along as
/// IP_PKTINFO or IPV6_PKTINFO: a header-included raw socket's flow
/// otherwise carries the source the route picks (the WAN or LAN address),
/// which an IPsec policy for the BR address or a 6rd prefix, or a routing
/// rule on the source, would not match.
pub fn send_many<'a>(
    fd: RawFd,
    packets: impl IntoIterator<Item = (&'a [u8], IpAddr)>,
    mut done: impl FnMut(usize, io::Result<()>),
) {
    let mut packets = packets.into_iter();
    let mut first = 0;
    loop {
        let n = send_chunk(fd, &mut packets, first, &mut done);
        if n < SEND_BATCH {
            return;
        }
        first += n;
    }
}

/// Sends up to SEND_BATCH of `packets`: how many it took.
fn send_chunk<'a>(
    fd: RawFd,
    packets: &mut impl Iterator<Item = (&'a [u8], IpAddr)>,
    first: usize,
    done: &mut impl FnMut(usize, io::Result<()>),
) -> usize {
    // Every pointer set below points into these arrays or the packets
    // (borrowed for 'a), which outlive the sendmmsg calls.
    // SAFETY: an all-zero sockaddr_in6 is valid (the unspecified address).
    let mut names: [libc::sockaddr_in6; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: an all-zero iovec is valid (null base, zero length).
    let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut controls = [[0u64; 6]; SEND_BATCH];
    let mut count = 0;
    for (i, (packet, dst)) in packets.take(SEND_BATCH).enumerate() {
        count = i + 1;
        iovs[i] = libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in6).cast();
        match dst {
            IpAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: names[i] (28 bytes) holds a sockaddr_in (16).
                unsafe { std::ptr::write_unaligned(hdr.msg_name.cast(), sa) };
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                let src = packet
                    .get(12..16)
                    .map_or([0; 4], |s| s.try_into().expect("4 bytes"));
                // SAFETY: a zeroed in_pktinfo is valid; the source is set below.
                let mut info: libc::in_pktinfo = unsafe { std::mem::zeroed() };
                info.ipi_spec_dst.s_addr = u32::from_ne_bytes(src);
                set_control(
                    hdr,
                    &mut controls[i],
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    info,
                );
            }
            IpAddr::V6(a) => {
                names[i].sin6_family = libc::AF_INET6 as u16;
                names[i].sin6_addr.s6_addr = a.octets();
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                // The packet's source for the flow too: the route and
                // IPsec lookups see it, and the kernel skips choosing one
                // (a tenth of the thread's time); the socket has
                // IPV6_FREEBIND, as a CE's address is not the host's.
                if let Some(src) = packet.get(8..24) {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: src.try_into().expect("16 bytes"),
                        },
                        ipi6_ifindex: 0,
                    };
                    set_control(
                        hdr,
                        &mut controls[i],
                        libc::IPPROTO_IPV6,
                        libc::IPV6_PKTINFO,
                        info,
                    );
                }
            }
        }
    }
    let mut sent = 0;
    while sent < count {
        let left = &mut msgs[sent..count];
        // SAFETY: `left` is a live array of initialised mmsghdrs of the
        // length passed; what they point at is live (see above).
        let n = unsafe {
            libc::sendmmsg(
                fd,
                left.as_mut_ptr(),
                left.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            // The first of the rest failed (its error); go on after it.
            done(first + sent, Err(io::Error::last_os_error()));
            sent += 1;
            continue;
        }
        for i in sent..sent + n as usize {
            done(first + i, Ok(()));
        }
        sent += n as usize;
    }
    count
}

/// One control message (`level`, `kind`) carrying `data`, in `space`.
fn set_control<T>(hdr: &mut libc::msghdr, space: &mut [u64; 6], level: i32, kind: i32, data: T) {
    hdr.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<T>() as u32) } as usize;
    assert!(hdr.msg_controllen <= std::mem::size_of_val(space));
    // SAFETY: msg_control points at `space`, large enough for one cmsg of
    // a T (asserted above), so CMSG_FIRSTHDR is non-null and its data
    // area holds the T.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<T>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<T>(), data);
    }
}

/// A packet waiting in a [`KernelBatch`].
struct Pending {
    start: usize,
    len: usize,
    dst: IpAddr,
    via: Handoff,
    path: Option<Path>,
}

/// The packets one wakeup hands to the kernel's raw sockets, sent
/// together by [`KernelBatch::flush`].
#[derive(Default)]
pub struct KernelBatch {
    bytes: Vec<u8>,
    pending: Vec<Pending>,
}

impl KernelBatch {
    /// Carries out `routed` (anything but Transmit, which the caller
    /// does) and counts it, its path too once the kernel took it; a
    /// packet for a raw socket waits for the next flush (which comes at
    /// once when the batch is full).
    pub fn deliver(&mut self, slow: &SlowPath, counters: &Counters, chunk: &[u8], routed: Routed) {
        let (d, path) = routed;
        let (dst, head, len, via) = match d {
            Disposition::Transmit { .. } => unreachable!("transmitted by the caller"),
            Disposition::Drop(reason) => return counters.dropped(reason),
            Disposition::Host { head, len } => {
                let sent = slow.to_host(&chunk[head..head + len]);
                return count(counters, sent.map(|_| Io::SentHost), path);
            }
            Disposition::KernelIpv4 {
                dst,
                head,
                len,
                via,
            } => (IpAddr::V4(dst), head, len, via),
            Disposition::KernelIpv6 {
                dst,
                head,
                len,
                via,
            } => (IpAddr::V6(dst), head, len, via),
        };
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&chunk[head..head + len]);
        self.pending.push(Pending {
            start,
            len,
            dst,
            via,
            path,
        });
        if self.pending.len() >= SEND_BATCH {
            self.flush(slow, counters);
        }
    }

    /// Sends what waits, in order: each run of packets for one socket in
    /// one call; counts each as sent (and its path) or failed.
    pub fn flush(&mut self, slow: &SlowPath, counters: &Counters) {
        let mut at = 0;
        while at < self.pending.len() {
            let first = &self.pending[at];
            let key = (first.dst.is_ipv4(), first.via.socket());
            let end = at
                + self.pending[at..]
                    .iter()
                    .take_while(|p| (p.dst.is_ipv4(), p.via.socket()) == key)
                    .count();
            let run = &self.pending[at..end];
            let packets = run
                .iter()
                .map(|p| (&self.bytes[p.start..p.start + p.len], p.dst));
            slow.send_many(key.0, first.via, packets, |i, sent| {
                count(counters, sent.map(|_| kernel_io(run[i].via)), run[i].path)
            });
            at = end;
        }
        self.pending.clear();
        self.bytes.clear();
    }
}

/// Counts a packet handed to the kernel: sent (its path too) or failed.
fn count(counters: &Counters, sent: io::Result<Io>, path: Option<Path>) {
    match sent {
        Ok(io) => {
            counters.io(io, 1);
            if let Some(path) = path {
                counters.path(path);
            }
        }
        Err(e) => {
            tracing::debug!("handing a packet to the kernel failed: {e}");
            counters.dropped(DropReason::KernelSendFailed);
        }
    }
}

fn kernel_io(via: Handoff) -> Io {
    match via {
        Handoff::Ipsec => Io::SentKernelIpsec,
        Handoff::Neighbour | Handoff::Route => Io::SentKernel,
    }
}

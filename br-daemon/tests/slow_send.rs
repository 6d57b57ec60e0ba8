//! The slow path's hand-off to the kernel (dataplane/slow_send.rs) on a
//! real kernel: a batch leaves in order and is counted packet by packet,
//! and each packet's own source is the flow's, so a routing rule on the
//! source (as an IPsec policy would) applies. Needs root (a private netns).

mod netns;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use br_daemon::dataplane::counters::{Counters, Io, Totals};
use br_daemon::dataplane::slow_send::KernelBatch;
use br_daemon::dataplane::slowpath::{Handoff, SlowPath};
use br_daemon::dataplane::worker::Disposition;
use br_daemon::relay::{Domain, DomainSpec};
use netns::{ifindex, sh};

const BR: &str = "10.255.255.222";
const CE: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 100);
const CE_IPV6: &str = "2001:db8:0:f096:a60:164::1";
const LAN_HOST: &str = "2001:db8:1::5";

/// Two links out (a0 and b0, their peers a0p and b0p), permanent
/// neighbours behind both; IPv4 to the CEs and IPv6 by default leave by
/// a0, IPv6 from the 6rd prefix by b0 (a rule on the source); and the
/// slow path's TUN and sockets.
fn network() -> SlowPath {
    for cmd in [
        "ip link add a0 type veth peer name a0p",
        "ip link add b0 type veth peer name b0p",
        "ip link set lo up",
        "ip link set a0 up",
        "ip link set a0p up",
        "ip link set b0 up",
        "ip link set b0p up",
        "ip addr add 192.0.2.1/24 dev a0",
        "ip -6 addr add 2001:db8:a::1/64 dev a0 nodad",
        "ip -6 addr add 2001:db8:b::1/64 dev b0 nodad",
        "ip neigh add 192.0.2.2 lladdr 02:00:00:00:00:0a dev a0 nud permanent",
        "ip -6 neigh add 2001:db8:a::2 lladdr 02:00:00:00:00:0a dev a0 nud permanent",
        "ip -6 neigh add 2001:db8:b::2 lladdr 02:00:00:00:00:0b dev b0 nud permanent",
        "ip route add 10.96.0.0/16 via 192.0.2.2 dev a0",
        "ip -6 route add default via 2001:db8:a::2 dev a0",
        "ip -6 rule add from 2001:db8:0:f096::/64 table 100",
        "ip -6 route add default via 2001:db8:b::2 dev b0 table 100",
    ] {
        sh(cmd);
    }
    let spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        BR.parse().unwrap(),
    );
    let domains = [Domain::new(&spec).unwrap().0];
    SlowPath::open("brslow0", &domains).expect("the slow path's TUN and sockets")
}

/// A raw AF_PACKET socket that receives every frame on `interface`.
fn capture(interface: &str) -> libc::c_int {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); closed by the test's end (its netns goes).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(fd >= 0, "AF_PACKET socket");
    // SAFETY: a zeroed sockaddr_ll is valid; the fields are set below.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = all;
    sa.sll_ifindex = ifindex(interface) as i32;
    // SAFETY: sa is a live sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "bind to {interface}");
    fd
}

/// The frames captured on `fd` that `ours` accepts (the kernel sends
/// ND and MLD of its own), until `want` arrived or a second passed.
fn frames(fd: libc::c_int, ours: impl Fn(&[u8]) -> bool, want: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        // SAFETY: buf is live and writable for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let frame = &buf[..n as usize];
        if ours(frame) {
            out.push(frame.to_vec());
        }
    }
    out
}

/// Protocol 41 from the BR to the CE carrying an empty IPv6 packet, IPv4
/// identification `id` (not 0: the kernel would choose one), checksum 0
/// (the kernel fills it in).
fn encapsulated(id: u16) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&60u16.to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64;
    p[9] = 41;
    p[12..16].copy_from_slice(&BR.parse::<Ipv4Addr>().unwrap().octets());
    p[16..20].copy_from_slice(&CE.octets());
    p[20] = 0x60;
    p[26] = 59;
    p[27] = 64;
    p
}

#[test]
fn a_batch_leaves_in_order_and_every_packet_is_counted() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        let slow = network();
        let wire = capture("a0p");
        let counters = Counters::default();
        let mut batch = KernelBatch::default();
        // More than one sendmmsg's worth (SEND_BATCH), and two sockets
        // (route and neighbour) taking turns in runs.
        let count = 150u16;
        let mut buf = vec![0u8; 128];
        for id in 1..=count {
            let packet = encapsulated(id);
            buf[64..124].copy_from_slice(&packet);
            let via = if id % 50 < 25 {
                Handoff::Route
            } else {
                Handoff::Neighbour
            };
            let d = Disposition::KernelIpv4 {
                dst: CE,
                head: 64,
                len: packet.len(),
                via,
            };
            batch.deliver(&slow, &counters, &buf, (d, None));
        }
        batch.flush(&slow, &counters);
        let protocol41 = |f: &[u8]| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[23] == 41;
        let got = frames(wire, protocol41, usize::from(count));
        let ids: Vec<u16> = got
            .iter()
            .map(|f| u16::from_be_bytes([f[18], f[19]]))
            .collect();
        assert_eq!(ids, (1..=count).collect::<Vec<_>>(), "all, in order");
        // The kernel checked nothing away: the BR's own source, a valid
        // header checksum it computed.
        assert_eq!(got[0][26..30], BR.parse::<Ipv4Addr>().unwrap().octets());
        let totals = Totals::sum([&counters]);
        assert_eq!(totals.get_io(Io::SentKernel), u64::from(count));
    })
    .join()
    .unwrap();
}

#[test]
fn ipv6_handed_to_the_kernel_is_routed_by_its_own_source() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        let slow = network();
        let (by_default, by_rule) = (capture("a0p"), capture("b0p"));
        let mut packet = vec![0u8; 40];
        packet[0] = 0x60;
        packet[6] = 59;
        packet[7] = 63;
        packet[8..24].copy_from_slice(&CE_IPV6.parse::<Ipv6Addr>().unwrap().octets());
        let dst: Ipv6Addr = LAN_HOST.parse().unwrap();
        packet[24..40].copy_from_slice(&dst.octets());
        let counters = Counters::default();
        let mut batch = KernelBatch::default();
        let d = Disposition::KernelIpv6 {
            dst,
            head: 0,
            len: packet.len(),
            via: Handoff::Route,
        };
        batch.deliver(&slow, &counters, &packet, (d, None));
        batch.flush(&slow, &counters);
        // A CE's source is accepted (IPV6_FREEBIND).
        let totals = Totals::sum([&counters]);
        assert_eq!(totals.get_io(Io::SentKernel), 1, "sent");
        // The rule on the 6rd prefix picked table 100: out of b0, the
        // packet unchanged.
        let to_host =
            |f: &[u8]| f.len() >= 54 && f[12..14] == [0x86, 0xdd] && f[38..54] == dst.octets();
        let got = frames(by_rule, to_host, 1);
        assert_eq!(got.len(), 1, "by the rule's route");
        assert_eq!(got[0][14..], packet[..]);
        assert!(
            frames(by_default, to_host, 1).is_empty(),
            "not by the default route"
        );
    })
    .join()
    .unwrap();
}

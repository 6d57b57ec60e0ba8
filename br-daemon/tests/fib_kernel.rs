//! The rtnetlink snapshot against the kernel's own routes: multipath
//! routes (ECMP) as `ip route` writes them, IPv4 and IPv6, read back
//! with every next hop and its weight. Needs root (a private netns).

mod netns;

use std::net::{Ipv4Addr, Ipv6Addr};

use br_daemon::dataplane::fib::{snapshot, NextHop};
use netns::{ifindex, sh};

#[test]
fn multipath_routes_are_read_with_every_next_hop_and_weight() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        for cmd in [
            "ip link add name up0 type veth peer name up0p",
            "ip link add name up1 type veth peer name up1p",
            "ip link set up0 up",
            "ip link set up0p up",
            "ip link set up1 up",
            "ip link set up1p up",
            "ip addr add 192.0.2.1/24 dev up0",
            "ip addr add 198.51.100.1/24 dev up1",
            "ip -6 addr add 2001:db8:a::1/64 dev up0 nodad",
            "ip -6 addr add 2001:db8:b::1/64 dev up1 nodad",
            "ip route add 10.0.0.0/8 nexthop via 192.0.2.2 dev up0 weight 1 nexthop via 198.51.100.2 dev up1 weight 3",
            "ip -6 route add 2001:db8:100::/40 nexthop via 2001:db8:a::2 dev up0 nexthop via 2001:db8:b::2 dev up1",
        ] {
            sh(cmd);
        }
        let (up0, up1) = (ifindex("up0"), ifindex("up1"));
        let fib = snapshot().expect("rtnetlink dump");
        let mut v4 = [0u32; 2];
        let mut v6 = [0u32; 2];
        for i in 0..4000u32 {
            let a = Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(2_654_435_761) & 0x00ff_ffff));
            let b = Ipv6Addr::from((0x20_010d_b801_u128 << 88) | u128::from(i.wrapping_mul(2_654_435_761)) << 40);
            for (addr_hop, counts) in [(fib.lookup_v4(a), &mut v4), (fib.lookup_v6(b), &mut v6)] {
                match addr_hop {
                    // The gateways' neighbours are not resolved.
                    NextHop::Unresolved { ifindex, .. } if ifindex == up0 => counts[0] += 1,
                    NextHop::Unresolved { ifindex, .. } if ifindex == up1 => counts[1] += 1,
                    other => panic!("{a} / {b}: {other:?}"),
                }
            }
        }
        // Weights 1:3 and 1:1 (about 1000 and 2000 of 4000).
        assert!((800..1200).contains(&v4[0]), "IPv4 split {v4:?}");
        assert!((1750..2250).contains(&v6[0]), "IPv6 split {v6:?}");
    })
    .join()
    .unwrap();
}

//! The XDP steering program under BPF_PROG_TEST_RUN: each kind of packet
//! gets the right action and bumps exactly its counter. Needs root (BPF),
//! no network.

use aya::programs::{TestRun, TestRunOptions};
use br_daemon::dataplane::xdp::{IfInfo, Steering};
use br_daemon::relay::{Domain, DomainSpec};

fn domains() -> Vec<Domain> {
    let spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        "10.255.255.222".parse().unwrap(),
    );
    vec![Domain::new(&spec).unwrap().0]
}

/// The MAC the test frames are sent to.
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = OUR_MAC.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(dst: [u8; 4], proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0, 10, 96, 1, 100]);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

fn ipv6(dst: &str) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 8, 59, 64];
    h.extend_from_slice(
        &"2001:db8:0:100::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(&[0; 8]);
    h
}

const XDP_PASS: u32 = 2;
const BR: [u8; 4] = [10, 255, 255, 222];

#[test]
fn every_packet_kind_gets_its_action_and_counter() {
    let steering = Steering::load(&domains(), true).expect("load the XDP program (root needed)");
    let icmp_error_about_41 = {
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ipv4([10, 96, 1, 100], 41, 0, &[0; 8]));
        icmp
    };
    let icmp_echo = {
        let mut icmp = vec![8, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&[0; 28]);
        icmp
    };
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "IPv6 to a CE",
            eth(0x86dd, &ipv6("2001:db8:0:f096:a60:164::1")),
            br_ebpf::STAT_PASS_NO_SOCKET,
        ),
        (
            "IPv6 elsewhere",
            eth(0x86dd, &ipv6("2001:db8:0:100::2")),
            br_ebpf::STAT_PASS_IPV6_OTHER,
        ),
        (
            "IPv6 neighbour solicitation",
            eth(0x86dd, &ipv6("ff02::1:ff00:1")),
            br_ebpf::STAT_PASS_IPV6_OTHER,
        ),
        (
            "protocol 41 to the BR",
            eth(0x0800, &ipv4(BR, 41, 0, &[0; 40])),
            br_ebpf::STAT_PASS_NO_SOCKET,
        ),
        (
            "protocol 41 elsewhere",
            eth(0x0800, &ipv4([10, 0, 0, 9], 41, 0, &[0; 40])),
            br_ebpf::STAT_PASS_IPV4_OTHER,
        ),
        (
            "first fragment, no interface served",
            eth(0x0800, &ipv4(BR, 41, 0x2000, &[0; 40])),
            br_ebpf::STAT_PASS_NO_SOCKET,
        ),
        (
            "ICMP error quoting 41",
            eth(0x0800, &ipv4(BR, 1, 0, &icmp_error_about_41)),
            br_ebpf::STAT_PASS_NO_SOCKET,
        ),
        (
            "ping to the BR",
            eth(0x0800, &ipv4(BR, 1, 0, &icmp_echo)),
            br_ebpf::STAT_PASS_BR_NOT_6RD,
        ),
        (
            "TCP to the BR",
            eth(0x0800, &ipv4(BR, 6, 0, &[0; 20])),
            br_ebpf::STAT_PASS_BR_NOT_6RD,
        ),
        ("ARP", eth(0x0806, &[0; 28]), br_ebpf::STAT_PASS_NOT_IP),
        (
            "truncated IPv6",
            eth(0x86dd, &[0x60; 20]),
            br_ebpf::STAT_PASS_TRUNCATED,
        ),
        (
            "truncated IPv4",
            eth(0x0800, &[0x45; 12]),
            br_ebpf::STAT_PASS_TRUNCATED,
        ),
    ];
    for (what, frame, stat) in cases {
        let before = steering.stats();
        let mut out = vec![0u8; frame.len() + 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.data_out = Some(&mut out);
        let result = steering.program().test_run(opts).expect(what);
        assert_eq!(result.return_value, XDP_PASS, "{what}");
        let after = steering.stats();
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            let want = u64::from(i as u32 == stat);
            assert_eq!(a - b, want, "{what}: counter {}", br_ebpf::STAT_NAMES[i].0);
        }
    }
}

/// Brings `lo` up in the calling thread's network namespace.
fn loopback_up() {
    // SAFETY: a plain socket and SIOC[GS]IFFLAGS on a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req), 0);
        libc::close(fd);
    }
}

#[test]
fn with_a_socket_bound_the_program_redirects() {
    use br_daemon::dataplane::xsk::{RingSizes, Umem, XskSocket};
    // A thread of its own in a fresh network namespace: BPF_PROG_TEST_RUN
    // runs the program as if received on that namespace's lo, queue 0.
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        loopback_up();
        let mut steering = Steering::load(&domains(), true).unwrap();
        let umem = Umem::new(64).unwrap();
        let socket = XskSocket::new(
            &umem,
            None,
            1,
            0,
            RingSizes {
                rx: 64,
                tx: 64,
                fill: 64,
                comp: 64,
            },
            false,
        )
        .expect("AF_XDP socket on lo");
        let lo = |ce_facing| IfInfo {
            ifindex: 1,
            slot: 0,
            mac: OUR_MAC,
            ce_facing,
            fast: 0,
        };
        steering.set_interface(1, lo(1)).unwrap();
        // The table is direct-mapped: an interface whose entry is taken is refused.
        let clash = steering
            .set_interface(1 + br_ebpf::MAX_IF_TABLE, lo(1))
            .unwrap_err();
        assert!(
            clash.to_string().contains("share XDP table entry 1"),
            "{clash}"
        );
        steering.bind_socket(0, 0, &socket).unwrap();
        const XDP_REDIRECT: u32 = 4;
        const XDP_DROP: u32 = 1;
        let to_mac = |mac: [u8; 6], mut f: Vec<u8>| {
            f[..6].copy_from_slice(&mac);
            f
        };
        let to_ce = || eth(0x86dd, &ipv6("2001:db8:0:f096:a60:164::1"));
        let from_ce = || eth(0x0800, &ipv4(BR, 41, 0, &[0; 40]));
        let icmp_error_about_41 = {
            let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&ipv4([10, 96, 1, 100], 41, 0, &[0; 8]));
            eth(0x0800, &ipv4(BR, 1, 0, &icmp))
        };
        let foreign = [2, 0, 0, 0, 0, 9];
        let broadcast = [0xff; 6];
        let multicast = [0x33, 0x33, 0, 0, 0, 1];
        let run = |steering: &Steering, what: &str, frame: &[u8], action: u32, stat: u32| {
            let before = steering.stats();
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            let result = steering.program().test_run(opts).expect(what);
            assert_eq!(result.return_value, action, "{what}");
            let after = steering.stats();
            for (i, (a, b)) in after.iter().zip(&before).enumerate() {
                let want = u64::from(i as u32 == stat);
                assert_eq!(a - b, want, "{what}: counter {}", br_ebpf::STAT_NAMES[i].0);
            }
        };
        for (what, frame, action, stat) in [
            (
                "IPv6 to a CE",
                to_ce(),
                XDP_REDIRECT,
                br_ebpf::STAT_REDIRECT_IPV6,
            ),
            (
                "protocol 41 to the BR",
                from_ce(),
                XDP_REDIRECT,
                br_ebpf::STAT_REDIRECT_PROTO41,
            ),
            (
                "ICMP error quoting 41",
                icmp_error_about_41.clone(),
                XDP_REDIRECT,
                br_ebpf::STAT_REDIRECT_ICMPV4,
            ),
            (
                "first fragment",
                eth(0x0800, &ipv4(BR, 41, 0x2000, &[0; 40])),
                XDP_PASS,
                br_ebpf::STAT_PASS_IPV4_FRAGMENT,
            ),
            (
                "later fragment",
                eth(0x0800, &ipv4(BR, 41, 0x00b9, &[0; 40])),
                XDP_PASS,
                br_ebpf::STAT_PASS_IPV4_FRAGMENT,
            ),
            // Frames not sent to our MAC (RFC 1122 §3.3.6).
            (
                "IPv6 to a CE, another host's MAC",
                to_mac(foreign, to_ce()),
                XDP_PASS,
                br_ebpf::STAT_PASS_NOT_OUR_MAC,
            ),
            (
                "protocol 41, another host's MAC",
                to_mac(foreign, from_ce()),
                XDP_PASS,
                br_ebpf::STAT_PASS_NOT_OUR_MAC,
            ),
            (
                "IPv6 to a CE, broadcast MAC",
                to_mac(broadcast, to_ce()),
                XDP_DROP,
                br_ebpf::STAT_DROP_L2_MULTICAST,
            ),
            (
                "IPv6 to a CE, multicast MAC",
                to_mac(multicast, to_ce()),
                XDP_DROP,
                br_ebpf::STAT_DROP_L2_MULTICAST,
            ),
            (
                "protocol 41, broadcast MAC",
                to_mac(broadcast, from_ce()),
                XDP_DROP,
                br_ebpf::STAT_DROP_L2_MULTICAST,
            ),
            (
                "fragment, broadcast MAC",
                to_mac(broadcast, eth(0x0800, &ipv4(BR, 41, 0x2000, &[0; 40]))),
                XDP_DROP,
                br_ebpf::STAT_DROP_L2_MULTICAST,
            ),
            (
                "ICMP error quoting 41, broadcast MAC",
                to_mac(broadcast, icmp_error_about_41.clone()),
                XDP_DROP,
                br_ebpf::STAT_DROP_L2_MULTICAST,
            ),
        ] {
            run(&steering, what, &frame, action, stat);
        }
        // An interface that does not face the CEs: no protocol 41 on it
        // (RFC 4213 §3.6); IPv6 towards CEs still goes.
        steering.set_interface(1, lo(0)).unwrap();
        for (what, frame, action, stat) in [
            (
                "IPv6 to a CE, LAN side",
                to_ce(),
                XDP_REDIRECT,
                br_ebpf::STAT_REDIRECT_IPV6,
            ),
            (
                "protocol 41, LAN side",
                from_ce(),
                XDP_DROP,
                br_ebpf::STAT_DROP_PROTO41_WRONG_INTERFACE,
            ),
            (
                "fragment, LAN side",
                eth(0x0800, &ipv4(BR, 41, 0x00b9, &[0; 40])),
                XDP_DROP,
                br_ebpf::STAT_DROP_PROTO41_WRONG_INTERFACE,
            ),
            (
                "ICMP error quoting 41, LAN side",
                icmp_error_about_41,
                XDP_DROP,
                br_ebpf::STAT_DROP_PROTO41_WRONG_INTERFACE,
            ),
        ] {
            run(&steering, what, &frame, action, stat);
        }
        steering.set_interface(1, lo(1)).unwrap();
        // The host's traffic still passes with the socket there.
        let mut opts = TestRunOptions::new();
        let other = eth(0x86dd, &ipv6("2001:db8:0:100::2"));
        opts.data_in = Some(&other);
        assert_eq!(
            steering.program().test_run(opts).unwrap().return_value,
            XDP_PASS
        );
        // And with the slot emptied, a stopped daemon's traffic goes to the kernel.
        steering.unbind_socket(0, 0);
        let frame = eth(0x86dd, &ipv6("2001:db8:0:f096:a60:164::1"));
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        assert_eq!(
            steering.program().test_run(opts).unwrap().return_value,
            XDP_PASS
        );
    })
    .join()
    .unwrap();
}

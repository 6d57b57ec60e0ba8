//! The XDP fast path against the relay, packet by packet: for thousands of
//! generated frames (plain ones and every kind the fast path must leave
//! alone), BPF_PROG_TEST_RUN runs the XDP program as if the frame arrived
//! on a veth of a private network namespace whose routes and neighbours the
//! kernel's FIB holds, and `worker::dispose` runs the relay on the same
//! frame with the same routes. Whenever XDP forwards a frame itself, its
//! bytes must be the relay's (the IPv4 ID aside: any value is valid, the
//! checksum must be right for it); whenever it declines, the frame must be
//! untouched, for the forwarder gets it. Needs root (BPF, netns).

mod netns;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use br_daemon::dataplane::counters::Counters;
use br_daemon::dataplane::fib::Fib;
use br_daemon::dataplane::interfaces::Interfaces;
use br_daemon::dataplane::worker::{dispose, Context, Disposition, Handoff};
use br_daemon::dataplane::xdp::Steering;
use br_daemon::dataplane::xfrm::{Direction, Ipsec, Policy, Template};
use br_daemon::relay::{Domain, DomainSpec, Domains, IcmpRate, Relay};
use netns::{ifindex, sh};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const LAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LAN_ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const WAN_ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
const HEADROOM: usize = 256;

fn domains() -> Vec<Domain> {
    let spec = |name: &str, prefix: &str, mask: u8, br: &str, allow: &[&str]| {
        let mut spec = DomainSpec::new(name, prefix.parse().unwrap(), mask, br.parse().unwrap());
        spec.ce_ipv4_allow = allow.iter().map(|p| p.parse().unwrap()).collect();
        if name == "narrow" {
            spec.tcp_mss = Some(1220);
        }
        Domain::new(&spec).unwrap().0
    };
    vec![
        // SCENARIO.md: all 32 bits embedded after a /64.
        spec("vpc", "2001:db8:0:f096::/64", 0, "10.255.255.222", &[]),
        // 24 bits after a /40: the field straddles the two 64-bit halves.
        // Only half of its CEs (and one /16 more) are allowed.
        spec(
            "wide",
            "2001:db8:100::/40",
            8,
            "10.255.255.223",
            &["10.0.0.0/9", "10.200.0.0/16"],
        ),
        // 16 bits after a /48, the common prefix 172.16/16; TCP MSS clamped.
        spec("narrow", "2001:db9:0::/48", 16, "172.16.0.1", &[]),
    ]
}

/// lan0 and wan0 in the calling thread's (fresh) namespace, with the
/// routes and permanent neighbours the test frames need; returns the
/// relay's copy of the same FIB.
fn network() -> (u32, u32, Fib) {
    for cmd in [
        "ip link set lo up",
        "ip link add name lan0 address 02:00:00:00:00:01 type veth peer name lanp",
        "ip link add name wan0 address 02:00:00:00:00:02 type veth peer name wanp",
        "ip link set lan0 up",
        "ip link set lanp up",
        "ip link set wan0 up",
        "ip link set wanp up",
        "sysctl -qw net.ipv4.conf.all.forwarding=1",
        "sysctl -qw net.ipv6.conf.all.forwarding=1",
        "ip addr add 192.0.2.1/24 dev wan0",
        "ip neigh replace 192.0.2.2 lladdr 02:00:00:00:00:22 dev wan0 nud permanent",
        "ip route add 10.0.0.0/8 via 192.0.2.2 dev wan0",
        "ip route add 172.16.0.0/12 via 192.0.2.2 dev wan0",
        "ip -6 addr add 2001:db8:0:100::1/64 dev lan0 nodad",
        "ip -6 neigh replace 2001:db8:0:100::2 lladdr 02:00:00:00:00:11 dev lan0 nud permanent",
        "ip -6 route add 2001:db8:1::/48 via 2001:db8:0:100::2 dev lan0",
    ] {
        sh(cmd);
    }
    let (lan, wan) = (ifindex("lan0"), ifindex("wan0"));
    let mut fib = Fib::default();
    fib.add_link(lan, "lan0", LAN_MAC);
    fib.add_link(wan, "wan0", WAN_MAC);
    let wan_gw: IpAddr = "192.0.2.2".parse().unwrap();
    let lan_gw: IpAddr = "2001:db8:0:100::2".parse().unwrap();
    fib.add_route("192.0.2.0/24".parse().unwrap(), wan, None);
    fib.add_route("10.0.0.0/8".parse().unwrap(), wan, Some(wan_gw));
    fib.add_route("172.16.0.0/12".parse().unwrap(), wan, Some(wan_gw));
    fib.add_neighbour(wan, wan_gw, WAN_ROUTER_MAC);
    fib.add_route("2001:db8:0:100::/64".parse().unwrap(), lan, None);
    fib.add_route("2001:db8:1::/48".parse().unwrap(), lan, Some(lan_gw));
    fib.add_neighbour(lan, lan_gw, LAN_ROUTER_MAC);
    (lan, wan, fib)
}

/// Tells the program about lan0 and wan0 as the daemon does: their MACs
/// from the FIB, CEs behind wan0 only.
fn serve(steering: &mut Steering, fib: &Fib, lan: u32, wan: u32) {
    let ports = vec![("lan0".to_string(), lan), ("wan0".to_string(), wan)];
    Interfaces::new(ports, Some(vec!["wan0".to_string()]))
        .sync(steering, fib)
        .unwrap();
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv6 address of a CE of domain `which` embedding `ce`'s variable bits.
fn ce_address(which: usize, ce: u32, host: u64) -> Ipv6Addr {
    let bits = match which {
        // prefix /64, 32 bits at 64..96
        0 => (0x2001_0db8_0000_f096u128 << 64) | (u128::from(ce) << 32) | u128::from(host as u32),
        // prefix /40, 24 bits at 40..64
        1 => (0x20_010d_b801_u128 << 88) | (u128::from(ce & 0x00ff_ffff) << 64) | u128::from(host),
        // prefix /48, 16 bits at 48..64
        _ => (0x2001_0db9_0000u128 << 80) | (u128::from(ce & 0xffff) << 64) | u128::from(host),
    };
    Ipv6Addr::from(bits)
}

/// What a test frame is made of; the strategy leans towards plain frames
/// and mutates one thing at a time.
#[derive(Clone, Debug)]
struct Spec {
    decap: bool,
    domain: usize,
    ce: u32,
    host: u64,
    native: Ipv6Addr,
    hop_limit: u8,
    traffic_class: u8,
    outer_tos: u8,
    payload: usize,
    mutation: u8,
}

fn native_address() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        // Routed LAN prefix and the on-link router.
        6 => any::<u64>().prop_map(|h| Ipv6Addr::from((0x2001_0db8_0001u128 << 80) | u128::from(h))),
        2 => Just("2001:db8:0:100::2".parse().unwrap()),
        // No route.
        1 => any::<u64>().prop_map(|h| Ipv6Addr::from((0x2001_0db8_0fffu128 << 80) | u128::from(h))),
        1 => Just("fe80::1".parse().unwrap()),
        1 => Just("ff02::1".parse().unwrap()),
    ]
}

prop_compose! {
    fn spec()(
        decap in any::<bool>(),
        domain in 0usize..3,
        ce in any::<u32>(),
        host in any::<u64>(),
        native in native_address(),
        hop_limit in prop_oneof![8 => Just(64u8), 1 => 0u8..3, 1 => any::<u8>()],
        traffic_class in any::<u8>(),
        outer_tos in any::<u8>(),
        payload in prop_oneof![4 => 0usize..64, 1 => 1180usize..1300],
        // Hairpins (7) get a weight of their own: the counters' check below
        // needs a few dozen of them in every run, not only on average.
        mutation in prop_oneof![5 => Just(0u8), 1 => Just(7u8), 4 => 1u8..12],
    ) -> Spec {
        Spec { decap, domain, ce, host, native, hop_limit, traffic_class, outer_tos, payload, mutation }
    }
}

fn ce_ipv4(domain: usize, ce: u32) -> Ipv4Addr {
    Ipv4Addr::from(match domain {
        0 => ce,
        1 => 0x0a00_0000 | (ce & 0x00ff_ffff),
        _ => 0xac10_0000 | (ce & 0xffff),
    })
}

fn br_ipv4(domain: usize) -> Ipv4Addr {
    ["10.255.255.222", "10.255.255.223", "172.16.0.1"][domain]
        .parse()
        .unwrap()
}

/// Builds the Ethernet frame of a spec.
fn frame(s: &Spec) -> Vec<u8> {
    let ce_ip6 = ce_address(s.domain, s.ce, s.host);
    let (src, dst) = if s.decap {
        (ce_ip6, s.native)
    } else {
        (s.native, ce_ip6)
    };
    let mut ip6 = vec![
        0x60 | (s.traffic_class >> 4),
        (s.traffic_class << 4) | 0x5,
        0x67,
        0x89,
    ];
    ip6.extend_from_slice(&((s.payload + 8) as u16).to_be_bytes());
    ip6.extend_from_slice(&[17, s.hop_limit]);
    ip6.extend_from_slice(&src.octets());
    ip6.extend_from_slice(&dst.octets());
    ip6.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    ip6.extend_from_slice(&((s.payload + 8) as u16).to_be_bytes());
    ip6.extend_from_slice(&[0, 0]);
    ip6.extend((0..s.payload).map(|i| i as u8));
    let mut f = Vec::new();
    if s.decap {
        f.extend_from_slice(&WAN_MAC);
        f.extend_from_slice(&WAN_ROUTER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, s.outer_tos];
        ip.extend_from_slice(&((20 + ip6.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0xab, 0xcd, 0, 0, 37, 41, 0, 0]);
        ip.extend_from_slice(&ce_ipv4(s.domain, s.ce).octets());
        ip.extend_from_slice(&br_ipv4(s.domain).octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&LAN_MAC);
        f.extend_from_slice(&LAN_ROUTER_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
    }
    f.extend_from_slice(&ip6);
    let ip6_at = if s.decap { 34 } else { 14 };
    match s.mutation {
        // A byte of Ethernet padding.
        1 => f.push(0),
        // Truncated.
        2 => {
            f.truncate(f.len() - 1);
        }
        // Inner source (decap) or destination (encap) in another domain.
        3 => {
            let at = ip6_at + if s.decap { 8 } else { 24 };
            let other = ce_address((s.domain + 1) % 3, s.ce, s.host);
            f[at..at + 16].copy_from_slice(&other.octets());
        }
        // Outer source not the CE's; or the BR's own address as destination.
        4 if s.decap => f[26..30].copy_from_slice(&[10, 1, 2, 3]),
        4 => f[ip6_at + 24..ip6_at + 40].copy_from_slice(&ce_address(0, 0x0aff_ffde, 1).octets()),
        // Bad IPv4 checksum; a CE source on a native packet.
        5 if s.decap => f[24] ^= 0x40,
        5 => f[ip6_at + 8..ip6_at + 24].copy_from_slice(&ce_address(1, 7, 7).octets()),
        // IPv4 options (decap); payload length 0 (encap).
        6 if s.decap => {
            f[14] = 0x46;
            f.splice(34..34, [1, 1, 1, 1]);
            let total = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            f[24..26].copy_from_slice(&[0, 0]);
            let sum = checksum(&f[14..38]);
            f[24..26].copy_from_slice(&sum.to_be_bytes());
        }
        6 => f[ip6_at + 4..ip6_at + 6].copy_from_slice(&[0, 0]),
        // Inner destination in a 6rd prefix: hairpin (decap).
        7 if s.decap => {
            f[ip6_at + 24..ip6_at + 40].copy_from_slice(&ce_address(s.domain, s.ce ^ 1, 9).octets())
        }
        // CE address martian (embedded 127.x / 0.x / 224+).
        8 => {
            let bad = ce_address(0, 0x7f00_0001, s.host);
            let at = ip6_at + if s.decap { 8 } else { 24 };
            f[at..at + 16].copy_from_slice(&bad.octets());
        }
        // Not IPv6 inside / wrong version.
        9 => f[ip6_at] = 0x40 | (f[ip6_at] & 0x0f),
        // An ICMPv6 error inside.
        10 => {
            f[ip6_at + 6] = 58;
            f[ip6_at + 40] = 1;
        }
        // A TCP SYN announcing MSS 1460: "narrow" (tcp-mss) clamps it.
        11 if s.payload + 8 >= 24 => {
            let tcp = ip6_at + 40;
            f[ip6_at + 6] = 6;
            f[tcp + 12] = 6 << 4;
            f[tcp + 13] = 0x02;
            f[tcp + 20..tcp + 24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        }
        _ => {}
    }
    f
}

/// The frame bytes with the IPv4 ID and header checksum zeroed.
fn without_id(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    if f.len() >= 34 && f[12..14] == [0x08, 0x00] {
        f[18..20].copy_from_slice(&[0, 0]);
        f[24..26].copy_from_slice(&[0, 0]);
    }
    f
}

#[test]
fn fast_path_forwards_exactly_what_the_relay_would_and_leaves_the_rest_untouched() {
    // Three domains: the program compares BR addresses and prefixes one by
    // one (few_sets).
    assert!(domains().len() <= br_ebpf::MAX_FEW as usize);
    forwards_what_the_relay_would(domains());
}

#[test]
fn with_more_domains_than_few_the_maps_give_the_same_answers() {
    // Two more domains (and BR addresses) than MAX_FEW allows: the
    // program looks them up in br_addrs and sixrd_prefixes instead.
    let mut domains = domains();
    for i in 0..2u8 {
        let spec = DomainSpec::new(
            "spare",
            format!("2001:dba:{i}::/48").parse().unwrap(),
            16,
            format!("172.17.{i}.1").parse().unwrap(),
        );
        domains.push(Domain::new(&spec).unwrap().0);
    }
    assert!(domains.len() > br_ebpf::MAX_FEW as usize);
    forwards_what_the_relay_would(domains);
}

/// The differential test: random frames of the first three `domains`
/// through the program and through the relay give the same bytes, or
/// the program leaves them untouched to the forwarder.
fn forwards_what_the_relay_would(domains: Vec<Domain>) {
    std::thread::spawn(move || {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        let (lan, wan, fib) = network();
        let mut steering = Steering::load(&domains, true).expect("load the XDP program");
        serve(&mut steering, &fib, lan, wan);
        steering.set_fast_egress(&[lan, wan]).unwrap();
        // As the daemon runs it (default rules): the next-hop cache on, so
        // most frames take remembered answers.
        steering.renew_next_hops(true, true).unwrap();
        let relay = Relay::new(
            Domains::new(domains).unwrap(),
            IcmpRate {
                per_second: 1_000_000,
                burst: 1_000_000,
            },
        );
        let counters = Counters::default();
        let ports = [lan, wan];
        let ctx = Context {
            relay: &relay,
            fib: &fib,
            ports: &ports,
            counters: &counters,
        };
        let state = RefCell::new(relay.worker_state(0));
        let counts = RefCell::new(([0u32; 2], [0u32; 2]));
        let ids = RefCell::new(std::collections::HashSet::new());
        let mut runner = TestRunner::new(RunnerConfig {
            cases: 3000,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        let result = runner.run(&spec(), |s| {
            let input = frame(&s);
            let ingress = if s.decap { wan } else { lan };
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex.
            let mut md = [0u8; 24];
            md[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
            md[12..16].copy_from_slice(&ingress.to_ne_bytes());
            let mut out = vec![0u8; input.len() + 64];
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&input);
            opts.data_out = Some(&mut out);
            opts.ctx_in = Some(&md);
            let run = steering.program().test_run(opts).expect("test run");
            let xdp_out = &out[..run.data_size_out as usize];

            let mut chunk = vec![0u8; HEADROOM + input.len()];
            chunk[HEADROOM..].copy_from_slice(&input);
            let (disposition, _) = dispose(&ctx, &mut state.borrow_mut(), &mut chunk, HEADROOM, input.len(), 0);
            let which = usize::from(s.decap);
            match run.return_value {
                XDP_REDIRECT => {
                    counts.borrow_mut().0[which] += 1;
                    let Disposition::Transmit { port, head, len } = disposition else {
                        panic!("XDP forwarded what the relay does not transmit ({disposition:?}): {s:?}");
                    };
                    let relay_out = &chunk[head..head + len];
                    prop_assert_eq!(without_id(xdp_out), without_id(relay_out), "{:?}", s);
                    prop_assert_eq!(&xdp_out[6..12], &[LAN_MAC, WAN_MAC][port][..]);
                    if xdp_out[12..14] == [0x08, 0x00] {
                        prop_assert_eq!(checksum(&xdp_out[14..34]), 0, "IPv4 checksum");
                        ids.borrow_mut().insert(u16::from_be_bytes([xdp_out[18], xdp_out[19]]));
                    }
                }
                XDP_PASS => {
                    counts.borrow_mut().1[which] += 1;
                    prop_assert_eq!(xdp_out, &input[..], "declined frame modified: {:?}", s);
                }
                other => prop_assert!(false, "XDP action {} for {:?}", other, s),
            }
            Ok(())
        });
        result.unwrap();
        let (forwarded, declined) = counts.into_inner();
        // The IPv4 identification varies (RFC 6864 §4.1: no DF).
        assert!(
            ids.borrow().len() as u32 > forwarded[0] / 2,
            "{} distinct IPv4 IDs",
            ids.borrow().len()
        );
        // Both directions were exercised both ways.
        for (which, name) in [(0, "encapsulation"), (1, "decapsulation")] {
            assert!(
                forwarded[which] > 300 && declined[which] > 300,
                "{name}: {} forwarded, {} declined",
                forwarded[which],
                declined[which]
            );
        }
        let stats = steering.stats();
        assert_eq!(
            stats[br_ebpf::STAT_FAST_ENCAP as usize] as u32,
            forwarded[0]
        );
        let hairpinned = stats[br_ebpf::STAT_FAST_HAIRPIN as usize] as u32;
        assert_eq!(
            stats[br_ebpf::STAT_FAST_DECAP as usize] as u32 + hairpinned,
            forwarded[1]
        );
        assert!(hairpinned > 20, "{hairpinned} hairpinned");
        // Every declined frame to a 6rd prefix or the BR has a reason.
        let declines: u64 = steering.declines().iter().sum();
        assert!(declines > 0);
        // SYNs of the clamping domain went to the forwarder.
        assert!(steering.declines()[br_ebpf::DECLINE_TCP_MSS as usize] > 5);
        eprintln!(
            "fast path: encap {} forwarded / {} declined, decap {} / {} ({} hairpinned); declines by reason {:?}",
            forwarded[0],
            declined[0],
            forwarded[1],
            declined[1],
            hairpinned,
            steering.declines()
        );
    })
    .join()
    .unwrap();
}

#[test]
fn disabled_fast_path_forwards_nothing_itself() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        let (lan, wan, fib) = network();
        let mut steering = Steering::load(&domains(), false).unwrap();
        serve(&mut steering, &fib, lan, wan);
        steering.set_fast_egress(&[lan, wan]).unwrap();
        let input = frame(&plain_spec(false, 0x0a60_0164));
        assert_eq!(
            run_on(&steering, &input, lan),
            XDP_PASS,
            "to the (absent) socket"
        );
        let decap = frame(&plain_spec(true, 0x0a60_0164));
        assert_eq!(run_on(&steering, &decap, wan), XDP_PASS);
        assert_eq!(steering.declines()[br_ebpf::DECLINE_DISABLED as usize], 2);
        // Turned on by a reload (which rewrites every interface's entry),
        // the same frames take the fast path; off again, they do not.
        steering.set_domains(&domains(), true).unwrap();
        assert_eq!(run_on(&steering, &input, lan), XDP_REDIRECT);
        assert_eq!(run_on(&steering, &decap, wan), XDP_REDIRECT);
        steering.set_domains(&domains(), false).unwrap();
        assert_eq!(run_on(&steering, &input, lan), XDP_PASS);
        assert_eq!(run_on(&steering, &decap, wan), XDP_PASS);
        assert_eq!(steering.declines()[br_ebpf::DECLINE_DISABLED as usize], 4);
    })
    .join()
    .unwrap();
}

/// The frame the program redirects for `input` arriving on `ingress`
/// (XDP_REDIRECT asserted).
fn redirected(steering: &Steering, input: &[u8], ingress: u32) -> Vec<u8> {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ingress.to_ne_bytes());
    let mut out = vec![0u8; input.len() + 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&md);
    let run = steering.program().test_run(opts).unwrap();
    assert_eq!(run.return_value, XDP_REDIRECT);
    out.truncate(run.data_size_out as usize);
    out
}

#[test]
fn remembered_next_hops_last_until_a_new_generation_and_only_up_to_their_length() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        let (lan, wan, fib) = network();
        let mut steering = Steering::load(&domains(), true).unwrap();
        serve(&mut steering, &fib, lan, wan);
        steering.set_fast_egress(&[lan, wan]).unwrap();
        let encap = frame(&plain_spec(false, 0x0a60_0164));
        let decap = frame(&plain_spec(true, 0x0a60_0164));
        let new_mac = "ip neigh replace 192.0.2.2 lladdr 02:00:00:00:00:33 dev wan0 nud permanent";
        let new_mac6 =
            "ip -6 neigh replace 2001:db8:0:100::2 lladdr 02:00:00:00:00:44 dev lan0 nud permanent";

        // Off (as loaded): every frame asks the kernel.
        assert_eq!(redirected(&steering, &encap, lan)[..6], WAN_ROUTER_MAC);
        sh(new_mac);
        assert_eq!(
            redirected(&steering, &encap, lan)[..6],
            [2, 0, 0, 0, 0, 0x33]
        );

        // On: the answer is remembered until the generation changes
        // (the daemon renews it on every netlink notification).
        steering.renew_next_hops(true, true).unwrap();
        assert_eq!(
            redirected(&steering, &encap, lan)[..6],
            [2, 0, 0, 0, 0, 0x33]
        );
        assert_eq!(redirected(&steering, &decap, wan)[..6], LAN_ROUTER_MAC);
        sh(&new_mac.replace(":33", ":22"));
        sh(new_mac6);
        assert_eq!(
            redirected(&steering, &encap, lan)[..6],
            [2, 0, 0, 0, 0, 0x33],
            "remembered"
        );
        assert_eq!(
            redirected(&steering, &decap, wan)[..6],
            LAN_ROUTER_MAC,
            "remembered"
        );
        steering.renew_next_hops(true, true).unwrap();
        assert_eq!(
            redirected(&steering, &encap, lan)[..6],
            WAN_ROUTER_MAC,
            "renewed"
        );
        assert_eq!(
            redirected(&steering, &decap, wan)[..6],
            [2, 0, 0, 0, 0, 0x44],
            "renewed"
        );

        // A longer packet than the kernel passed is asked again: a route
        // MTU below it (set without a renewal) makes the kernel refuse it.
        sh("ip route replace 10.0.0.0/8 via 192.0.2.2 dev wan0 mtu lock 1000");
        let mut long = plain_spec(false, 0x0a60_0164);
        long.payload = 1100;
        let before = steering.declines()[br_ebpf::DECLINE_NO_NEXT_HOP as usize];
        assert_eq!(
            run_on(&steering, &frame(&long), lan),
            XDP_PASS,
            "to the (absent) socket"
        );
        assert_eq!(
            steering.declines()[br_ebpf::DECLINE_NO_NEXT_HOP as usize],
            before + 1
        );
        assert_eq!(
            redirected(&steering, &encap, lan)[..6],
            WAN_ROUTER_MAC,
            "short ones still fast"
        );

        // A reload that no longer admits the CE: its remembered answer,
        // which vouched for the domain's checks, goes with the old domains.
        let mut spec = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().unwrap(),
            0,
            "10.255.255.222".parse().unwrap(),
        );
        spec.ce_ipv4_allow = vec!["10.97.0.0/16".parse().unwrap()];
        let mut narrowed = domains();
        narrowed[0] = Domain::new(&spec).unwrap().0;
        // Twice: the second reload writes the domain slots of the first
        // configuration again, where the answer was remembered.
        for _ in 0..2 {
            steering.set_domains(&narrowed, true).unwrap();
            let before = steering.declines()[br_ebpf::DECLINE_NEEDS_RELAY as usize];
            assert_eq!(run_on(&steering, &encap, lan), XDP_PASS, "not admitted");
            assert_eq!(
                steering.declines()[br_ebpf::DECLINE_NEEDS_RELAY as usize],
                before + 1
            );
        }
        steering.set_domains(&domains(), true).unwrap();
        assert_eq!(
            redirected(&steering, &encap, lan)[..6],
            WAN_ROUTER_MAC,
            "admitted again"
        );

        // The egress leaves the fast path's set: remembered answers go too.
        steering.set_fast_egress(&[lan]).unwrap();
        let before = steering.declines()[br_ebpf::DECLINE_EGRESS as usize];
        assert_eq!(
            run_on(&steering, &encap, lan),
            XDP_PASS,
            "to the (absent) socket"
        );
        assert_eq!(
            steering.declines()[br_ebpf::DECLINE_EGRESS as usize],
            before + 1
        );
    })
    .join()
    .unwrap();
}

/// A plain frame of the SCENARIO domain: LAN to CE `ce`, or (`decap`)
/// from it.
fn plain_spec(decap: bool, ce: u32) -> Spec {
    Spec {
        decap,
        domain: 0,
        ce,
        host: 1,
        native: "2001:db8:1::5".parse().unwrap(),
        hop_limit: 64,
        traffic_class: 0,
        outer_tos: 0,
        payload: 10,
        mutation: 0,
    }
}

/// The XDP program's verdict on `input` arriving on `ingress`.
fn run_on(steering: &Steering, input: &[u8], ingress: u32) -> u32 {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ingress.to_ne_bytes());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.ctx_in = Some(&md);
    steering.program().test_run(opts).unwrap().return_value
}

/// An IPsec policy `dir` between the BR and the VPC, ESP tunnel mode.
fn vpc_policy(dir: Direction) -> Policy {
    let (br, vpc) = (
        "10.255.255.222/32".parse().unwrap(),
        "10.96.0.0/16".parse().unwrap(),
    );
    let (src, dst) = if dir == Direction::Out {
        (br, vpc)
    } else {
        (vpc, br)
    };
    Policy {
        dir,
        src,
        dst,
        proto: 0,
        block: false,
        templates: vec![Template {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            proto: 50,
            mode: 1,
        }],
        if_id: 0,
        mark: None,
        priority: 0,
    }
}

#[test]
fn ipsec_policies_keep_covered_packets_off_the_fast_path() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects this thread only, which ends with the test.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare (root needed)");
        let (lan, wan, mut fib) = network();
        let mut steering = Steering::load(&domains(), true).unwrap();
        serve(&mut steering, &fib, lan, wan);
        steering.set_fast_egress(&[lan, wan]).unwrap();
        // With the next-hop cache on, a CE's answer remembered before the
        // policies came must not outlive them.
        steering.renew_next_hops(true, true).unwrap();
        let covered = frame(&plain_spec(false, 0x0a60_0164));
        assert_eq!(
            run_on(&steering, &covered, lan),
            XDP_REDIRECT,
            "before the policies"
        );
        let ipsec = Ipsec::new([vpc_policy(Direction::Out), vpc_policy(Direction::In)]);
        let br = ["10.255.255.222".parse().unwrap()];
        steering.set_ipsec(&ipsec, &br).unwrap();
        let spec = plain_spec;
        let run = |steering: &Steering, s: &Spec| {
            run_on(steering, &frame(s), if s.decap { wan } else { lan })
        };
        // To a covered CE: declined (then the absent socket: XDP_PASS).
        assert_eq!(run(&steering, &spec(false, 0x0a60_0164)), XDP_PASS);
        assert_eq!(steering.declines()[br_ebpf::DECLINE_IPSEC as usize], 1);
        // To a CE outside the policy: the fast path as before.
        assert_eq!(run(&steering, &spec(false, 0x0a61_0001)), XDP_REDIRECT);
        // Plaintext protocol 41 from a covered CE: the kernel's to check.
        assert_eq!(run(&steering, &spec(true, 0x0a60_0164)), XDP_PASS);
        assert_eq!(steering.stats()[br_ebpf::STAT_PASS_IPSEC_IN as usize], 1);
        assert_eq!(run(&steering, &spec(true, 0x0a61_0001)), XDP_REDIRECT);

        // The forwarder: to the kernel, counted as IPsec; plaintext
        // arriving from a covered CE is dropped.
        fib.set_ipsec(std::sync::Arc::new(ipsec));
        let relay = Relay::new(Domains::new(domains()).unwrap(), IcmpRate::default());
        let counters = Counters::default();
        let ports = [lan, wan];
        let ctx = Context {
            relay: &relay,
            fib: &fib,
            ports: &ports,
            counters: &counters,
        };
        let mut state = relay.worker_state(0);
        for (decap, expect_ipsec) in [(false, true), (true, false)] {
            let input = frame(&spec(decap, 0x0a60_0164));
            let mut chunk = vec![0u8; HEADROOM];
            chunk.extend_from_slice(&input);
            let (d, _) = dispose(&ctx, &mut state, &mut chunk, HEADROOM, input.len(), 0);
            if expect_ipsec {
                assert!(
                    matches!(
                        d,
                        Disposition::KernelIpv4 {
                            via: Handoff::Ipsec,
                            ..
                        }
                    ),
                    "{d:?}"
                );
            } else {
                assert_eq!(
                    d,
                    Disposition::Drop(br_daemon::relay::DropReason::IpsecRequired)
                );
            }
        }

        // Policies gone: the covered CE takes the fast path again.
        steering.set_ipsec(&Ipsec::default(), &br).unwrap();
        assert_eq!(run(&steering, &spec(false, 0x0a60_0164)), XDP_REDIRECT);
    })
    .join()
    .unwrap();
}

//! Golden cases for every rule of the relay, with SCENARIO.md's addresses.
//! Expected packets are written out field by field, independently of the
//! code under test, and cross-checked with etherparse.

use super::*;
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};

pub(crate) const LAN_SERVER: &str = "2001:db8:0:100:5054:1cff:fe93:3ea8";
pub(crate) const CE1_V6: &str = "2001:db8:0:f096:a60:164::1";
pub(crate) const CE2_V6: &str = "2001:db8:0:f096:a60:165::1";
pub(crate) const BR_V6: &str = "2001:db8:0:f096:aff:ffde::1";
const HEADROOM: usize = 128;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(crate) fn scenario_domain() -> Domain {
    let spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        v4("10.255.255.222"),
    );
    Domain::new(&spec).unwrap().0
}

/// The second domain, RFC 5969 to the letter: /40, IPv4MaskLen 8.
fn strict_domain() -> Domain {
    let spec = DomainSpec::new(
        "strict",
        "2001:db8:100::/40".parse().unwrap(),
        8,
        v4("10.255.255.222"),
    );
    Domain::new(&spec).unwrap().0
}

pub(crate) fn scenario_relay() -> Relay {
    Relay::new(
        Domains::new(vec![scenario_domain(), strict_domain()]).unwrap(),
        IcmpRate::default(),
    )
}

/// An IPv6 packet with the given header fields and payload.
pub(crate) fn ipv6(src: &str, dst: &str, hop: u8, tc: u8, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60 | (tc >> 4), tc << 4, 0x12, 0x34];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(nh);
    p.push(hop);
    p.extend_from_slice(&v6(src).octets());
    p.extend_from_slice(&v6(dst).octets());
    p.extend_from_slice(payload);
    p
}

/// An ICMPv6 echo request with a correct checksum.
pub(crate) fn echo(src: &str, dst: &str, hop: u8, tc: u8, data_len: usize) -> Vec<u8> {
    let mut icmp = vec![128, 0, 0, 0, 0x0b, 0xad, 0, 1];
    icmp.extend((0..data_len).map(|i| i as u8));
    let sum = ipv6_pseudo_sum(&v6(src), &v6(dst), icmp.len() as u32, PROTO_ICMPV6);
    let c = finish(sum_bytes(sum, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, hop, tc, PROTO_ICMPV6, &icmp)
}

/// An IPv4 packet with a correct header checksum.
pub(crate) fn ipv4(src: &str, dst: &str, tos: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0xab, 0xcd, 0, 0, 63, proto, 0, 0]);
    h.extend_from_slice(&v4(src).octets());
    h.extend_from_slice(&v4(dst).octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Runs one direction of the relay on `packet` with room in front of it.
pub(crate) fn run(
    relay: &Relay,
    state: &mut WorkerState,
    packet: &[u8],
    ipv4_side: bool,
    now_ns: u64,
) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + packet.len()];
    buf[HEADROOM..].copy_from_slice(packet);
    let mut frame = Frame::new(&mut buf, HEADROOM, packet.len()).unwrap();
    let verdict = if ipv4_side {
        relay.from_ipv4(state, &mut frame, now_ns)
    } else {
        relay.from_ipv6(state, &mut frame, now_ns)
    };
    (verdict, frame.data().to_vec())
}

fn once(packet: &[u8], ipv4_side: bool) -> (Verdict, Vec<u8>) {
    let relay = scenario_relay();
    let mut st = relay.worker_state(0);
    run(&relay, &mut st, packet, ipv4_side, 1)
}

fn drop_reason(packet: &[u8], ipv4_side: bool) -> DropReason {
    match once(packet, ipv4_side).0 {
        Verdict::Drop(r) => r,
        v => panic!("expected a drop, got {v:?}"),
    }
}

fn with_hop(mut p: Vec<u8>, hop: u8) -> Vec<u8> {
    p[7] = hop;
    p
}

/// Every ICMPv6 checksum in an IPv6 packet verifies.
fn assert_icmpv6_checksum(p: &[u8]) {
    let sum = ipv6_pseudo_sum(&ipv6_at(p, 8), &ipv6_at(p, 24), (p.len() - 40) as u32, 58);
    assert_eq!(finish(sum_bytes(sum, &p[40..])), 0, "ICMPv6 checksum");
}

#[test]
fn encapsulates_lan_to_ce_byte_exact() {
    let inner = echo(LAN_SERVER, CE1_V6, 64, 0xb9, 56);
    let (verdict, out) = once(&inner, false);
    assert_eq!(
        verdict,
        Verdict::Forward {
            path: Path::Encapsulated,
            egress: Egress::Ipv4 {
                dst: v4("10.96.1.100")
            }
        }
    );
    let total = (20 + inner.len()) as u16;
    #[rustfmt::skip]
    let mut expected_outer = vec![
        0x45, 0xb9, // DSCP 46 + ECT(1) copied from the traffic class
        (total >> 8) as u8, total as u8,
        0x00, 0x00, // ID: worker 0 starts at 0
        0x00, 0x00, // no DF, no fragment (RFC 4213 §3.2.1)
        64, 41, 0, 0, // TTL 64, protocol 41, checksum below
        10, 255, 255, 222, // BR loopback
        10, 96, 1, 100, // the CE embedded in the destination
    ];
    let c = checksum(&expected_outer);
    expected_outer[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(&out[..20], &expected_outer[..]);
    assert_eq!(
        &out[20..],
        &with_hop(inner, 63)[..],
        "inner unchanged but hop limit"
    );

    // An implementation we did not write agrees.
    let h = Ipv4HeaderSlice::from_slice(&out).unwrap();
    assert_eq!(h.protocol(), etherparse::IpNumber::IPV6);
    assert_eq!(h.destination_addr(), v4("10.96.1.100"));
    assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
    assert!(!h.dont_fragment());
    let inner = Ipv6HeaderSlice::from_slice(&out[20..]).unwrap();
    assert_eq!(inner.hop_limit(), 63);
}

#[test]
fn consecutive_packets_get_consecutive_ids_and_workers_differ() {
    let relay = scenario_relay();
    let mut st = relay.worker_state(3);
    let p = echo(LAN_SERVER, CE1_V6, 64, 0, 8);
    let a = run(&relay, &mut st, &p, false, 1).1;
    let b = run(&relay, &mut st, &p, false, 1).1;
    assert_eq!(be16(&b, 4), be16(&a, 4).wrapping_add(1));
    let mut other = relay.worker_state(4);
    assert_ne!(
        be16(&run(&relay, &mut other, &p, false, 1).1, 4),
        be16(&a, 4)
    );
}

#[test]
fn decapsulates_ce_to_lan() {
    let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 56);
    let outer = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    let (verdict, out) = once(&outer, true);
    assert_eq!(
        verdict,
        Verdict::Forward {
            path: Path::Decapsulated,
            egress: Egress::Ipv6 {
                dst: v6(LAN_SERVER)
            }
        }
    );
    assert_eq!(out, with_hop(inner, 63));
}

#[test]
fn hairpins_ce_to_ce() {
    let inner = echo(CE1_V6, CE2_V6, 64, 0, 16);
    let (verdict, out) = once(&ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner), true);
    assert_eq!(
        verdict,
        Verdict::Forward {
            path: Path::Hairpinned,
            egress: Egress::Ipv4 {
                dst: v4("10.96.1.101")
            }
        }
    );
    assert_eq!(ipv4_at(&out, 12), v4("10.255.255.222"));
    assert_eq!(ipv4_at(&out, 16), v4("10.96.1.101"));
    assert_eq!(checksum(&out[..20]), 0);
    assert_eq!(&out[20..], &with_hop(inner, 63)[..]);
}

#[test]
fn hairpins_across_domains() {
    // A CE of the strict domain (10.1.2.3 -> 2001:db8:101:203::/64) to CE1.
    let inner = echo("2001:db8:101:203::7", CE1_V6, 64, 0, 0);
    let (verdict, out) = once(&ipv4("10.1.2.3", "10.255.255.222", 0, 41, &inner), true);
    assert_eq!(
        verdict,
        Verdict::Forward {
            path: Path::Hairpinned,
            egress: Egress::Ipv4 {
                dst: v4("10.96.1.100")
            }
        }
    );
    assert_eq!(&out[20..], &with_hop(inner, 63)[..]);
}

#[test]
fn second_domain_maps_with_its_own_rules() {
    let inner = echo(LAN_SERVER, "2001:db8:1ab:cdef::1", 64, 0, 0);
    let (verdict, _) = once(&inner, false);
    // 2001:db8:1|ab:cd|ef: the 24 embedded bits after 10/8.
    assert_eq!(
        verdict,
        Verdict::Forward {
            path: Path::Encapsulated,
            egress: Egress::Ipv4 {
                dst: v4("10.171.205.239")
            }
        }
    );
}

#[test]
fn spoofed_inner_source_is_dropped() {
    // RFC 5969 §12: CE 10.96.1.100 claims CE2's address.
    let inner = echo(CE2_V6, LAN_SERVER, 64, 0, 0);
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    assert_eq!(drop_reason(&p, true), DropReason::SpoofedSource);
    // ... or the BR's own address.
    let inner = echo(BR_V6, LAN_SERVER, 64, 0, 0);
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    assert_eq!(drop_reason(&p, true), DropReason::SpoofedSource);
    // ... or an address outside every 6rd prefix.
    let inner = echo(LAN_SERVER, CE2_V6, 64, 0, 0);
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    assert_eq!(drop_reason(&p, true), DropReason::SourceOutsideDomain);
}

#[test]
fn not_for_us_is_dropped() {
    let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 0);
    let p = ipv4("10.96.1.100", "10.255.255.1", 0, 41, &inner);
    assert_eq!(drop_reason(&p, true), DropReason::NotForUs);
    let p = echo(LAN_SERVER, "2001:db8:0:f097::1", 64, 0, 0);
    assert_eq!(drop_reason(&p, false), DropReason::NotForUs);
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 17, &[0; 8]);
    assert_eq!(drop_reason(&p, true), DropReason::NotProtocol41);
}

#[test]
fn malformed_and_truncated_are_dropped_by_reason() {
    let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 8);
    let good = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);

    assert_eq!(drop_reason(&good[..19], true), DropReason::Truncated);
    assert_eq!(
        drop_reason(&good[..good.len() - 1], true),
        DropReason::Truncated
    );
    let mut bad = good.clone();
    bad[10] ^= 0xff;
    assert_eq!(drop_reason(&bad, true), DropReason::BadIpv4Checksum);
    let mut bad = good.clone();
    bad[0] = 0x65;
    assert_eq!(drop_reason(&bad, true), DropReason::Malformed);
    let mut bad = good.clone();
    bad[0] = 0x44;
    assert_eq!(drop_reason(&bad, true), DropReason::Malformed);
    // Inner header cut short: the outer length is consistent, the inner isn't.
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner[..30]);
    assert_eq!(drop_reason(&p, true), DropReason::Truncated);
    let p = ipv4(
        "10.96.1.100",
        "10.255.255.222",
        0,
        41,
        &inner[..inner.len() - 1],
    );
    assert_eq!(drop_reason(&p, true), DropReason::Truncated);
    let mut wrong_version = inner.clone();
    wrong_version[0] = 0x40;
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &wrong_version);
    assert_eq!(drop_reason(&p, true), DropReason::Malformed);
    let mut jumbo = inner.clone();
    jumbo[4..7].copy_from_slice(&[0, 0, 0]);
    assert_eq!(drop_reason(&jumbo, false), DropReason::Malformed);
    assert_eq!(drop_reason(&[0x60; 39], false), DropReason::Truncated);
}

#[test]
fn protocol_41_fragments_are_left_to_the_kernel() {
    let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 8);
    for frag in [0x2000u16, 0x0010] {
        let mut p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
        put_be16(&mut p, 6, frag);
        put_be16(&mut p, 10, 0);
        let c = checksum(&p[..20]);
        put_be16(&mut p, 10, c);
        assert_eq!(drop_reason(&p, true), DropReason::Ipv4Fragment);
    }
}

#[test]
fn ipv4_options_are_accepted_and_removed() {
    let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 8);
    let mut p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &[]);
    p[0] = 0x46;
    p.extend_from_slice(&[1, 1, 1, 0]); // NOP, NOP, NOP, EOL
    p.extend_from_slice(&inner);
    let total = p.len() as u16;
    put_be16(&mut p, 2, total);
    put_be16(&mut p, 10, 0);
    let c = checksum(&p[..24]);
    put_be16(&mut p, 10, c);
    let (v, out) = once(&p, true);
    assert!(
        matches!(
            v,
            Verdict::Forward {
                path: Path::Decapsulated,
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(out, with_hop(inner, 63));
}

#[test]
fn link_layer_padding_is_trimmed() {
    let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 0);
    let mut p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    p.extend_from_slice(&[0xee; 6]);
    let (_, out) = once(&p, true);
    assert_eq!(out, with_hop(inner.clone(), 63));
    let mut q = echo(LAN_SERVER, CE1_V6, 64, 0, 0);
    q.extend_from_slice(&[0xee; 6]);
    let (_, out) = once(&q, false);
    assert_eq!(out.len(), 20 + 48);
}

#[test]
fn martian_addresses_are_dropped() {
    for src in [
        "::",
        "::1",
        "ff02::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "::10.0.0.1",
    ] {
        let p = echo(src, CE1_V6, 64, 0, 0);
        assert_eq!(drop_reason(&p, false), DropReason::MartianSource, "{src}");
        let inner = echo(src, LAN_SERVER, 64, 0, 0);
        let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
        assert_eq!(drop_reason(&p, true), DropReason::MartianSource, "{src}");
    }
    for dst in [
        "::1",
        "ff02::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "::10.255.255.222",
    ] {
        let inner = echo(CE1_V6, dst, 64, 0, 0);
        let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
        assert_eq!(
            drop_reason(&p, true),
            DropReason::MartianDestination,
            "{dst}"
        );
        let p = echo(LAN_SERVER, dst, 64, 0, 0);
        assert_eq!(
            drop_reason(&p, false),
            DropReason::MartianDestination,
            "{dst}"
        );
    }
    // Destinations embedding IPv4 addresses no CE can have.
    for dst in [
        "2001:db8:0:f096:7f00:1::1",
        "2001:db8:0:f096:e000:1::1",
        "2001:db8:0:f096:ffff:ffff::1",
        "2001:db8:0:f096::1",
    ] {
        let p = echo(LAN_SERVER, dst, 64, 0, 0);
        assert_eq!(drop_reason(&p, false), DropReason::MartianIpv4, "{dst}");
    }
    // Outer sources that cannot be a CE.
    for src in ["127.0.0.1", "0.1.2.3", "224.0.0.1", "10.255.255.222"] {
        let inner = echo(CE1_V6, LAN_SERVER, 64, 0, 0);
        let p = ipv4(src, "10.255.255.222", 0, 41, &inner);
        assert_eq!(drop_reason(&p, true), DropReason::MartianIpv4, "{src}");
    }
}

#[test]
fn br_own_address_goes_to_the_host_and_its_prefix_to_null0() {
    let host = Verdict::Forward {
        path: Path::ToHost,
        egress: Egress::Host,
    };
    let p = echo(LAN_SERVER, BR_V6, 64, 0, 0);
    let (v, out) = once(&p, false);
    assert_eq!((v, &out), (host, &p));
    let inner = echo(CE1_V6, BR_V6, 64, 0, 0);
    let (v, out) = once(&ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner), true);
    assert_eq!((v, out), (host, inner));

    let p = echo(LAN_SERVER, "2001:db8:0:f096:aff:ffde::2", 64, 0, 0);
    assert_eq!(drop_reason(&p, false), DropReason::BrOwnPrefix);
    let inner = echo(CE1_V6, "2001:db8:0:f096:aff:ffde:1:1", 64, 0, 0);
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    assert_eq!(drop_reason(&p, true), DropReason::BrOwnPrefix);
}

#[test]
fn hop_limit_one_from_lan_gets_time_exceeded() {
    let p = echo(LAN_SERVER, CE1_V6, 1, 0, 24);
    let (v, out) = once(&p, false);
    assert_eq!(
        v,
        Verdict::Forward {
            path: Path::IcmpTimeExceeded,
            egress: Egress::Ipv6 {
                dst: v6(LAN_SERVER)
            }
        }
    );
    let mut expected = ipv6(BR_V6, LAN_SERVER, 64, 0, 58, &[]);
    expected[2..4].copy_from_slice(&[0, 0]); // flow label 0
    let plen = (8 + p.len()) as u16;
    expected[4..6].copy_from_slice(&plen.to_be_bytes());
    expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&p);
    assert_eq!(out[..42], expected[..42]);
    assert_eq!(out[44..], expected[44..]);
    assert_icmpv6_checksum(&out);
}

#[test]
fn hop_limit_one_from_ce_gets_time_exceeded_through_the_tunnel() {
    let inner = echo(CE1_V6, LAN_SERVER, 1, 0, 8);
    let (v, out) = once(&ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner), true);
    assert_eq!(
        v,
        Verdict::Forward {
            path: Path::IcmpTimeExceeded,
            egress: Egress::Ipv4 {
                dst: v4("10.96.1.100")
            }
        }
    );
    assert_eq!(checksum(&out[..20]), 0);
    let icmp = &out[20..];
    assert_eq!(ipv6_at(icmp, 8), v6(BR_V6));
    assert_eq!(ipv6_at(icmp, 24), v6(CE1_V6));
    assert_eq!((icmp[40], icmp[41]), (3, 0));
    assert_eq!(&icmp[48..], &inner[..]);
    assert_icmpv6_checksum(icmp);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut p = echo(LAN_SERVER, CE1_V6, 1, 0, 8);
    p[40] = 1; // destination unreachable
    assert_eq!(drop_reason(&p, false), DropReason::HopLimitExceeded);
    let mut big = echo(LAN_SERVER, CE1_V6, 64, 0, 1300);
    big[40] = 2;
    assert_eq!(drop_reason(&big, false), DropReason::PacketTooBig);
}

#[test]
fn packet_over_tunnel_mtu_gets_packet_too_big() {
    let p = echo(LAN_SERVER, CE1_V6, 64, 0, 1281 - 48);
    assert_eq!(p.len(), 1281);
    let (v, out) = once(&p, false);
    assert_eq!(
        v,
        Verdict::Forward {
            path: Path::IcmpPacketTooBig,
            egress: Egress::Ipv6 {
                dst: v6(LAN_SERVER)
            }
        }
    );
    assert_eq!(out.len(), 1280, "the quote fills the minimum MTU");
    assert_eq!((out[40], out[41]), (2, 0));
    assert_eq!(u32::from_be_bytes(out[44..48].try_into().unwrap()), 1280);
    assert_eq!(&out[48..], &p[..1232]);
    assert_icmpv6_checksum(&out);
    // Exactly the MTU passes.
    let p = echo(LAN_SERVER, CE1_V6, 64, 0, 1280 - 48);
    assert!(matches!(
        once(&p, false).0,
        Verdict::Forward {
            path: Path::Encapsulated,
            ..
        }
    ));
}

#[test]
fn hairpin_over_mtu_answers_the_sending_ce() {
    let inner = echo(CE1_V6, CE2_V6, 64, 0, 1300);
    let (v, out) = once(&ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner), true);
    assert_eq!(
        v,
        Verdict::Forward {
            path: Path::IcmpPacketTooBig,
            egress: Egress::Ipv4 {
                dst: v4("10.96.1.100")
            }
        }
    );
    assert_eq!(out.len(), 20 + 1280);
    assert_icmpv6_checksum(&out[20..]);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let relay = scenario_relay();
    let mut st = relay.worker_state(0);
    let p = echo(LAN_SERVER, CE1_V6, 1, 0, 8);
    let verdicts: Vec<_> = (0..12)
        .map(|_| run(&relay, &mut st, &p, false, 7).0)
        .collect();
    let sent = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Forward { .. }))
        .count();
    assert_eq!(sent, 10);
    assert_eq!(verdicts[11], Verdict::Drop(DropReason::IcmpRateLimited));
    // 100 ms later one more is allowed.
    let later = run(&relay, &mut st, &p, false, 7 + 100_000_000).0;
    assert!(matches!(later, Verdict::Forward { .. }));
}

#[test]
fn a_time_exceeded_flood_does_not_starve_packet_too_big() {
    let relay = scenario_relay();
    let mut st = relay.worker_state(0);
    let hop_limit_1 = echo(LAN_SERVER, CE1_V6, 1, 0, 8);
    for _ in 0..50 {
        run(&relay, &mut st, &hop_limit_1, false, 7);
    }
    let exhausted = run(&relay, &mut st, &hop_limit_1, false, 7).0;
    assert_eq!(exhausted, Verdict::Drop(DropReason::IcmpRateLimited));
    // Same instant, another type: its own bucket is full.
    let too_big = echo(LAN_SERVER, CE1_V6, 64, 0, 1400);
    let (v, out) = run(&relay, &mut st, &too_big, false, 7);
    assert!(
        matches!(
            v,
            Verdict::Forward {
                path: Path::IcmpPacketTooBig,
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(out[40], 2, "ICMPv6 Packet Too Big");
}

#[test]
fn ecn_follows_rfc6040() {
    // Encapsulation copies the whole traffic class (normal mode).
    let (_, out) = once(&echo(LAN_SERVER, CE1_V6, 64, 0x03, 0), false);
    assert_eq!(out[1], 0x03);
    // Decapsulation combines per RFC 6040 Figure 4; DSCP stays the inner one.
    let cases = [
        (0x28 | 2, 3, Some(0x28 | 3)), // ECT(0) inside, CE outside -> CE
        (0x28 | 2, 1, Some(0x28 | 1)), // ECT(0) inside, ECT(1) outside -> ECT(1)
        (0x28 | 1, 0, Some(0x28 | 1)), // outer Not-ECT leaves the inner
        (0x28, 3, None),               // CE over Not-ECT: drop
    ];
    for (inner_tc, outer_tos, want) in cases {
        let inner = echo(CE1_V6, LAN_SERVER, 64, inner_tc, 0);
        let p = ipv4(
            "10.96.1.100",
            "10.255.255.222",
            0xb8 | outer_tos,
            41,
            &inner,
        );
        let (v, out) = once(&p, true);
        match want {
            Some(tc) => assert_eq!(ipv6_traffic_class(&out), tc, "{inner_tc:#x}/{outer_tos}"),
            None => assert_eq!(v, Verdict::Drop(DropReason::EcnCeOnNotEct)),
        }
    }
}

/// A router's ICMPv4 error quoting `quote_len` bytes of the packet we sent.
fn icmpv4_error(icmp_type: u8, code: u8, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4("192.0.2.1", "10.255.255.222", 0, 1, &icmp)
}

#[test]
fn icmpv4_fragmentation_needed_becomes_packet_too_big() {
    let original = echo(LAN_SERVER, CE1_V6, 64, 0, 100);
    let (_, sent) = once(&original, false);
    let p = icmpv4_error(3, 4, 1400, &sent[..20 + 40 + 8]);
    let (v, out) = once(&p, true);
    assert_eq!(
        v,
        Verdict::Forward {
            path: Path::IcmpRelayed,
            egress: Egress::Ipv6 {
                dst: v6(LAN_SERVER)
            }
        }
    );
    assert_eq!(ipv6_at(&out, 8), v6(BR_V6));
    assert_eq!((out[40], out[41]), (2, 0));
    assert_eq!(u32::from_be_bytes(out[44..48].try_into().unwrap()), 1380);
    assert_eq!(&out[48..], &sent[20..20 + 48]);
    assert_icmpv6_checksum(&out);
}

#[test]
fn icmpv4_unreachable_and_time_exceeded_become_address_unreachable() {
    let (_, sent) = once(&echo(LAN_SERVER, CE1_V6, 64, 0, 100), false);
    for (t, c, want_code) in [(3, 1, 3), (11, 0, 3), (3, 13, 1)] {
        let (v, out) = once(&icmpv4_error(t, c, 0, &sent[..68]), true);
        assert!(matches!(
            v,
            Verdict::Forward {
                path: Path::IcmpRelayed,
                ..
            }
        ));
        assert_eq!((out[40], out[41]), (1, want_code), "ICMPv4 {t}/{c}");
    }
}

#[test]
fn icmpv4_that_cannot_be_relayed_is_dropped() {
    let (_, sent) = once(&echo(LAN_SERVER, CE1_V6, 64, 0, 100), false);
    // RFC 792 routers quote only 8 bytes after the IPv4 header.
    let short = icmpv4_error(3, 1, 0, &sent[..28]);
    assert_eq!(drop_reason(&short, true), DropReason::Icmpv4NotRelayable);
    let mut bad_sum = icmpv4_error(3, 1, 0, &sent[..68]);
    bad_sum[22] ^= 1;
    assert_eq!(drop_reason(&bad_sum, true), DropReason::Icmpv4NotRelayable);
    let echo_request = icmpv4_error(8, 0, 0, &sent[..68]);
    assert_eq!(
        drop_reason(&echo_request, true),
        DropReason::Icmpv4NotRelayable
    );
    // A quote of a packet some other box sent (forged source).
    let mut forged = sent[..68].to_vec();
    forged[12..16].copy_from_slice(&[10, 9, 9, 9]);
    assert_eq!(
        drop_reason(&icmpv4_error(3, 1, 0, &forged), true),
        DropReason::Icmpv4NotRelayable
    );
}

#[test]
fn icmp_errors_come_from_the_configured_source() {
    let mut spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        v4("10.255.255.222"),
    );
    spec.icmp_source = Some(v6("2001:db8:0:f013::110"));
    let relay = Relay::new(
        Domains::new(vec![Domain::new(&spec).unwrap().0]).unwrap(),
        IcmpRate::default(),
    );
    let mut st = relay.worker_state(0);
    let inner = echo(CE1_V6, LAN_SERVER, 1, 0, 8);
    let p = ipv4("10.96.1.100", "10.255.255.222", 0, 41, &inner);
    let (_, out) = run(&relay, &mut st, &p, true, 1);
    assert_eq!(ipv6_at(&out[20..], 8), v6("2001:db8:0:f013::110"));
    assert_icmpv6_checksum(&out[20..]);
    spec.icmp_source = Some(v6("ff02::1"));
    assert!(matches!(
        Domain::new(&spec),
        Err(DomainError::BadIcmpSource(_))
    ));
}

#[test]
fn native_packets_cannot_claim_a_ce_source() {
    // From the LAN side, with CE 2's address: a CE's traffic only ever
    // arrives encapsulated.
    let p = echo(CE2_V6, CE1_V6, 64, 0, 8);
    assert_eq!(drop_reason(&p, false), DropReason::SpoofedSource);
    // The BR's own address and delegated prefix are the host's: from an
    // interface they are spoofed, through the TUN interface they relay.
    let relay = scenario_relay();
    for src in [BR_V6, "2001:db8:0:f096:aff:ffde::77"] {
        let p = echo(src, CE1_V6, 64, 0, 8);
        assert_eq!(drop_reason(&p, false), DropReason::SpoofedSource, "{src}");
        let mut buf = vec![0u8; HEADROOM + p.len()];
        buf[HEADROOM..].copy_from_slice(&p);
        let mut frame = Frame::new(&mut buf, HEADROOM, p.len()).unwrap();
        let v = relay.from_host_ipv6(&mut relay.worker_state(0), &mut frame, 1);
        assert!(
            matches!(
                v,
                Verdict::Forward {
                    path: Path::Encapsulated,
                    ..
                }
            ),
            "{src}: {v:?}"
        );
    }
}

#[test]
fn only_allowed_ces_are_relayed_both_ways() {
    let mut spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        v4("10.255.255.222"),
    );
    spec.ce_ipv4_allow = vec!["10.96.0.0/16".parse().unwrap()];
    let (domain, warnings) = Domain::new(&spec).unwrap();
    assert!(
        !warnings.iter().any(|w| w.message.contains("ce-ipv4-allow")),
        "an allowlist answers the mask-len-0 warning: {warnings:?}"
    );
    let relay = Relay::new(Domains::new(vec![domain]).unwrap(), IcmpRate::default());
    let mut st = relay.worker_state(0);
    let verdict = |packet: &[u8], ipv4_side: bool, st: &mut WorkerState| {
        run(&relay, st, packet, ipv4_side, 1).0
    };
    // Inside 10.96/16: relayed.
    let to_ce1 = echo(LAN_SERVER, CE1_V6, 64, 0, 8);
    assert!(matches!(
        verdict(&to_ce1, false, &mut st),
        Verdict::Forward { .. }
    ));
    let from_ce1 = ipv4(
        "10.96.1.100",
        "10.255.255.222",
        0,
        41,
        &echo(CE1_V6, LAN_SERVER, 64, 0, 8),
    );
    assert!(matches!(
        verdict(&from_ce1, true, &mut st),
        Verdict::Forward { .. }
    ));
    // 10.97.0.5 embeds itself correctly, but is not in the list.
    let outsider = "2001:db8:0:f096:a61:5::1";
    let to_outsider = echo(LAN_SERVER, outsider, 64, 0, 8);
    assert_eq!(
        verdict(&to_outsider, false, &mut st),
        Verdict::Drop(DropReason::CeNotAllowed)
    );
    let from_outsider = ipv4(
        "10.97.0.5",
        "10.255.255.222",
        0,
        41,
        &echo(outsider, LAN_SERVER, 64, 0, 8),
    );
    assert_eq!(
        verdict(&from_outsider, true, &mut st),
        Verdict::Drop(DropReason::CeNotAllowed)
    );
    // A hairpin towards it from an allowed CE.
    let hairpin = ipv4(
        "10.96.1.100",
        "10.255.255.222",
        0,
        41,
        &echo(CE1_V6, outsider, 64, 0, 8),
    );
    assert_eq!(
        verdict(&hairpin, true, &mut st),
        Verdict::Drop(DropReason::CeNotAllowed)
    );
    // Without a list, mask length 0 warns what it means.
    let (_, warnings) = Domain::new(&DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        v4("10.255.255.222"),
    ))
    .unwrap();
    assert!(
        warnings.iter().any(|w| w.message.contains("ce-ipv4-allow")),
        "{warnings:?}"
    );
}

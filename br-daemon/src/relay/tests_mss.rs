//! Golden cases for TCP MSS clamping (`tcp-mss`) through the relay, in
//! every direction, checked against checksums computed from scratch and
//! against etherparse's TCP parser.

use super::tests::{ipv4, ipv6, run, CE1_V6, CE2_V6, LAN_SERVER};
use super::*;
use etherparse::{TcpHeaderSlice, TcpOptionElement};

const CLAMP: u16 = 1220;
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

/// A TCP segment with `flags` and `options` (padded to 32 bits) in an
/// IPv6 packet, with a correct checksum.
fn tcp(src: &str, dst: &str, flags: u8, options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    opts.resize(opts.len().next_multiple_of(4), 0);
    let mut seg = vec![0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0];
    seg.push((((20 + opts.len()) / 4) << 4) as u8);
    seg.push(flags);
    seg.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    seg.extend_from_slice(&opts);
    let (s, d): (Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let c = finish(sum_bytes(
        ipv6_pseudo_sum(&s, &d, seg.len() as u32, 6),
        &seg,
    ));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, 64, 0, 6, &seg)
}

fn mss_option(mss: u16) -> Vec<u8> {
    let [hi, lo] = mss.to_be_bytes();
    vec![2, 4, hi, lo]
}

fn clamping_relay() -> Relay {
    let mut spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        "10.255.255.222".parse().unwrap(),
    );
    spec.tcp_mss = Some(CLAMP);
    let domain = Domain::new(&spec).unwrap().0;
    Relay::new(Domains::new(vec![domain]).unwrap(), IcmpRate::default())
}

/// The IPv6 packet's TCP checksum verifies (computed from scratch).
fn assert_tcp_checksum(p: &[u8]) {
    let sum = ipv6_pseudo_sum(&ipv6_at(p, 8), &ipv6_at(p, 24), (p.len() - 40) as u32, 6);
    assert_eq!(finish(sum_bytes(sum, &p[40..])), 0, "TCP checksum");
}

fn mss_of(p: &[u8]) -> Option<u16> {
    let tcp = TcpHeaderSlice::from_slice(&p[40..]).unwrap();
    tcp.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}

/// Relays `packet` (IPv6 from the LAN, or protocol 41 from CE 1) and
/// returns the IPv6 packet that leaves, and the MSS events.
fn relay(packet: &[u8], from_ce: bool) -> (Vec<u8>, [u64; MssEvent::COUNT]) {
    let relay = clamping_relay();
    let mut st = relay.worker_state(0);
    let (verdict, out) = if from_ce {
        let outer = ipv4("10.96.1.100", "10.255.255.222", 0, 41, packet);
        run(&relay, &mut st, &outer, true, 1)
    } else {
        run(&relay, &mut st, packet, false, 1)
    };
    assert!(matches!(verdict, Verdict::Forward { .. }), "{verdict:?}");
    let inner = if out[0] >> 4 == 4 {
        out[20..].to_vec()
    } else {
        out
    };
    (inner, st.take_mss_events())
}

const CLAMPED: [u64; 2] = [1, 0];
const NOTHING: [u64; 2] = [0, 0];
const MALFORMED: [u64; 2] = [0, 1];

#[test]
fn syn_to_a_ce_is_clamped_and_its_checksum_updated() {
    let syn = tcp(
        LAN_SERVER,
        CE1_V6,
        SYN,
        &[&mss_option(1440)[..], &[1, 3, 3, 7]].concat(),
    );
    let (out, events) = relay(&syn, false);
    assert_eq!(events, CLAMPED);
    assert_eq!(mss_of(&out), Some(CLAMP));
    assert_tcp_checksum(&out);
    // Only the MSS, the checksum and the hop limit changed.
    let changed: Vec<usize> = (0..out.len()).filter(|&i| out[i] != syn[i]).collect();
    assert!(
        changed
            .iter()
            .all(|&i| i == 7 || (56..58).contains(&i) || (62..64).contains(&i)),
        "{changed:?}"
    );
}

#[test]
fn syn_ack_from_a_ce_is_clamped_decapsulated_and_hairpinned() {
    let to_lan = tcp(CE1_V6, LAN_SERVER, SYN_ACK, &mss_option(1460));
    let (out, events) = relay(&to_lan, true);
    assert_eq!((events, mss_of(&out)), (CLAMPED, Some(CLAMP)));
    assert_tcp_checksum(&out);
    let to_ce2 = tcp(CE1_V6, CE2_V6, SYN, &mss_option(1460));
    let (out, events) = relay(&to_ce2, true);
    // Clamped leaving CE 1's tunnel; entering CE 2's it already fits.
    assert_eq!((events, mss_of(&out)), (CLAMPED, Some(CLAMP)));
    assert_tcp_checksum(&out);
}

#[test]
fn an_mss_at_an_odd_offset_keeps_the_checksum_right() {
    // NOP, then the option: its value starts at an odd offset in TCP.
    let syn = tcp(
        LAN_SERVER,
        CE1_V6,
        SYN,
        &[&[1][..], &mss_option(9000)].concat(),
    );
    let (out, events) = relay(&syn, false);
    assert_eq!((events, mss_of(&out)), (CLAMPED, Some(CLAMP)));
    assert_tcp_checksum(&out);
}

#[test]
fn small_mss_no_mss_and_non_syn_segments_are_left_alone() {
    for (what, packet) in [
        (
            "MSS below the clamp",
            tcp(LAN_SERVER, CE1_V6, SYN, &mss_option(1000)),
        ),
        (
            "MSS equal to the clamp",
            tcp(LAN_SERVER, CE1_V6, SYN, &mss_option(CLAMP)),
        ),
        ("SYN without options", tcp(LAN_SERVER, CE1_V6, SYN, &[])),
        ("ACK", tcp(LAN_SERVER, CE1_V6, ACK, &mss_option(1460))),
    ] {
        let (out, events) = relay(&packet, false);
        assert_eq!(events, NOTHING, "{what}");
        assert_eq!(&out[8..], &packet[8..], "{what}: unchanged");
    }
}

#[test]
fn malformed_options_are_counted_and_left_alone() {
    for (what, options) in [
        ("option length 0", vec![8, 0, 0, 0]),
        ("option past the header", vec![8, 10, 0, 0]),
        ("MSS of length 3", vec![2, 3, 5, 0]),
    ] {
        let packet = tcp(LAN_SERVER, CE1_V6, SYN, &options);
        let (out, events) = relay(&packet, false);
        assert_eq!(events, MALFORMED, "{what}");
        assert_eq!(&out[8..], &packet[8..], "{what}: unchanged");
    }
    // A data offset beyond the segment.
    let mut packet = tcp(LAN_SERVER, CE1_V6, SYN, &mss_option(1460));
    packet[40 + 12] = 0xf0;
    let (out, events) = relay(&packet, false);
    assert_eq!((events, &out[8..]), (MALFORMED, &packet[8..]));
}

#[test]
fn a_syn_behind_a_destination_options_header_is_clamped() {
    let syn = tcp(LAN_SERVER, CE1_V6, SYN, &mss_option(1440));
    // Insert an 8-byte destination options header (PadN) before TCP.
    let mut p = syn[..40].to_vec();
    p[6] = 60;
    p.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    p.extend_from_slice(&syn[40..]);
    let len = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    let (out, events) = relay(&p, false);
    assert_eq!(events, CLAMPED);
    assert_eq!(be16(&out, 48 + 22), CLAMP);
    let sum = ipv6_pseudo_sum(
        &ipv6_at(&out, 8),
        &ipv6_at(&out, 24),
        (out.len() - 48) as u32,
        6,
    );
    assert_eq!(finish(sum_bytes(sum, &out[48..])), 0, "TCP checksum");
}

#[test]
fn without_tcp_mss_nothing_is_clamped() {
    let relay = super::tests::scenario_relay();
    let mut st = relay.worker_state(0);
    let syn = tcp(LAN_SERVER, CE1_V6, SYN, &mss_option(1460));
    let out = run(&relay, &mut st, &syn, false, 1).1;
    assert_eq!(&out[28..], &syn[8..]);
    assert_eq!(st.take_mss_events(), NOTHING);
}

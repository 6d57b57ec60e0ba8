//! The anycast health check's data-path probe (docs/anycast.md): a
//! protocol-41 packet from a CE of a domain to that domain's BR address,
//! carrying IPv6 to the BR's own 6rd address with no next header (59,
//! RFC 8200 §4.7: the host's stack discards it without an answer) and a
//! tag. The daemon runs it through the XDP program as if it had arrived
//! on a CE-facing interface; the relay decapsulates it with every check a
//! CE's packet meets (RFC 5969 §12) and counts it as `self-check` instead
//! of `to-host`, so operators' counters of real traffic stay exact.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::domain::{is_martian_ipv4, Domain};
use super::wire::{checksum, put_be16};

/// The probe's payload, after the inner IPv6 header.
pub const PROBE_TAG: &[u8; 16] = b"br-daemon probe\0";
/// IPv6 "no next header" (RFC 8200 §4.7).
const NO_NEXT_HEADER: u8 = 59;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// The probe's Ethernet source: locally administered, never a real host.
const PROBE_SOURCE_MAC: [u8; 6] = [0x02, 0x62, 0x72, 0x36, 0x72, 0x64];

/// Whether the IPv6 packet `ip` (header first) is a probe.
pub fn is_probe(ip: &[u8]) -> bool {
    ip.len() >= IPV6_HEADER_LEN + PROBE_TAG.len()
        && ip[6] == NO_NEXT_HEADER
        && &ip[IPV6_HEADER_LEN..IPV6_HEADER_LEN + PROBE_TAG.len()] == PROBE_TAG
}

/// A CE address of `domain` the probe may come from: one the domain admits
/// (`ce-ipv4-allow`), not a BR address or a martian, and not one for which
/// `unusable` says so (the caller's: under an inbound IPsec policy, whose
/// plaintext the XDP program leaves to the kernel). None when there is
/// none among the few tried.
pub fn probe_source(domain: &Domain, unusable: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let common = domain.common_ipv4_prefix();
    let allowed = domain.ce_ipv4_allow();
    let spaces = if allowed.is_empty() {
        std::slice::from_ref(&common)
    } else {
        allowed
    };
    // Next to the BR's own address first (a /0 space's ends are martian),
    // then the ends of each space, away from network and broadcast.
    let near_br = domain.br_ipv4_all().iter().flat_map(|a| {
        let a = u32::from(*a);
        [a.wrapping_sub(1), a.wrapping_add(1)]
    });
    let ends = spaces.iter().flat_map(|net| {
        let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
        [last.saturating_sub(1), first.saturating_add(1)]
    });
    near_br.chain(ends).map(Ipv4Addr::from).find(|&ce| {
        domain.contains_ipv4(ce)
            && domain.ce_allowed(ce)
            && !domain.is_br_ipv4(ce)
            && !is_martian_ipv4(ce)
            && !unusable(ce)
    })
}

/// The probe from CE `ce` of `domain` as an Ethernet frame to `dst_mac`
/// (the interface's own: the XDP program relays only frames sent to it).
/// None when `ce` has no delegated prefix in `domain`.
pub fn probe_frame(domain: &Domain, ce: Ipv4Addr, dst_mac: [u8; 6]) -> Option<Vec<u8>> {
    // The CE's prefix, interface identifier 1: an address of its own.
    let source = Ipv6Addr::from(u128::from(domain.delegated_prefix(ce)?.network()) | 1);
    let inner_len = IPV6_HEADER_LEN + PROBE_TAG.len();
    let total = IPV4_HEADER_LEN + inner_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&PROBE_SOURCE_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ipv4 = [0u8; IPV4_HEADER_LEN];
    ipv4[0] = 0x45;
    put_be16(&mut ipv4, 2, total as u16);
    ipv4[8] = 64;
    ipv4[9] = 41;
    ipv4[12..16].copy_from_slice(&ce.octets());
    ipv4[16..20].copy_from_slice(&domain.br_ipv4().octets());
    let sum = checksum(&ipv4);
    put_be16(&mut ipv4, 10, sum);
    f.extend_from_slice(&ipv4);
    let mut ipv6 = [0u8; IPV6_HEADER_LEN];
    ipv6[0] = 0x60;
    put_be16(&mut ipv6, 4, PROBE_TAG.len() as u16);
    ipv6[6] = NO_NEXT_HEADER;
    ipv6[7] = 64;
    ipv6[8..24].copy_from_slice(&source.octets());
    ipv6[24..40].copy_from_slice(&domain.br_ipv6().octets());
    f.extend_from_slice(&ipv6);
    f.extend_from_slice(PROBE_TAG);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tests::{scenario_domain, scenario_relay};
    use crate::relay::{Egress, Frame, Path, Verdict};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    #[test]
    fn the_probe_is_a_ces_packet_to_the_brs_own_address_counted_as_self_check() {
        let domain = scenario_domain();
        let ce = probe_source(&domain, |_| false).unwrap();
        assert!(domain.contains_ipv4(ce) && !domain.is_br_ipv4(ce));
        let mut frame = probe_frame(&domain, ce, MAC).unwrap();
        assert_eq!(&frame[..6], &MAC);
        assert_eq!(checksum(&frame[14..34]), 0, "IPv4 header checksum");
        assert_eq!(frame.len(), 14 + 20 + 40 + 16);
        let relay = scenario_relay();
        let mut state = relay.worker_state(0);
        let len = frame.len();
        let mut f = Frame::new(&mut frame, 0, len).unwrap();
        assert!(f.pull(14));
        let verdict = relay.from_ipv4(&mut state, &mut f, 0);
        assert_eq!(
            verdict,
            Verdict::Forward {
                path: Path::SelfCheck,
                egress: Egress::Host
            }
        );
        assert!(is_probe(f.data()));
        assert_eq!(&f.data()[24..40], &domain.br_ipv6().octets());
    }

    #[test]
    fn a_packet_to_the_br_without_the_tag_is_the_hosts() {
        let domain = scenario_domain();
        let ce = probe_source(&domain, |_| false).unwrap();
        let mut frame = probe_frame(&domain, ce, MAC).unwrap();
        let last = frame.len() - 2;
        frame[last] ^= 1;
        let relay = scenario_relay();
        let len = frame.len();
        let mut f = Frame::new(&mut frame, 0, len).unwrap();
        assert!(f.pull(14));
        let verdict = relay.from_ipv4(&mut relay.worker_state(0), &mut f, 0);
        assert!(matches!(
            verdict,
            Verdict::Forward {
                path: Path::ToHost,
                ..
            }
        ));
    }

    #[test]
    fn the_source_avoids_what_the_caller_cannot_use_and_may_find_none() {
        let domain = scenario_domain();
        let first = probe_source(&domain, |_| false).unwrap();
        let second = probe_source(&domain, |a| a == first).unwrap();
        assert_ne!(first, second);
        assert_eq!(probe_source(&domain, |_| true), None);
    }
}

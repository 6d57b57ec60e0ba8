//! Properties of the relay core over generated domains and packets.

use std::net::{Ipv4Addr, Ipv6Addr};

use br_daemon::relay::wire::{checksum, finish, ipv6_pseudo_sum, sum_bytes};
use br_daemon::relay::{
    Domain, DomainSpec, Domains, Egress, Frame, IcmpRate, Path, Relay, Verdict,
};
use proptest::prelude::*;

/// A valid domain: any prefix length n (from 3: inside 2000::/3) and
/// IPv4MaskLen k with n + 32 - k <= 128.
fn domain_strategy() -> impl Strategy<Value = (Domain, u32)> {
    (0u8..=32, any::<u128>(), any::<u32>()).prop_flat_map(|(k, prefix_bits, br)| {
        let max_n = 128 - (32 - k);
        (3u8..=max_n).prop_map(move |n| {
            let mask = u128::MAX << (128 - u32::from(n));
            let global = (prefix_bits & !(0b111 << 125)) | (1 << 125);
            let prefix = ipnet::Ipv6Net::new(Ipv6Addr::from(global & mask), n).unwrap();
            // A unicast BR address: 10.x.y.z keeps it out of the martian ranges.
            let br = Ipv4Addr::from(0x0a00_0000 | (br & 0x00ff_fff0) | 1);
            let spec = DomainSpec::new("p", prefix, k, br);
            let (d, _) = Domain::new(&spec).unwrap();
            (d, br.into())
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mapping_round_trips((domain, br) in domain_strategy(), host in any::<u32>(), iid in any::<u128>()) {
        // A CE in the common prefix: the BR's high bits, random low bits.
        let common = u32::from(domain.common_ipv4_prefix().netmask());
        let ce = Ipv4Addr::from((br & common) | (host & !common));
        let delegated = domain.delegated_prefix(ce).unwrap();
        prop_assert_eq!(delegated.prefix_len(), domain.delegated_prefix_len());
        prop_assert!(domain.prefix().contains(&delegated));
        // Any address inside the delegated prefix maps back to the CE.
        let host_mask = if delegated.prefix_len() == 128 { 0 } else { u128::MAX >> delegated.prefix_len() };
        let addr = Ipv6Addr::from(u128::from(delegated.network()) | (iid & host_mask));
        prop_assert_eq!(domain.ce_ipv4(addr), Some(ce));
        // Outside the common prefix there is no delegated prefix.
        if domain.ipv4_mask_len() > 0 {
            let outside = Ipv4Addr::from(u32::from(ce) ^ 0x8000_0000);
            prop_assert_eq!(domain.delegated_prefix(outside), None);
        }
    }
}

fn scenario_relay() -> Relay {
    let spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        "10.255.255.222".parse().unwrap(),
    );
    let (d, _) = Domain::new(&spec).unwrap();
    Relay::new(Domains::new(vec![d]).unwrap(), IcmpRate::default())
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, tc: u8, hop: u8, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60 | (tc >> 4), tc << 4, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[nh, hop]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

fn process(relay: &Relay, packet: &[u8], ipv4: bool) -> (Verdict, Vec<u8>) {
    let mut state = relay.worker_state(1);
    let mut buf = vec![0u8; 256 + packet.len()];
    buf[256..].copy_from_slice(packet);
    let mut frame = Frame::new(&mut buf, 256, packet.len()).unwrap();
    let v = if ipv4 {
        relay.from_ipv4(&mut state, &mut frame, 0)
    } else {
        relay.from_ipv6(&mut state, &mut frame, 0)
    };
    (v, frame.data().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Encapsulate LAN -> CE, then play the CE: swap the outer and inner
    /// addresses and hand it back. Decapsulation returns exactly the
    /// packet the CE would have sent, with the hop limit one lower.
    #[test]
    fn encapsulate_then_decapsulate_gives_the_packet_back(
        ce in 0x0a00_0001u32..0x0aff_fff0,
        lan_iid in any::<u64>(),
        ce_iid in any::<u32>(),
        tc in any::<u8>(),
        hop in 3u8..=255,
        nh in prop::sample::select(vec![6u8, 17, 59]),
        payload in prop::collection::vec(any::<u8>(), 0..1200),
    ) {
        prop_assume!(ce != u32::from(Ipv4Addr::new(10, 255, 255, 222)));
        let relay = scenario_relay();
        let lan = Ipv6Addr::from((0x2001_0db8_0000_0100u128 << 64) | u128::from(lan_iid));
        let ce_v6 = Ipv6Addr::from((0x2001_0db8_0000_f096u128 << 64) | (u128::from(ce) << 32) | u128::from(ce_iid));
        // CE-bound traffic: no Congestion Experienced over Not-ECT is needed.
        let original = ipv6_packet(lan, ce_v6, tc, hop, nh, &payload);
        let (v, encapsulated) = process(&relay, &original, false);
        prop_assert_eq!(v, Verdict::Forward { path: Path::Encapsulated, egress: Egress::Ipv4 { dst: ce.into() } });
        prop_assert_eq!(checksum(&encapsulated[..20]), 0);
        prop_assert_eq!(&encapsulated[20..28], &original[..8].iter().enumerate()
            .map(|(i, b)| if i == 7 { b - 1 } else { *b }).collect::<Vec<_>>()[..]);
        prop_assert_eq!(&encapsulated[28..], &original[8..]);

        // The CE answers along the same tunnel.
        let mut reply = encapsulated.clone();
        reply[12..16].copy_from_slice(&encapsulated[16..20]);
        reply[16..20].copy_from_slice(&encapsulated[12..16]);
        reply[28..44].copy_from_slice(&original[24..40]);
        reply[44..60].copy_from_slice(&original[8..24]);
        reply[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&reply[..20]);
        reply[10..12].copy_from_slice(&c.to_be_bytes());
        let (v, decapsulated) = process(&relay, &reply, true);
        prop_assert_eq!(v, Verdict::Forward { path: Path::Decapsulated, egress: Egress::Ipv6 { dst: lan } });
        prop_assert_eq!(decapsulated[7], hop - 2);
        prop_assert_eq!(&decapsulated[..7], &reply[20..27]);
        prop_assert_eq!(&decapsulated[8..], &reply[28..]);
    }

    /// Any bytes: no panic, and whatever is forwarded carries correct checksums.
    #[test]
    fn arbitrary_bytes_never_panic_and_forwarded_checksums_verify(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        as_ipv4 in any::<bool>(),
        fix_headers in any::<bool>(),
    ) {
        let relay = scenario_relay();
        let mut packet = bytes;
        // Half of the cases get plausible headers so they reach deeper code.
        if fix_headers && packet.len() >= 60 {
            if as_ipv4 {
                packet[0] = 0x45;
                let len = packet.len() as u16;
                packet[2..4].copy_from_slice(&len.to_be_bytes());
                packet[6..8].copy_from_slice(&[0, 0]);
                packet[9] = 41;
                packet[12..16].copy_from_slice(&[10, 96, 1, 100]);
                packet[16..20].copy_from_slice(&[10, 255, 255, 222]);
                packet[10..12].copy_from_slice(&[0, 0]);
                let c = checksum(&packet[..20]);
                packet[10..12].copy_from_slice(&c.to_be_bytes());
                packet[20] = 0x60 | (packet[20] & 0x0f);
                packet[28..36].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0xf0, 0x96]);
                packet[36..40].copy_from_slice(&[10, 96, 1, 100]);
                let plen = (packet.len() - 60) as u16;
                packet[24..26].copy_from_slice(&plen.to_be_bytes());
            } else {
                packet[0] = 0x60;
                let plen = (packet.len() - 40) as u16;
                packet[4..6].copy_from_slice(&plen.to_be_bytes());
                packet[24..32].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0xf0, 0x96]);
            }
        }
        let (v, out) = process(&relay, &packet, as_ipv4);
        if let Verdict::Forward { egress, path } = v {
            let ipv6 = match egress {
                Egress::Ipv4 { .. } => {
                    prop_assert_eq!(checksum(&out[..20]), 0);
                    &out[20..]
                }
                _ => &out[..],
            };
            // Transit packets keep their own checksums; ours must verify.
            if matches!(path, Path::IcmpTimeExceeded | Path::IcmpPacketTooBig | Path::IcmpRelayed) {
                let src: [u8; 16] = ipv6[8..24].try_into().unwrap();
                let dst: [u8; 16] = ipv6[24..40].try_into().unwrap();
                let sum = ipv6_pseudo_sum(&src.into(), &dst.into(), (ipv6.len() - 40) as u32, 58);
                prop_assert_eq!(finish(sum_bytes(sum, &ipv6[40..])), 0);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whatever the options, MSS clamping never panics, leaves a checksum
    /// that verifies, and changes at most the MSS value and the checksum.
    #[test]
    fn mss_clamping_keeps_checksums_and_touches_only_the_mss(
        options in proptest::collection::vec(any::<u8>(), 0..=40usize),
        words in 0u8..=10,
        flags in any::<u8>(),
        clamp in 536u16..=1500,
        payload in proptest::collection::vec(any::<u8>(), 0..16usize),
    ) {
        use br_daemon::relay::tcp_mss::{clamp as clamp_mss, MssClamp};
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("2001:db8::1".parse().unwrap(), "2001:db8:0:f096:a60:164::1".parse().unwrap());
        // A data offset that may or may not match the options' length.
        let mut seg = vec![0u8; 20];
        seg[12] = (5 + words) << 4;
        seg[13] = flags;
        seg.extend_from_slice(&options);
        seg.extend_from_slice(&payload);
        let c = finish(sum_bytes(ipv6_pseudo_sum(&src, &dst, seg.len() as u32, 6), &seg));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let mut packet = vec![0x60, 0, 0, 0];
        packet.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        packet.extend_from_slice(&[6, 64]);
        packet.extend_from_slice(&src.octets());
        packet.extend_from_slice(&dst.octets());
        packet.extend_from_slice(&seg);
        let before = packet.clone();
        let outcome = clamp_mss(&mut packet, clamp);
        let sum = ipv6_pseudo_sum(&src, &dst, seg.len() as u32, 6);
        prop_assert_eq!(finish(sum_bytes(sum, &packet[40..])), 0);
        let changed: Vec<usize> = (0..packet.len()).filter(|&i| packet[i] != before[i]).collect();
        if outcome == MssClamp::Clamped {
            prop_assert!(changed.iter().all(|&i| (56..58).contains(&i) || i >= 60));
            prop_assert!(changed.len() <= 4);
        } else {
            prop_assert!(changed.is_empty(), "{:?} changed {:?}", outcome, changed);
        }
    }
}

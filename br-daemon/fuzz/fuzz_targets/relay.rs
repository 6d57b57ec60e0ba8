//! Fuzzes both entry points of the relay: any bytes, any headroom. The
//! relay must never panic, and whatever it forwards must carry a correct
//! IPv4 header checksum.
#![no_main]

use std::sync::OnceLock;

use br_daemon::relay::wire::checksum;
use br_daemon::relay::{Domain, DomainSpec, Domains, Egress, Frame, IcmpRate, Relay, Verdict};
use libfuzzer_sys::fuzz_target;

fn relay() -> &'static Relay {
    static RELAY: OnceLock<Relay> = OnceLock::new();
    RELAY.get_or_init(|| {
        let vpc = DomainSpec::new("vpc", "2001:db8:0:f096::/64".parse().unwrap(), 0, "10.255.255.222".parse().unwrap());
        let strict = DomainSpec::new("strict", "2001:db8:100::/40".parse().unwrap(), 8, "10.255.255.222".parse().unwrap());
        let domains = vec![Domain::new(&vpc).unwrap().0, Domain::new(&strict).unwrap().0];
        Relay::new(Domains::new(domains).unwrap(), IcmpRate { per_second: 1000, burst: 1000 })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else { return };
    // Bit 7: which side; bit 6: fix the IPv4 header checksum so the
    // fuzzer gets past it; bits 0-5: headroom in units of 2 bytes.
    let headroom = usize::from(selector & 0x3f) * 2;
    let mut buf = vec![0u8; headroom + packet.len()];
    buf[headroom..].copy_from_slice(packet);
    if selector & 0x40 != 0 && packet.len() >= 20 {
        let ihl = (usize::from(packet[0] & 0x0f) * 4).clamp(20, packet.len());
        let h = &mut buf[headroom..headroom + ihl];
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let Some(mut frame) = Frame::new(&mut buf, headroom, packet.len()) else { return };
    let mut state = relay().worker_state(0);
    let verdict = if selector & 0x80 != 0 {
        relay().from_ipv4(&mut state, &mut frame, 0)
    } else {
        relay().from_ipv6(&mut state, &mut frame, 0)
    };
    if let Verdict::Forward { egress: Egress::Ipv4 { .. }, .. } = verdict {
        assert_eq!(checksum(&frame.data()[..20]), 0);
    }
});

//! The AF_XDP worker's per-frame work (`dispose`: relay, FIB lookup,
//! Ethernet rewrite) on one stream, for counting instructions per packet
//! with callgrind, which repeats to the instruction where the bench's
//! rates move by tens of percent (docs/benchmarks.md):
//!
//! ```text
//! cargo build --release --example relay_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/relay_cost encap 100000
//! ```
//!
//! It prints the instructions of the loop alone when run under callgrind
//! twice (N and 0 frames): `(Ir(N) - Ir(0)) / N`. The FIB holds the bench
//! gateway's routes plus `ROUTES` others, as a small site's table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use br_daemon::dataplane::counters::Counters;
use br_daemon::dataplane::fib::Fib;
use br_daemon::dataplane::worker::{dispose, Context};
use br_daemon::relay::{Domain, DomainSpec, Domains, IcmpRate, Relay};

const IN_IF: u32 = 2;
const OUT_IF: u32 = 3;
/// Routes besides the ones the stream uses.
const ROUTES: u32 = 50;
const HEADROOM: usize = 256;

fn fib() -> Fib {
    let mut fib = Fib::default();
    fib.add_link(IN_IF, "in0", [2, 0, 0, 0, 0, 2]);
    fib.add_link(OUT_IF, "out0", [2, 0, 0, 0, 0, 3]);
    for i in 0..ROUTES {
        let v4 = format!("172.{}.{}.0/24", 16 + i / 256, i % 256);
        fib.add_route(v4.parse().unwrap(), IN_IF, None);
        let v6 = format!("2001:db8:ee:{i:x}::/64");
        fib.add_route(v6.parse().unwrap(), IN_IF, None);
    }
    let via4: IpAddr = "10.200.0.2".parse().unwrap();
    let via6: IpAddr = "2001:db8:ff::2".parse().unwrap();
    fib.add_route("10.200.0.0/24".parse().unwrap(), OUT_IF, None);
    fib.add_route("2001:db8:ff::/64".parse().unwrap(), OUT_IF, None);
    fib.add_route("10.96.0.0/16".parse().unwrap(), OUT_IF, Some(via4));
    fib.add_route("2001:db8:0:100::/64".parse().unwrap(), OUT_IF, Some(via6));
    fib.add_neighbour(OUT_IF, via4, [2, 0, 0, 0, 0, 0x55]);
    fib.add_neighbour(OUT_IF, via6, [2, 0, 0, 0, 0, 0x55]);
    fib
}

fn relay() -> Relay {
    let spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        "10.255.255.222".parse().unwrap(),
    );
    let domains = Domains::new(vec![Domain::new(&spec).unwrap().0]).unwrap();
    Relay::new(domains, IcmpRate::default())
}

/// An Ethernet frame of the stream: 64-byte IPv6 UDP to a CE (encap) or
/// that packet from the CE, encapsulated (decap).
fn frame(decap: bool) -> Vec<u8> {
    let ce = Ipv4Addr::new(10, 96, 1, 100);
    let ce_v6 = Ipv6Addr::from(
        u128::from(0x2001_0db8_0000_f096_u64) << 64 | u128::from(u32::from(ce)) << 32 | 1,
    );
    let lan: Ipv6Addr = "2001:db8:0:100::10".parse().unwrap();
    let (src, dst) = if decap { (ce_v6, lan) } else { (lan, ce_v6) };
    let mut ip6 = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
    ip6.extend_from_slice(&src.octets());
    ip6.extend_from_slice(&dst.octets());
    ip6.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 10, 0, 0, 0xab, 0xcd]);
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if !decap {
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&ip6);
        return f;
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + ip6.len()) as u16;
    let mut ip4 = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 41, 0, 0];
    ip4[2..4].copy_from_slice(&total.to_be_bytes());
    ip4.extend_from_slice(&ce.octets());
    ip4.extend_from_slice(&[10, 255, 255, 222]);
    let sum = br_daemon::relay::wire::checksum(&ip4);
    ip4[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip4);
    f.extend_from_slice(&ip6);
    f
}

fn main() {
    let mut args = std::env::args().skip(1);
    let decap = args.next().as_deref() == Some("decap");
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let (relay, fib, counters) = (relay(), fib(), Counters::default());
    let ports = [IN_IF, OUT_IF];
    let ctx = Context {
        relay: &relay,
        fib: &fib,
        ports: &ports,
        counters: &counters,
    };
    let mut state = relay.worker_state(0);
    let input = frame(decap);
    let mut chunk = vec![0u8; HEADROOM + input.len()];
    let mut sent = 0u64;
    for i in 0..n {
        chunk[HEADROOM..].copy_from_slice(&input);
        let (d, _) = dispose(&ctx, &mut state, &mut chunk, HEADROOM, input.len(), i);
        sent += u64::from(matches!(
            d,
            br_daemon::dataplane::worker::Disposition::Transmit { .. }
        ));
    }
    assert_eq!(sent, n, "every frame is transmitted");
    println!(
        "{} frames of {} relayed",
        n,
        if decap { "decap" } else { "encap" }
    );
}

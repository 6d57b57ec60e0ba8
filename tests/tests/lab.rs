//! End-to-end tests of the daemon in the SCENARIO.md lab (network
//! namespaces, veth with two queues, emulated CEs). Need root.

use std::time::Duration;

use br_tests::*;

fn lab() -> Lab {
    Lab::start(LabOptions {
        queues: 2,
        extra_config: String::new(),
        ce_emulator: env!("CARGO_BIN_EXE_ce-emulator").into(),
    })
}

#[test]
fn ping_lan_to_ce_ce_to_lan_and_ce_to_ce() {
    let mut lab = lab();
    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "LAN -> CE1\n{out}\n{}", lab.daemon_output());
    // The CE answers with hop limit 64; the BR is one hop.
    assert!(out.contains("ttl=63"), "{out}");
    let (n, out) = ping(&lab.ce1, &format!("-6 -c 3 -i 0.2 {LAN_SERVER}"));
    assert_eq!(n, 3, "CE1 -> LAN\n{out}");
    assert!(out.contains("ttl=63"), "{out}");
    let (n, out) = ping(&lab.ce1, &format!("-6 -c 3 -i 0.2 {CE2_V6}"));
    assert_eq!(n, 3, "CE1 -> CE2 (hairpin)\n{out}");
    assert!(lab.counter("path", "encapsulated") >= 6);
    assert!(lab.counter("path", "decapsulated") >= 6);
    assert!(lab.counter("path", "hairpinned") >= 6);
    assert!(lab.counter("action", "redirect-ipv6") >= 6);
    assert!(lab.counter("action", "redirect-proto41") >= 12);
    // Once the neighbours are resolved, frames leave by AF_XDP.
    assert!(lab.counter("io", "tx-afxdp") >= 6, "{}", lab.metrics());
    eprintln!("{}", lab.metrics());
    let summary = lab.stop_daemon();
    assert!(summary.contains("packets in"), "{summary}");
    assert!(!summary.contains("MISMATCH"), "{summary}");
}

/// Sends `data` over TCP from `client` to a listener in `server` and
/// returns what the server received.
fn tcp_transfer(server: &Netns, listen: &str, client: &Netns, data: Vec<u8>) -> Vec<u8> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("[{listen}]:5001").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.spawn_in(move || {
        let l = std::net::TcpListener::bind(addr).expect("bind");
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read");
        got
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("listener up");
    client.enter(move || {
        let mut c =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(&data).expect("write");
    });
    srv.join().expect("server thread")
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn ten_megabytes_each_way_arrive_intact() {
    let lab = lab();
    // Warm the neighbour caches so the transfer runs on the fast path.
    ping(&lab.lan, &format!("-6 -c 1 {CE1_V6}"));
    let up = pseudo_random(10 << 20, 1);
    assert!(
        tcp_transfer(&lab.lan, LAN_SERVER, &lab.ce1, up.clone()) == up,
        "CE1 -> LAN data differs"
    );
    let down = pseudo_random(10 << 20, 2);
    assert!(
        tcp_transfer(&lab.ce1, CE1_V6, &lab.lan, down.clone()) == down,
        "LAN -> CE1 data differs"
    );
    // 10 MiB in segments of at most 1220 bytes: thousands of packets each way.
    assert!(lab.counter("path", "encapsulated") > 8000);
    assert!(lab.counter("path", "decapsulated") > 8000);
    assert!(lab.counter("io", "tx-afxdp") > 16000, "{}", lab.metrics());
}

#[test]
fn too_big_gets_packet_too_big_and_hop_limit_one_gets_time_exceeded() {
    let lab = lab();
    let (n, out) = ping(&lab.lan, &format!("-6 -c 1 -s 1300 -M do {CE1_V6}"));
    assert_eq!(n, 0, "{out}");
    assert!(out.contains("mtu=1280"), "{out}");
    assert!(
        out.contains(BR_V6),
        "the error comes from the BR's 6rd address: {out}"
    );
    assert_eq!(lab.counter("path", "icmp-packet-too-big"), 1);
    // The sender now uses the smaller MTU and gets through.
    let (n, out) = ping(&lab.lan, &format!("-6 -c 1 -s 1300 {CE1_V6}"));
    assert_eq!(n, 1, "{out}");
    let (n, out) = ping(&lab.lan, &format!("-6 -c 1 -t 1 {CE1_V6}"));
    assert_eq!(n, 0, "{out}");
    assert!(out.to_lowercase().contains("time exceeded"), "{out}");
    assert_eq!(lab.counter("path", "icmp-time-exceeded"), 1);
    // From the CE side too: the error goes back through the tunnel.
    let (_, out) = ping(&lab.ce1, &format!("-6 -c 1 -t 1 {LAN_SERVER}"));
    assert!(out.to_lowercase().contains("time exceeded"), "{out}");
    assert_eq!(lab.counter("path", "icmp-time-exceeded"), 2);
}

#[test]
fn spoofed_martian_and_malformed_packets_are_dropped_and_counted() {
    let lab = lab();
    let gw_mac = lab.gw.mac("gw-wan");
    let ce_mac = lab.ce1.mac("eth0");
    let frame =
        |inner: Vec<u8>, ok: bool| ipv4_frame(gw_mac, ce_mac, CE1_V4, BR_V4, 41, &inner, ok);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "spoofed-source",
            frame(icmpv6_echo(CE2_V6, LAN_SERVER, 64, 8), true),
        ),
        (
            "source-outside-domain",
            frame(icmpv6_echo(LAN_SERVER, CE2_V6, 64, 8), true),
        ),
        (
            "martian-source",
            frame(icmpv6_echo("fe80::1", LAN_SERVER, 64, 8), true),
        ),
        (
            "martian-destination",
            frame(icmpv6_echo(CE1_V6, "ff02::1", 64, 8), true),
        ),
        (
            "br-own-prefix",
            frame(
                icmpv6_echo(CE1_V6, "2001:db8:0:f096:aff:ffde::2", 64, 8),
                true,
            ),
        ),
        (
            "truncated",
            frame(icmpv6_echo(CE1_V6, LAN_SERVER, 64, 8)[..30].to_vec(), true),
        ),
        (
            "bad-ipv4-checksum",
            frame(icmpv6_echo(CE1_V6, LAN_SERVER, 64, 8), false),
        ),
    ];
    for (reason, f) in cases {
        let before = lab.counter("reason", reason);
        lab.ce1.send_frames("eth0", vec![f; 3]);
        assert!(
            eventually(Duration::from_secs(3), || lab.counter("reason", reason)
                == before + 3),
            "{reason}: {} -> {}\n{}",
            before,
            lab.counter("reason", reason),
            lab.metrics()
        );
    }
    // Nothing of it reached the LAN: only the counted drops moved.
    assert_eq!(lab.counter("path", "decapsulated"), 0);
}

//! End-to-end tests of the daemon in the SCENARIO.md lab (network
//! namespaces, veth with two queues, emulated CEs). Need root.

use std::time::Duration;

use br_tests::*;

fn lab() -> Lab {
    lab_with(false)
}

/// The lab; `fast_path_peers`: the XDP fast path can transmit (else every
/// packet goes through the AF_XDP forwarder).
fn lab_with(fast_path_peers: bool) -> Lab {
    Lab::start(LabOptions {
        queues: 2,
        extra_config: String::new(),
        extra_domains: String::new(),
        emulated_ces: true,
        ce_emulator: env!("CARGO_BIN_EXE_ce-emulator").into(),
        fast_path_peers,
    })
}

fn path_name(fast_path_peers: bool) -> &'static str {
    if fast_path_peers {
        "XDP fast path"
    } else {
        "AF_XDP forwarder"
    }
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
    // What an operator types on the gateway.
    let live = lab
        .gw
        .sh(&format!("{} counters --live", daemon_binary().display()));
    assert!(
        live.contains("br6rd_forwarded_packets_total{path=\"hairpinned\"}"),
        "{live}"
    );
    // Each non-zero counter with its meaning, as docs/counters.md says.
    assert!(
        live.contains("path=\"hairpinned\"} ") && live.contains("# CE traffic for another CE"),
        "{live}"
    );
    metrics_endpoint_serves_text_json_and_404_to_concurrent_clients(&lab);
    // Its log is a file here, not a terminal: no colour escapes in it.
    assert!(
        !lab.daemon_output().contains('\u{1b}'),
        "{}",
        lab.daemon_output()
    );
    eprintln!("{}", lab.metrics());
    let summary = lab.stop_daemon();
    assert!(summary.contains("packets in"), "{summary}");
    assert!(!summary.contains("MISMATCH"), "{summary}");
}

/// One HTTP/1.0 GET to the daemon's metrics address: (status line, body).
fn http_get(lab: &Lab, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let path = path.to_string();
    lab.gw.enter(move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9641").expect("metrics port");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    })
}

/// /metrics and /metrics.json agree, other paths are 404, and sixteen
/// scrapes at once all get a whole page while a trace stream stays open.
fn metrics_endpoint_serves_text_json_and_404_to_concurrent_clients(lab: &Lab) {
    let (status, _) = http_get(lab, "/nothing-here");
    assert!(status.contains(" 404 "), "{status}");
    let mut cmd = lab.gw.command(&daemon_binary().display().to_string());
    cmd.arg("trace");
    let mut trace = spawn(cmd, lab.dir.join("trace-during-scrapes.txt"));
    let pages: Vec<(String, String)> = std::thread::scope(|scope| {
        let scrapes: Vec<_> = (0..16)
            .map(|i| {
                scope.spawn(move || {
                    http_get(
                        lab,
                        if i % 2 == 0 {
                            "/metrics"
                        } else {
                            "/metrics.json"
                        },
                    )
                })
            })
            .collect();
        scrapes.into_iter().map(|t| t.join().unwrap()).collect()
    });
    trace.signal(libc::SIGINT);
    let _ = trace.wait_for_exit(Duration::from_secs(5));
    for (i, (status, body)) in pages.iter().enumerate() {
        assert!(status.contains(" 200 "), "scrape {i}: {status}");
        if i % 2 == 0 {
            assert!(
                body.contains("# TYPE br6rd_io_packets_total counter"),
                "{body}"
            );
        } else {
            let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
            assert!(
                json["br6rd_forwarded_packets_total"]["hairpinned"].as_u64() >= Some(6),
                "{body}"
            );
        }
    }
    // Quiet now: the text and the JSON give the same numbers.
    let (_, text) = http_get(lab, "/metrics");
    let (_, json) = http_get(lab, "/metrics.json");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    for name in ["encapsulated", "decapsulated", "hairpinned"] {
        assert_eq!(
            json["br6rd_forwarded_packets_total"][name].as_u64(),
            Some(counter_in(&text, "path", name)),
            "{name}"
        );
    }
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
    // Warm the neighbour caches so the transfer runs on the AF_XDP path.
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
            // Hairpin to 10.96.255.255, the WAN subnet's broadcast.
            "ipv4-broadcast",
            frame(
                icmpv6_echo(CE1_V6, "2001:db8:0:f096:a60:ffff::1", 64, 8),
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

/// A TCP exchange with a listener in `server` on `addr`: true when the
/// client got the echo back.
fn tcp_echo_works(server: &Netns, addr: &str, client: &Netns) -> bool {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.spawn_in(move || {
        let l = std::net::TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        for _ in 0..50 {
            if let Ok((mut c, _)) = l.accept() {
                c.set_nonblocking(false).unwrap();
                let mut b = [0u8; 5];
                if c.read_exact(&mut b).is_ok() {
                    let _ = c.write_all(&b);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("listener up");
    let ok = client.enter(move || {
        let Ok(mut c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
        let mut b = [0u8; 5];
        c.write_all(b"hello").is_ok() && c.read_exact(&mut b).is_ok() && &b == b"hello"
    });
    let _ = srv.join();
    ok
}

#[test]
fn gateway_own_traffic_works_with_the_daemon_and_after_kill_9() {
    let mut lab = lab();
    let check = |lab: &Lab, when: &str| {
        let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.2 {GW_LAN}"));
        assert_eq!(n, 2, "LAN -> gateway ping {when}\n{out}");
        let (n, out) = ping(&lab.ce1, &format!("-4 -c 2 -i 0.2 {GW_WAN_V4}"));
        assert_eq!(n, 2, "CE -> gateway IPv4 ping {when}\n{out}");
        assert!(
            tcp_echo_works(&lab.gw, &format!("[{GW_LAN}]:7000"), &lab.lan),
            "TCP to the gateway {when}"
        );
    };
    check(&lab, "with the daemon running");
    // The BR's own IPv4 address answers pings (the XDP program leaves them to the kernel).
    let (n, out) = ping(&lab.ce1, &format!("-4 -c 1 {BR_V4}"));
    assert_eq!(n, 1, "{out}");
    assert!(lab.counter("action", "pass-br-not-6rd") >= 1);

    let mut daemon = lab.daemon.take().unwrap();
    daemon.signal(libc::SIGKILL);
    assert!(daemon.wait_for_exit(Duration::from_secs(5)).is_some());
    // The kernel removed the XDP program and the TUN interface with the process.
    for dev in ["gw-lan", "gw-wan"] {
        assert!(
            eventually(Duration::from_secs(5), || !lab
                .gw
                .sh(&format!("ip -d link show {dev}"))
                .contains("xdp")),
            "XDP still attached to {dev}"
        );
    }
    assert!(
        !lab.gw.try_sh("ip link show br6rd0").status.success(),
        "TUN interface left behind"
    );
    check(&lab, "after kill -9");
}

#[test]
fn slow_path_relays_what_the_gateway_itself_sends() {
    let lab = lab();
    // The gateway's kernel routes the 6rd prefix into the TUN interface.
    let (n, out) = ping(&lab.gw, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "gateway -> CE1\n{out}\n{}", lab.daemon_output());
    assert!(lab.counter("io", "rx-kernel") >= 3);
    // The replies go to the BR's own address: handed to the host.
    assert!(lab.counter("path", "to-host") >= 3);
    assert!(lab.counter("io", "tx-host") >= 3);
}

/// CE1's protocol-41 frames carrying `inner` in two IPv4 fragments, the
/// first with `first_len` bytes of it (a multiple of 8).
fn ce1_fragments(lab: &Lab, inner: &[u8], first_len: usize) -> Vec<Vec<u8>> {
    let gw_mac = lab.gw.mac("gw-wan");
    let ce_mac = lab.ce1.mac("eth0");
    let (first, second) = inner.split_at(first_len);
    let mut f1 = ipv4_frame(gw_mac, ce_mac, CE1_V4, BR_V4, 41, first, true);
    let mut f2 = ipv4_frame(gw_mac, ce_mac, CE1_V4, BR_V4, 41, second, true);
    for (f, flags_offset) in [(&mut f1, 0x2000u16), (&mut f2, (first_len / 8) as u16)] {
        let ip = &mut f[14..34];
        ip[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        ip[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let sum = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    vec![f1, f2]
}

#[test]
fn fragmented_protocol_41_is_reassembled_by_the_kernel_and_relayed() {
    let lab = lab();
    // An echo request CE1 -> LAN server, in two IPv4 fragments.
    let inner = icmpv6_echo(CE1_V6, LAN_SERVER, 64, 200);
    lab.ce1
        .send_frames("eth0", ce1_fragments(&lab, &inner, 128));
    assert!(
        eventually(Duration::from_secs(3), || lab
            .counter("path", "decapsulated")
            >= 1),
        "{}",
        lab.metrics()
    );
    assert_eq!(lab.counter("action", "pass-ipv4-fragment"), 2);
    assert!(lab.counter("io", "rx-kernel") >= 1);
}

#[test]
fn reassembled_packet_too_big_for_the_lan_gets_packet_too_big_back_to_the_ce() {
    let lab = lab();
    // RFC 4443 §3.2: 2,000 bytes reassembled, the LAN link's MTU is 1500.
    let capture = lab.ce1.tcpdump(
        "eth0",
        "ip proto 41 and ip[60] = 2",
        &lab.dir.join("ce1-ptb.log"),
    );
    let inner = icmpv6_echo(CE1_V6, LAN_SERVER, 64, 2000 - 48);
    assert_eq!(inner.len(), 2000);
    lab.ce1
        .send_frames("eth0", ce1_fragments(&lab, &inner, 1400));
    assert!(
        eventually(Duration::from_secs(3), || lab
            .counter("path", "icmp-packet-too-big")
            >= 1),
        "{}",
        lab.metrics()
    );
    assert!(
        eventually(Duration::from_secs(3), || capture
            .output()
            .contains("packet too big")),
        "{}",
        capture.output()
    );
    let seen = capture.output();
    assert!(
        seen.contains(&format!("{BR_V4} > {CE1_V4}")) && seen.contains("packet too big, mtu 1500"),
        "{seen}"
    );
    assert_eq!(lab.counter("reason", "kernel-send-failed"), 0);
    assert_eq!(lab.counter("path", "decapsulated"), 0);
}

#[test]
fn reload_refuses_a_bad_file_and_keeps_running_then_takes_a_good_one() {
    let lab = lab();
    let good = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(&lab.config, format!("{good}\nmtu = 900\n")).unwrap();
    lab.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || lab
            .daemon_output()
            .contains("reload refused")),
        "{}",
        lab.daemon_output()
    );
    let log = lab.daemon_output();
    assert!(
        log.contains("br.toml:14: mtu = 900 is out of range (1280..=65515)"),
        "{log}"
    );
    let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 2, "still relaying after a refused reload\n{out}");

    // A good file with a second domain: its CEs are reachable at once.
    std::fs::write(
        &lab.config,
        format!("{good}\n[[domain]]\nname = \"strict\"\nprefix = \"2001:db8:100::/40\"\nipv4-mask-len = 8\nbr-ipv4 = \"{BR_V4}\"\n"),
    )
    .unwrap();
    lab.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || lab
            .daemon_output()
            .contains("2 domain(s)")),
        "{}",
        lab.daemon_output()
    );
    // 2001:db8:160:164::1 embeds 10.96.1.100 in the strict domain: LAN -> it is encapsulated.
    ping(&lab.lan, "-6 -c 1 -W 1 2001:db8:160:164::1");
    assert!(
        lab.counter("path", "encapsulated") >= 3,
        "{}",
        lab.metrics()
    );
}

#[test]
fn generic_xdp_mode_relays_too() {
    let mut lab = Lab::start(LabOptions {
        queues: 1,
        extra_config: "xdp-mode = \"generic\"".to_string(),
        extra_domains: String::new(),
        emulated_ces: true,
        ce_emulator: env!("CARGO_BIN_EXE_ce-emulator").into(),
        fast_path_peers: false,
    });
    assert!(
        lab.daemon_output().contains("Generic mode"),
        "{}",
        lab.daemon_output()
    );
    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "{out}\n{}", lab.daemon_output());
    let (n, out) = ping(&lab.ce1, &format!("-6 -c 3 -i 0.2 {CE2_V6}"));
    assert_eq!(n, 3, "{out}");
    assert!(lab.counter("path", "hairpinned") >= 6);
    let summary = lab.stop_daemon();
    assert!(!summary.contains("MISMATCH"), "{summary}");
}

#[test]
fn xdp_fast_path_carries_plain_traffic_and_leaves_the_rest_to_the_forwarder() {
    let mut lab = lab_with(true);
    assert!(
        eventually(Duration::from_secs(5), || lab
            .daemon_output()
            .contains("XDP fast path may transmit on ifindex [")),
        "{}",
        lab.daemon_output()
    );
    // The first packets resolve the neighbours through the forwarder and
    // the kernel; the rest take the fast path.
    for (ns, dst) in [
        (&lab.lan, CE1_V6),
        (&lab.ce1, LAN_SERVER),
        (&lab.ce1, CE2_V6),
    ] {
        let (n, out) = ping(ns, &format!("-6 -c 4 -i 0.2 {dst}"));
        assert_eq!(n, 4, "ping {dst}\n{out}\n{}", lab.daemon_output());
        assert!(out.contains("ttl=63"), "{out}");
    }
    // A neighbour changes (CE1's MAC, and the gateway's entry for it):
    // the next hop the XDP program remembered is forgotten at once, and
    // the next pings, on the fast path, reach the new MAC (CE1's kernel
    // drops frames sent to another MAC).
    let before = lab.counter("action", "fast-encap");
    lab.ce1.sh("ip link set eth0 address 02:ce:00:00:01:99");
    lab.gw.sh(&format!(
        "ip neigh replace {CE1_V4} lladdr 02:ce:00:00:01:99 dev gw-wan nud permanent"
    ));
    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(
        n,
        3,
        "LAN -> CE1 at its new MAC\n{out}\n{}",
        lab.daemon_output()
    );
    assert!(
        lab.counter("action", "fast-encap") >= before + 3,
        "{}",
        lab.metrics()
    );
    let data = pseudo_random(2_000_000, 7);
    let got = tcp_transfer(&lab.ce1, CE1_V6, &lab.lan, data.clone());
    assert!(
        got == data,
        "LAN -> CE1: {} of {} bytes",
        got.len(),
        data.len()
    );
    let got = tcp_transfer(&lab.lan, LAN_SERVER, &lab.ce2, data.clone());
    assert!(
        got == data,
        "CE2 -> LAN: {} of {} bytes",
        got.len(),
        data.len()
    );
    let (encap, decap, hairpin) = (
        lab.counter("action", "fast-encap"),
        lab.counter("action", "fast-decap"),
        lab.counter("action", "fast-hairpin"),
    );
    assert!(encap > 1000 && decap > 1000, "{}", lab.metrics());
    assert!(hairpin >= 4, "{}", lab.metrics());
    // Hop limit 1 is not plain: the forwarder answers Time Exceeded.
    let (n, out) = ping(&lab.lan, &format!("-6 -c 1 -t 1 -W 2 {CE1_V6}"));
    assert_eq!(n, 0, "{out}");
    assert!(out.contains("Time exceeded"), "{out}");
    assert_eq!(lab.counter("path", "icmp-time-exceeded"), 1);
    assert!(lab.counter("declined", "needs-relay") >= 1);
    // Frames the fast path sent never reach the forwarder's counters.
    let forwarded = lab.counter("path", "encapsulated") + lab.counter("path", "decapsulated");
    assert!(
        forwarded < (encap + decap) / 10,
        "forwarder {forwarded}, fast path {}",
        encap + decap
    );
    let encap = lab.counter("action", "fast-encap");
    let summary = lab.stop_daemon();
    assert!(!summary.contains("MISMATCH"), "{summary}");
    assert!(
        summary.contains(&format!("XDP fast path: {encap} encapsulated")),
        "{summary}"
    );
}

/// Sends SIGHUP and waits until the daemon logs one more "reloaded".
fn reload(lab: &Lab) {
    reload_until(lab, "reloaded ");
}

/// Sends SIGHUP and waits until the daemon logs `marker` once more.
fn reload_until(lab: &Lab, marker: &str) {
    let before = lab.daemon_output().matches(marker).count();
    lab.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || lab
            .daemon_output()
            .matches(marker)
            .count()
            > before),
        "{}",
        lab.daemon_output()
    );
}

#[test]
fn reload_touches_only_what_changed_and_loses_nothing_for_the_br_itself() {
    let lab = lab();
    let good = std::fs::read_to_string(&lab.config).unwrap();
    let tun = |what: &str| lab.gw.sh(&format!("ip {what} dev br6rd0"));
    let mut monitor = lab.gw.command("ip");
    monitor.args(["monitor", "address", "route"]);
    let monitor = spawn(monitor, lab.dir.join("ip-monitor.log"));
    std::thread::sleep(Duration::from_millis(200));

    // Paced pings to the BR's own 6rd address from the LAN and from a CE
    // while the same configuration is reloaded five times.
    let (lan, ce) = std::thread::scope(|s| {
        let lan = s.spawn(|| ping(&lab.lan, &format!("-6 -c 300 -i 0.01 {BR_V6}")));
        let ce = s.spawn(|| ping(&lab.ce1, &format!("-6 -c 300 -i 0.01 {BR_V6}")));
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..5 {
            reload(&lab);
            std::thread::sleep(Duration::from_millis(300));
        }
        (lan.join().unwrap(), ce.join().unwrap())
    });
    assert_eq!(lan.0, 300, "LAN -> BR across reloads\n{}", lan.1);
    assert_eq!(ce.0, 300, "CE1 -> BR across reloads\n{}", ce.1);
    let changes = monitor.output();
    assert!(
        !changes.contains("br6rd0"),
        "an unchanged reload touched the TUN:\n{changes}"
    );

    // A domain added, then removed: its route comes and goes, nothing else moves.
    let second = "[[domain]]\nname = \"strict\"\nprefix = \"2001:db8:100::/40\"\n\
                  ipv4-mask-len = 8\nbr-ipv4 = \"10.255.255.1\"\n";
    std::fs::write(&lab.config, format!("{good}\n{second}")).unwrap();
    reload(&lab);
    assert!(tun("-6 route show").contains("2001:db8:100::/40"));
    assert!(tun("-4 addr show").contains("10.255.255.1/32"));
    std::fs::write(&lab.config, &good).unwrap();
    reload(&lab);
    let routes = tun("-6 route show");
    assert!(!routes.contains("2001:db8:100::/40"), "{routes}");
    assert!(routes.contains("2001:db8:0:f096::/64"), "{routes}");
    assert!(!tun("-4 addr show").contains("10.255.255.1/32"));
    let changes = monitor.output();
    assert!(
        !changes
            .lines()
            .any(|l| l.starts_with("Deleted") && (l.contains(BR_V4) || l.contains("f096"))),
        "the unchanged domain's addresses or route went away:\n{changes}"
    );

    // No domain at all: the BR relays nothing and the TUN holds nothing.
    let relay_only = &good[..good.find("[[domain]]").unwrap()];
    std::fs::write(&lab.config, relay_only).unwrap();
    reload(&lab);
    assert_eq!(tun("-6 route show").trim(), "", "{}", lab.daemon_output());
    assert!(!tun("addr show").contains("inet"), "{}", tun("addr show"));
    let (n, _) = ping(&lab.lan, &format!("-6 -c 1 -W 1 {CE1_V6}"));
    assert_eq!(n, 0);
    std::fs::write(&lab.config, &good).unwrap();
    reload(&lab);
    let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 2, "relaying again\n{out}\n{}", lab.daemon_output());
}

/// 5,000 packets in 1.5 s from the LAN to 6rd addresses of CEs that do
/// not exist (10.96.2.0 - 10.96.21.249: on the WAN subnet, so each waits
/// for ARP that never answers) while LAN <-> CE1 pings run at 100/s each
/// way. Returns (received, sent) of the pings during and after the flood.
fn flood_unresolved_ces(lab: &Lab) -> [(u32, u32); 2] {
    let gw_mac = lab.gw.mac("gw-lan");
    let lan_mac = lab.lan.mac("lan0");
    let flood: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| {
            let (hi, lo) = (2 + i / 250, i % 250);
            let dst = format!("2001:db8:0:f096:a60:{:02x}{:02x}::1", hi, lo);
            let mut f = [gw_mac, lan_mac].concat();
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&icmpv6_echo(LAN_SERVER, &dst, 64, 64));
            f
        })
        .collect();
    let pings = |count: u32| {
        let args = format!("-6 -c {count} -i 0.01 -W 1");
        std::thread::scope(|s| {
            let there = s.spawn(|| ping(&lab.lan, &format!("{args} {CE1_V6}")));
            let back = s.spawn(|| ping(&lab.ce1, &format!("{args} {LAN_SERVER}")));
            let (there, back) = (there.join().unwrap(), back.join().unwrap());
            (there.0 + back.0, 2 * count)
        })
    };
    let during = std::thread::scope(|s| {
        let legit = s.spawn(|| pings(300));
        std::thread::sleep(Duration::from_millis(500));
        for batch in flood.chunks(100) {
            lab.lan.send_frames("lan0", batch.to_vec());
            std::thread::sleep(Duration::from_millis(30));
        }
        legit.join().unwrap()
    });
    [during, pings(100)]
}

fn flood_leaves_legitimate_traffic_intact(fast_path_peers: bool) {
    let mut lab = lab_with(fast_path_peers);
    // Resolve the neighbours first: legitimate traffic is established.
    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "{out}\n{}", lab.daemon_output());
    let [during, after] = flood_unresolved_ces(&lab);
    let path = path_name(fast_path_peers);
    eprintln!(
        "{path}: during the flood {}/{} pings crossed, after it {}/{}; \
         kernel-send-failed {}, tx-kernel {}",
        during.0,
        during.1,
        after.0,
        after.1,
        lab.counter("reason", "kernel-send-failed"),
        lab.counter("io", "tx-kernel"),
    );
    // A path is counted only for what left: the flood's refused sends
    // (kernel-send-failed) count under their reason alone.
    let metrics = lab.metrics();
    let family = |prefix: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let sent: u64 = ["tx-afxdp", "tx-kernel", "tx-kernel-ipsec", "tx-host"]
        .iter()
        .map(|io| counter_in(&metrics, "io", io))
        .sum();
    assert_eq!(
        family("br6rd_forwarded_packets_total{"),
        sent,
        "paths = tx\n{metrics}"
    );
    // A ping lost to the flood's own ARP churn is tolerated; a stall is not.
    assert!(
        during.0 * 100 >= during.1 * 98,
        "{during:?}\n{}",
        lab.metrics()
    );
    assert_eq!(after.0, after.1, "{}", lab.metrics());
    let summary = lab.stop_daemon();
    assert!(!summary.contains("MISMATCH"), "{summary}");
}

#[test]
fn a_flood_towards_ces_that_do_not_exist_leaves_the_afxdp_forwarder_flowing() {
    flood_leaves_legitimate_traffic_intact(false);
}

#[test]
fn a_flood_towards_ces_that_do_not_exist_leaves_the_xdp_fast_path_flowing() {
    flood_leaves_legitimate_traffic_intact(true);
}

/// The forwarding counters of both paths together.
fn relayed(lab: &Lab) -> u64 {
    ["encapsulated", "decapsulated", "hairpinned"]
        .iter()
        .map(|p| lab.counter("path", p))
        .chain(
            ["fast-encap", "fast-decap", "fast-hairpin"]
                .iter()
                .map(|a| lab.counter("action", a)),
        )
        .sum()
}

/// An IPv4 host outside the lab's ce-ipv4-allow (10.96.0.0/16), and the
/// 6rd address it embeds.
const OUTSIDER_V4: &str = "10.97.0.5";
const OUTSIDER_V6: &str = "2001:db8:0:f096:a61:5::1";

/// Frames a router must not relay, from both sides, each counted by its
/// own reason and none relayed: another host's or a broadcast MAC
/// (RFC 1122 §3.3.6), the BR's own addresses as a LAN source, protocol
/// 41 from the LAN (RFC 4213 §3.6), also through the kernel (a link of
/// the gateway without XDP), frames of a VLAN the gateway has no
/// interface for (IEEE 802.1Q), the tag in the frame or in metadata.
fn frames_not_for_the_br_are_not_relayed(fast_path_peers: bool) {
    let lab = lab_with(fast_path_peers);
    // A side link without XDP, LAN namespace to gateway.
    veth(&lab.lan, "lan-x", &lab.gw, "gw-x", 1);
    lab.gw.sh(
        "ip link set gw-x up && ip addr add 10.77.0.1/24 dev gw-x && \
         sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.gw-x.rp_filter=0",
    );
    lab.lan.sh("ip link set lan-x up");
    let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 2, "{out}");
    let (gw_lan, gw_wan, gw_x) = (
        lab.gw.mac("gw-lan"),
        lab.gw.mac("gw-wan"),
        lab.gw.mac("gw-x"),
    );
    let (lan_mac, ce_mac) = (lab.lan.mac("lan0"), lab.ce1.mac("eth0"));
    let eth6 = |dst: [u8; 6], packet: Vec<u8>| {
        let mut f = [dst, lan_mac].concat();
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&packet);
        f
    };
    let to_ce1 = || icmpv6_echo(LAN_SERVER, CE1_V6, 64, 8);
    let as_ce1 = |dst: [u8; 6], src: [u8; 6]| {
        let inner = icmpv6_echo(CE1_V6, LAN_SERVER, 64, 8);
        ipv4_frame(dst, src, CE1_V4, BR_V4, 41, &inner, true)
    };
    let foreign = [0x02, 0x99, 0, 0, 0, 1];
    let broadcast = [0xff; 6];
    // VLAN 7 on the CE link, the tag in the frame (priority 0) or moved to
    // the skb's metadata on the way out (priority 7), which veth hands to
    // XDP as a NIC that strips tags does.
    let vlan_mover = move_vlan_tags_to_metadata(&lab.ce1, "eth0");
    let vlan7 = |mut frame: Vec<u8>, priority: u8| {
        frame.splice(12..12, [0x81, 0x00, priority << 5, 0x07]);
        frame
    };
    // (what, counter kind, counter, sender, its interface, frame)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a Netns, &'a str, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "LAN, to a CE outside ce-ipv4-allow",
            "reason",
            "ce-not-allowed",
            &lab.lan,
            "lan0",
            eth6(gw_lan, icmpv6_echo(LAN_SERVER, OUTSIDER_V6, 64, 8)),
        ),
        (
            "CE side, from a CE outside ce-ipv4-allow",
            "reason",
            "ce-not-allowed",
            &lab.ce1,
            "eth0",
            ipv4_frame(
                gw_wan,
                ce_mac,
                OUTSIDER_V4,
                BR_V4,
                41,
                &icmpv6_echo(OUTSIDER_V6, LAN_SERVER, 64, 8),
                true,
            ),
        ),
        (
            "LAN, another host's MAC",
            "action",
            "pass-not-our-mac",
            &lab.lan,
            "lan0",
            eth6(foreign, to_ce1()),
        ),
        (
            "LAN, broadcast MAC",
            "action",
            "drop-l2-multicast",
            &lab.lan,
            "lan0",
            eth6(broadcast, to_ce1()),
        ),
        (
            "LAN, multicast MAC",
            "action",
            "drop-l2-multicast",
            &lab.lan,
            "lan0",
            eth6([0x33, 0x33, 0, 0, 0, 1], to_ce1()),
        ),
        (
            "CE, another host's MAC",
            "action",
            "pass-not-our-mac",
            &lab.ce1,
            "eth0",
            as_ce1(foreign, ce_mac),
        ),
        (
            "CE, broadcast MAC",
            "action",
            "drop-l2-multicast",
            &lab.ce1,
            "eth0",
            as_ce1(broadcast, ce_mac),
        ),
        (
            "CE, VLAN 7, the tag in the driver's metadata",
            "action",
            "pass-vlan-tagged",
            &lab.ce1,
            "eth0",
            vlan7(as_ce1(gw_wan, ce_mac), 7),
        ),
        (
            "CE, VLAN 7, the tag in the frame",
            "action",
            "pass-vlan-tagged",
            &lab.ce1,
            "eth0",
            vlan7(as_ce1(gw_wan, ce_mac), 0),
        ),
        (
            "LAN, the BR's own 6rd address as source",
            "reason",
            "spoofed-source",
            &lab.lan,
            "lan0",
            eth6(gw_lan, icmpv6_echo(BR_V6, CE1_V6, 64, 8)),
        ),
        (
            "LAN, the BR's delegated prefix as source",
            "reason",
            "spoofed-source",
            &lab.lan,
            "lan0",
            eth6(
                gw_lan,
                icmpv6_echo("2001:db8:0:f096:aff:ffde::77", CE1_V6, 64, 8),
            ),
        ),
        (
            "LAN, protocol 41 posing as CE 1",
            "action",
            "drop-proto41-wrong-interface",
            &lab.lan,
            "lan0",
            as_ce1(gw_lan, lan_mac),
        ),
        (
            "side link without XDP, protocol 41 posing as CE 1",
            "reason",
            "proto41-wrong-interface",
            &lab.lan,
            "lan-x",
            as_ce1(gw_x, lab.lan.mac("lan-x")),
        ),
    ];
    for (what, kind, name, ns, dev, frame) in cases {
        let (before, relayed_before) = (lab.counter(kind, name), relayed(&lab));
        ns.send_frames(dev, vec![frame; 3]);
        assert!(
            eventually(Duration::from_secs(3), || lab.counter(kind, name)
                == before + 3),
            "{what}: {name} {before} -> {}\n{}",
            lab.counter(kind, name),
            lab.metrics()
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            relayed(&lab),
            relayed_before,
            "{what}: relayed\n{}",
            lab.metrics()
        );
    }
    assert_eq!(vlan_tags_moved(&vlan_mover), 3, "tags moved to metadata");
    // Legitimate traffic still flows.
    let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 2, "{out}");
}

#[test]
fn frames_not_for_the_br_are_not_relayed_by_the_afxdp_forwarder() {
    frames_not_for_the_br_are_not_relayed(false);
}

#[test]
fn frames_not_for_the_br_are_not_relayed_by_the_xdp_fast_path() {
    frames_not_for_the_br_are_not_relayed(true);
}

/// 100 reloads under paced, sequence-numbered flows both ways through the
/// BR (LAN <-> CE1 pings at 100/s each): the same file, a second domain
/// added and removed, the domain's MTU changed, and every tenth a bad
/// file that is refused. Not one packet of the unchanged domain is lost.
fn a_hundred_reloads_lose_nothing(fast_path_peers: bool) {
    let lab = lab_with(fast_path_peers);
    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "{out}");
    let good = std::fs::read_to_string(&lab.config).unwrap();
    let variants = [
        good.clone(),
        format!(
            "{good}\n[[domain]]\nname = \"strict\"\nprefix = \"2001:db8:100::/40\"\n\
             ipv4-mask-len = 8\nbr-ipv4 = \"10.255.255.1\"\n"
        ),
        format!("{good}mtu = 1400\n"),
    ];
    let bad = format!("{good}mtu = 900\n");
    let count = 1500;
    let started = std::time::Instant::now();
    let args = format!("-6 -c {count} -i 0.01 -W 1");
    let (there, back, refused) = std::thread::scope(|s| {
        let there = s.spawn(|| ping(&lab.lan, &format!("{args} {CE1_V6}")));
        let back = s.spawn(|| ping(&lab.ce1, &format!("{args} {LAN_SERVER}")));
        std::thread::sleep(Duration::from_millis(300));
        let mut refused = 0;
        for i in 0..100 {
            if i % 10 == 9 {
                std::fs::write(&lab.config, &bad).unwrap();
                reload_until(&lab, "reload refused");
                refused += 1;
            } else {
                std::fs::write(&lab.config, &variants[i % 3]).unwrap();
                reload(&lab);
            }
        }
        let reloads_took = started.elapsed();
        (
            there.join().unwrap(),
            back.join().unwrap(),
            (refused, reloads_took),
        )
    });
    let path = path_name(fast_path_peers);
    eprintln!(
        "{path}: 100 reloads ({} refused) in {:.1} s; LAN -> CE1 {}/{count}, CE1 -> LAN {}/{count} pings",
        refused.0,
        refused.1.as_secs_f64(),
        there.0,
        back.0
    );
    assert!(
        refused.1 < Duration::from_millis(u64::from(count) * 10),
        "the reloads outlasted the flows: {:?}",
        refused.1
    );
    assert_eq!(there.0, count, "LAN -> CE1 lost pings\n{}", there.1);
    assert_eq!(back.0, count, "CE1 -> LAN lost pings\n{}", back.1);
    assert!(lab.daemon_output().contains("mtu = 900 is out of range"));
}

#[test]
fn a_hundred_reloads_lose_nothing_in_the_afxdp_forwarder() {
    a_hundred_reloads_lose_nothing(false);
}

#[test]
fn a_hundred_reloads_lose_nothing_in_the_xdp_fast_path() {
    a_hundred_reloads_lose_nothing(true);
}

/// setpriv arguments: user nobody, no groups, no new privileges, and
/// exactly `caps` (inheritable, ambient, bounding).
fn as_nobody_with(caps: &[String]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--no-new-privs",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--inh-caps=-all{set}"),
        format!("--ambient-caps=-all{set}"),
        format!("--bounding-set=-all{set}"),
    ])
    .collect()
}

#[test]
fn runs_as_a_plain_user_with_only_the_units_capabilities() {
    let mut lab = lab();
    lab.stop_daemon();
    // Short of one, it refuses before touching anything, and says which.
    let mut caps = unit_capabilities();
    assert!(caps.contains(&"bpf".to_string()), "{caps:?}");
    let short: Vec<String> = caps.iter().filter(|c| *c != "net_raw").cloned().collect();
    let mut cmd = lab.gw.command(&as_nobody_with(&short)[0]);
    cmd.args(&as_nobody_with(&short)[1..])
        .arg(daemon_binary())
        .args(["run", "--config", lab.config.to_str().unwrap()]);
    let mut refused = spawn(cmd, lab.dir.join("refused.log"));
    let status = refused.wait_for_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{}",
        refused.output()
    );
    assert!(
        refused
            .output()
            .contains("lacks CAP_NET_RAW (the slow path's raw sockets)"),
        "{}",
        refused.output()
    );
    assert!(lab
        .gw
        .sh("ip link show")
        .lines()
        .all(|l| !l.contains("br6rd")));

    // udev makes /dev/net/tun 0666 on a real host (50-udev-default.rules);
    // this container has it 0600, so the daemon gets a 0666 node of its
    // own, bind-mounted over the real one in a private mount namespace.
    let tun = lab.dir.join("tun");
    run("mknod", &[tun.to_str().unwrap(), "c", "10", "200"]);
    run("chmod", &["666", tun.to_str().unwrap()]);
    let mut wrapper: Vec<String> = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .map(String::from)
        .to_vec();
    wrapper.push(format!(
        "mount --bind {} /dev/net/tun && exec \"$@\"",
        tun.display()
    ));
    wrapper.push("sh".into());
    wrapper.extend(as_nobody_with(&caps));
    // With the anycast health check: its self-check runs BPF_PROG_RUN.
    let config = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(
        &lab.config,
        config.replacen("[relay]\n", "[relay]\nannounce-table = 6970\n", 1),
    )
    .unwrap();
    lab.start_daemon_under(&wrapper, true);
    let pid = lab.daemon.as_ref().unwrap().child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
        "{status}"
    );
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .unwrap();
    assert_eq!(
        eff, "000000c000007000",
        "net_admin, net_raw, ipc_lock, perfmon, bpf only"
    );
    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "LAN -> CE1\n{out}\n{}", lab.daemon_output());
    let (n, out) = ping(&lab.ce1, &format!("-6 -c 3 -i 0.2 {CE2_V6}"));
    assert_eq!(n, 3, "CE1 -> CE2\n{out}\n{}", lab.daemon_output());
    assert!(lab.counter("io", "tx-afxdp") >= 6, "{}", lab.metrics());
    assert!(
        eventually(Duration::from_secs(3), || lab.counter("path", "self-check")
            >= 2),
        "the self-check's probes are relayed\n{}",
        lab.daemon_output()
    );
    assert!(
        !lab.daemon_output().contains("no data-path self-check"),
        "{}",
        lab.daemon_output()
    );
    caps.clear();
    let summary = lab.stop_daemon();
    assert!(!summary.contains("MISMATCH"), "{summary}");
}

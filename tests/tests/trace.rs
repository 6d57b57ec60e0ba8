//! `br-daemon trace` on a running BR (issue 11.4): every packet the lab
//! provokes appears with the name of the counter that counted it, from
//! the stage that decided (XDP program, AF_XDP forwarder, slow path), and
//! the number of events of each name is the counter's increase.

use std::time::Duration;

use br_tests::*;

/// The 6rd prefix of the lab's domain: every provoked packet is in it.
const SIXRD_PREFIX: &str = "2001:db8:0:f096::/64";

fn trace_events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn events_named(events: &[serde_json::Value], kind: &str, name: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["name"] == name)
        .count() as u64
}

#[test]
fn a_trace_names_what_happened_to_each_packet_as_its_counter_does() {
    let lab = Lab::start(LabOptions {
        queues: 2,
        extra_config: String::new(),
        extra_domains: String::new(),
        emulated_ces: true,
        ce_emulator: env!("CARGO_BIN_EXE_ce-emulator").into(),
        fast_path_peers: true,
    });
    // A side link without XDP: protocol 41 there reaches the slow path.
    veth(&lab.lan, "lan-x", &lab.gw, "gw-x", 1);
    lab.gw.sh(
        "ip link set gw-x up && ip addr add 10.77.0.1/24 dev gw-x && \
         sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.gw-x.rp_filter=0",
    );
    lab.lan.sh("ip link set lan-x up");
    let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 2, "{out}");

    // (counter kind, name, how many frames provoke it)
    let (gw_lan, gw_x) = (lab.gw.mac("gw-lan"), lab.gw.mac("gw-x"));
    let lan_mac = lab.lan.mac("lan0");
    let eth6 = |dst: [u8; 6], packet: Vec<u8>| {
        let mut f = [dst, lan_mac].concat();
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&packet);
        f
    };
    let as_ce1 = |dst: [u8; 6], src: [u8; 6]| {
        ipv4_frame(
            dst,
            src,
            CE1_V4,
            BR_V4,
            41,
            &icmpv6_echo(CE1_V6, LAN_SERVER, 64, 8),
            true,
        )
    };
    let (gw_wan, ce_mac) = (lab.gw.mac("gw-wan"), lab.ce1.mac("eth0"));
    let from_ce1 =
        |inner: Vec<u8>, ok: bool| ipv4_frame(gw_wan, ce_mac, CE1_V4, BR_V4, 41, &inner, ok);
    let provoked: Vec<(&str, &str, &Netns, &str, Vec<u8>)> = vec![
        (
            "reason",
            "source-outside-domain",
            &lab.ce1,
            "eth0",
            from_ce1(icmpv6_echo(LAN_SERVER, CE2_V6, 64, 8), true),
        ),
        (
            "reason",
            "martian-destination",
            &lab.ce1,
            "eth0",
            from_ce1(icmpv6_echo(CE1_V6, "ff02::1", 64, 8), true),
        ),
        (
            "reason",
            "br-own-prefix",
            &lab.ce1,
            "eth0",
            from_ce1(
                icmpv6_echo(CE1_V6, "2001:db8:0:f096:aff:ffde::2", 64, 8),
                true,
            ),
        ),
        (
            "reason",
            "ipv4-broadcast",
            &lab.ce1,
            "eth0",
            from_ce1(
                icmpv6_echo(CE1_V6, "2001:db8:0:f096:a60:ffff::1", 64, 8),
                true,
            ),
        ),
        (
            "reason",
            "bad-ipv4-checksum",
            &lab.ce1,
            "eth0",
            from_ce1(icmpv6_echo(CE1_V6, LAN_SERVER, 64, 8), false),
        ),
        (
            "reason",
            "spoofed-source",
            &lab.lan,
            "lan0",
            eth6(gw_lan, icmpv6_echo(BR_V6, CE1_V6, 64, 8)),
        ),
        (
            "reason",
            "ce-not-allowed",
            &lab.lan,
            "lan0",
            eth6(
                gw_lan,
                icmpv6_echo(LAN_SERVER, "2001:db8:0:f096:a61:5::1", 64, 8),
            ),
        ),
        (
            "path",
            "icmp-time-exceeded",
            &lab.lan,
            "lan0",
            eth6(gw_lan, icmpv6_echo(LAN_SERVER, CE1_V6, 1, 8)),
        ),
        (
            "action",
            "drop-l2-multicast",
            &lab.lan,
            "lan0",
            eth6([0xff; 6], icmpv6_echo(LAN_SERVER, CE1_V6, 64, 8)),
        ),
        (
            "action",
            "drop-proto41-wrong-interface",
            &lab.lan,
            "lan0",
            as_ce1(gw_lan, lan_mac),
        ),
        (
            "reason",
            "proto41-wrong-interface",
            &lab.lan,
            "lan-x",
            as_ce1(gw_x, lab.lan.mac("lan-x")),
        ),
    ];
    let before: Vec<u64> = provoked
        .iter()
        .map(|(k, n, ..)| lab.counter(k, n))
        .collect();
    let fast_encap = lab.counter("action", "fast-encap");

    let log = lab.dir.join("trace.json");
    let mut cmd = lab.gw.command(daemon_binary().to_str().unwrap());
    cmd.args([
        "trace",
        "--prefix",
        SIXRD_PREFIX,
        "--count",
        "1000",
        "--json",
    ]);
    let mut trace = spawn(cmd, log.clone());
    assert!(
        eventually(Duration::from_secs(5), || trace
            .output()
            .contains("# tracing prefix=")),
        "{}",
        trace.output()
    );
    // A second trace is refused while this one runs.
    let second = lab
        .gw
        .try_sh(&format!("{} trace --count 1", daemon_binary().display()));
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another trace is running"),
        "{second:?}"
    );

    let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3, "{out}");
    for (_, _, ns, dev, frame) in &provoked {
        ns.send_frames(dev, vec![frame.clone(); 2]);
    }
    let settled = eventually(Duration::from_secs(5), || {
        provoked
            .iter()
            .zip(&before)
            .all(|((k, n, ..), b)| lab.counter(k, n) >= b + 2)
    });
    assert!(settled, "{}", lab.metrics());
    std::thread::sleep(Duration::from_millis(300));
    // Ctrl-C: the daemon notices the client has gone and ends the trace.
    trace.signal(libc::SIGINT);
    let _ = trace.wait_for_exit(Duration::from_secs(5));
    let events = trace_events(&trace.output());
    for ((kind, name, ..), b) in provoked.iter().zip(&before) {
        let delta = lab.counter(kind, name) - b;
        assert_eq!(
            events_named(&events, kind, name),
            delta,
            "{kind} {name}: counted {delta}\n{}",
            trace.output()
        );
    }
    // The pings: each request encapsulated by the XDP fast path.
    let fast = lab.counter("action", "fast-encap") - fast_encap;
    assert!(fast >= 3, "{}", lab.metrics());
    assert_eq!(events_named(&events, "action", "fast-encap"), fast);
    // Stages and where packets went.
    let stage_of = |name: &str| {
        events
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["stage"].as_str().unwrap().to_string())
    };
    assert_eq!(stage_of("spoofed-source").as_deref(), Some("forwarder"));
    assert_eq!(stage_of("drop-l2-multicast").as_deref(), Some("xdp"));
    assert_eq!(
        stage_of("proto41-wrong-interface").as_deref(),
        Some("slow-path")
    );
    let encap = events.iter().find(|e| e["name"] == "fast-encap").unwrap();
    let ce1_mac: Vec<String> = ce_mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        encap["to"],
        format!("gw-wan next hop {}", ce1_mac.join(":")),
        "{encap}"
    );
    assert_eq!(encap["interface"], "gw-lan", "{encap}");
    // As it left: the outer header, with the lengths of the whole packet
    // (138-byte frame: 124 + 14), not of the captured start.
    let packet = encap["packet"].as_str().unwrap();
    assert!(
        packet.starts_with(&format!(
            "IPv4 {BR_V4} -> {CE1_V4} protocol 41 length 124 [IPv6 {LAN_SERVER}"
        )),
        "{packet}"
    );
    assert!(
        eventually(Duration::from_secs(3), || lab
            .daemon_output()
            .contains("trace (count=1000")),
        "{}",
        lab.daemon_output()
    );

    // --count bounds a trace: it ends by itself.
    let mut cmd = lab.gw.command(daemon_binary().to_str().unwrap());
    cmd.args(["trace", "--ce", CE1_V4, "--count", "2"]);
    let mut bounded = spawn(cmd, lab.dir.join("trace2.txt"));
    std::thread::sleep(Duration::from_millis(500));
    let (n, _) = ping(&lab.lan, &format!("-6 -c 3 -i 0.2 {CE1_V6}"));
    assert_eq!(n, 3);
    let status = bounded.wait_for_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{}", bounded.output());
    let lines: Vec<String> = bounded
        .output()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 2, "{}", bounded.output());
    assert!(
        lines[0].contains(": action fast-encap -> gw-wan"),
        "{lines:?}"
    );
}

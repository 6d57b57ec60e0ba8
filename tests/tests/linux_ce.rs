//! Interoperability with real Linux 6rd CEs: the kernel's own `sit` in
//! 6rd mode, in qemu guests on the lab's VPC bridge, configured exactly as
//! SCENARIO.md's EC2 instances (CE 1), from `br-daemon ce-config` as an
//! operator would paste it (CE 2), and in a second domain that follows
//! RFC 5969 to the letter (CE 3). Needs root, qemu and a download of a
//! Debian cloud kernel (cached in target/vm-cache).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use br_tests::vm::Vm;
use br_tests::*;

const CE3_V4: &str = "10.1.2.3";
/// 2001:db8:1 | 01:0203 (10.1.2.3 without the common 10/8) :: /64
const CE3_V6: &str = "2001:db8:101:203::1";
const STRICT_BR_V6: &str = "2001:db8:1ff:ffde::1";

const STRICT_DOMAIN: &str = "\n[[domain]]\nname = \"strict\"\nprefix = \"2001:db8:100::/40\"\nipv4-mask-len = 8\nbr-ipv4 = \"10.255.255.222\"\ntcp-mss = 1100\n";

/// SCENARIO.md's CE, line by line (`ifcfg-sit1` + `rc.local`).
const SCENARIO_CE1: &[&str] = &[
    "ip tunnel add sit1 mode sit local 10.96.1.100 ttl 64",
    "ip tunnel 6rd dev sit1 6rd-prefix 2001:db8:0:f096::/64 6rd-relay_prefix 10.96.1.100/32",
    "ip link set sit1 mtu 1280 up",
    "ip -6 addr add 2001:db8:0:f096:0a60:0164::1/96 dev sit1",
    "ip -6 route add default via ::10.255.255.222 dev sit1 metric 1",
];

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn md5(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn sit_rx_errors(vm: &mut Vm) -> u64 {
    let out = vm.must("cat /sys/class/net/sit1/statistics/rx_errors");
    out.trim().lines().last().unwrap().trim().parse().unwrap()
}

#[test]
fn real_linux_ces_in_both_domains() {
    let mut lab = Lab::start(LabOptions {
        queues: 2,
        extra_config: String::new(),
        extra_domains: STRICT_DOMAIN.to_string(),
        emulated_ces: false,
        ce_emulator: env!("CARGO_BIN_EXE_ce-emulator").into(),
        // As deployed: plain packets take the XDP fast path.
        fast_path_peers: true,
    });
    lab.gw.sh("ip -4 addr add 10.1.0.1/16 dev gw-wan");
    let ce2_lines = ce_config(&lab.config, CE2_V4, "vpc");
    let ce3_lines = ce_config(&lab.config, CE3_V4, "strict");
    assert!(
        ce3_lines
            .iter()
            .any(|l| l.contains("6rd-relay_prefix 10.0.0.0/8")),
        "{ce3_lines:?}"
    );

    // Boot the three guests in parallel (TCG: a few seconds each).
    let guests = [
        ("ce1", "tap1", "52:54:00:00:01:64"),
        ("ce2", "tap2", "52:54:00:00:01:65"),
        ("ce3", "tap3", "52:54:00:01:02:03"),
    ];
    let vpc = &lab.vpc;
    let mut vms: Vec<Vm> = std::thread::scope(|s| {
        let handles: Vec<_> = guests
            .iter()
            .map(|(name, tap, mac)| s.spawn(move || Vm::boot(vpc, name, tap, "vpcbr", mac)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("boot"))
            .collect()
    });
    let [ce1, ce2, ce3] = &mut vms[..] else {
        unreachable!()
    };

    for (vm, v4, gw, lines) in [
        (
            &mut *ce1,
            CE1_V4,
            GW_WAN_V4,
            SCENARIO_CE1
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        ),
        (&mut *ce2, CE2_V4, GW_WAN_V4, ce2_lines),
        (&mut *ce3, CE3_V4, "10.1.0.1", ce3_lines),
    ] {
        vm.must(&format!(
            "ip link set eth0 up && ip addr add {v4}/16 dev eth0 && ip route add default via {gw}"
        ));
        for line in lines {
            vm.must(&line);
        }
    }

    // The guests' state matches SCENARIO.md.
    let tunnel = ce1.must("ip tunnel show sit1");
    assert!(
        squash(&tunnel).contains("sit1: ipv6/ip remote any local 10.96.1.100 ttl 64 6rd-prefix 2001:db8:0:f096::/64 6rd-relay_prefix 10.96.1.100/32"),
        "{tunnel}"
    );
    let routes = ce1.must("ip -6 route show");
    assert!(
        squash(&routes).contains("default via ::10.255.255.222 dev sit1 metric 1"),
        "{routes}"
    );
    let tunnel2 = ce2.must("ip tunnel show sit1");
    assert!(
        squash(&tunnel2).contains("6rd-relay_prefix 10.96.1.101/32"),
        "{tunnel2}"
    );

    // Each CE reaches the LAN server, 0% loss, the BR one hop.
    for vm in [&mut *ce1, &mut *ce2, &mut *ce3] {
        let (_, out) = vm.run(
            &format!("ping -6 -c 3 -W 2 {LAN_SERVER}"),
            Duration::from_secs(30),
        );
        assert_eq!(
            busybox_received(&out),
            3,
            "{} -> LAN\n{out}\n{}",
            vm.name,
            lab.metrics()
        );
        assert!(out.contains("ttl=63"), "{out}");
    }
    // ... and the LAN server reaches each CE.
    for dst in [CE1_V6, CE2_V6, CE3_V6] {
        let (n, out) = ping(&lab.lan, &format!("-6 -c 3 -i 0.3 {dst}"));
        assert_eq!(n, 3, "LAN -> {dst}\n{out}");
        assert!(out.contains("ttl=63"), "{out}");
    }

    // TCP, 1 MiB each way, CE 1 and the LAN server.
    let (_, out) = ce1.run(
        "dd if=/dev/urandom of=/tmp/up bs=1024 count=1024 2>/dev/null; md5sum /tmp/up",
        Duration::from_secs(30),
    );
    let up_md5 = out
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let server = lab.lan.spawn_in(|| {
        let l = std::net::TcpListener::bind(format!("[{LAN_SERVER}]:5001")).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut got = vec![0u8; 1 << 20];
        c.read_exact(&mut got).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    ce1.run(
        &format!("nc {LAN_SERVER} 5001 < /tmp/up"),
        Duration::from_secs(60),
    );
    let got = server.join().unwrap();
    assert_eq!(md5(&got), up_md5, "CE1 -> LAN transfer");

    let down: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    ce1.must("(nc -l -p 5002 > /tmp/down &) ; sleep 1");
    let data = down.clone();
    lab.lan.enter(move || {
        let mut c = std::net::TcpStream::connect_timeout(
            &format!("[{CE1_V6}]:5002").parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        c.write_all(&data).unwrap();
    });
    std::thread::sleep(Duration::from_secs(2));
    let out = ce1.must("md5sum /tmp/down");
    assert!(out.contains(&md5(&down)), "LAN -> CE1 transfer: {out}");
    // Both transfers took the XDP fast path: 1 MiB is over 700 segments.
    assert!(
        lab.counter("action", "fast-encap") > 700 && lab.counter("action", "fast-decap") > 700,
        "{}",
        lab.metrics()
    );

    // Packet Too Big for LAN packets over the CE's MTU; the retry gets through.
    let (n, out) = ping(&lab.lan, &format!("-6 -c 1 -s 1300 -M do {CE1_V6}"));
    assert_eq!(n, 0, "{out}");
    assert!(out.contains("mtu=1280"), "{out}");
    let (n, out) = ping(&lab.lan, &format!("-6 -c 2 -i 0.3 -s 1300 {CE1_V6}"));
    assert!(n >= 1, "after Packet Too Big\n{out}");

    // A CE sending from a source outside its own delegated prefix (CE 2's).
    let spoofed_before = lab.counter("reason", "spoofed-source");
    ce1.must("ip -6 addr add 2001:db8:0:f096:a60:165::99/128 dev sit1");
    let (_, out) = ce1.run(
        &format!("ping -6 -c 2 -W 1 -I 2001:db8:0:f096:a60:165::99 {LAN_SERVER}"),
        Duration::from_secs(20),
    );
    assert_eq!(busybox_received(&out), 0, "{out}");
    assert_eq!(lab.counter("reason", "spoofed-source"), spoofed_before + 2);
    ce1.must("ip -6 addr del 2001:db8:0:f096:a60:165::99/128 dev sit1");

    // CE to CE in the SCENARIO domain never reaches the BR: with a /32
    // relay prefix, sit maps every 6rd-prefix destination to the CE's own
    // IPv4 address (try_6rd runs before the default route), so CE 1's
    // packets for CE 2, or for the BR's own 6rd address, go to CE 1 itself.
    let proto41 = |lab: &Lab| {
        lab.counter("action", "redirect-proto41")
            + lab.counter("action", "fast-decap")
            + lab.counter("action", "fast-hairpin")
    };
    let steered = proto41(&lab);
    for dst in [CE2_V6, BR_V6] {
        let (_, out) = ce1.run(&format!("ping -6 -c 2 -W 1 {dst}"), Duration::from_secs(20));
        assert_eq!(busybox_received(&out), 0, "CE1 -> {dst}\n{out}");
    }
    assert_eq!(proto41(&lab), steered, "nothing reached the BR");

    // ICMPv6 errors the BR sends to CE 1 come from its 6rd address, inside
    // CE 1's 6rd prefix; sit accepts such a source only from the IPv4
    // address it would embed, CE 1's own (is_spoofed_6rd), so it drops them.
    let errors = sit_rx_errors(ce1);
    let exceeded = lab.counter("path", "icmp-time-exceeded");
    // (busybox ping has no hop-limit option for IPv6: lower the interface's.)
    ce1.must("echo 1 > /proc/sys/net/ipv6/conf/sit1/hop_limit");
    ce1.run(
        &format!("ping -6 -c 1 -W 1 {LAN_SERVER}"),
        Duration::from_secs(20),
    );
    ce1.must("echo 64 > /proc/sys/net/ipv6/conf/sit1/hop_limit");
    assert_eq!(lab.counter("path", "icmp-time-exceeded"), exceeded + 1);
    assert_eq!(
        sit_rx_errors(ce1),
        errors + 1,
        "CE 1's sit drops the BR's Time Exceeded"
    );

    // With icmp-source outside the 6rd prefix (the BR's LAN address), CE 1
    // accepts the same error. Set by a reload, as an operator would.
    let text = std::fs::read_to_string(&lab.config).unwrap().replacen(
        "br-ipv4 = \"10.255.255.222\"\n",
        &format!("br-ipv4 = \"10.255.255.222\"\nicmp-source = \"{GW_LAN}\"\n"),
        1,
    );
    std::fs::write(&lab.config, text).unwrap();
    lab.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(5), || lab
        .daemon_output()
        .matches("reloaded")
        .count()
        == 1));
    let snmp = |vm: &mut Vm| -> u64 {
        let out = vm.must("grep Icmp6InTimeExcds /proc/net/snmp6");
        out.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (errors, received_te) = (sit_rx_errors(ce1), snmp(ce1));
    ce1.must("echo 1 > /proc/sys/net/ipv6/conf/sit1/hop_limit");
    ce1.run(
        &format!("ping -6 -c 1 -W 1 {LAN_SERVER}"),
        Duration::from_secs(20),
    );
    ce1.must("echo 64 > /proc/sys/net/ipv6/conf/sit1/hop_limit");
    assert_eq!(sit_rx_errors(ce1), errors, "accepted this time");
    assert_eq!(
        snmp(ce1),
        received_te + 1,
        "CE 1 received the Time Exceeded"
    );

    // The RFC domain: CE 3 sends to the BR's own 6rd address directly (sit
    // maps it to 10.255.255.222 itself) and accepts the answer, whose
    // inner source embeds the outer one.
    let (_, out) = ce3.run(
        &format!("ping -6 -c 2 -W 2 {STRICT_BR_V6}"),
        Duration::from_secs(20),
    );
    assert_eq!(
        busybox_received(&out),
        2,
        "CE 3 -> its BR\n{out}\n{}",
        lab.metrics()
    );
    // Across domains the BR hairpins both ways (RFC 5969 §8), and both
    // CEs accept: the inner source is outside their own 6rd prefix.
    let hairpins =
        |lab: &Lab| lab.counter("path", "hairpinned") + lab.counter("action", "fast-hairpin");
    let hairpinned = hairpins(&lab);
    let (_, out) = ce3.run(
        &format!("ping -6 -c 2 -W 2 {CE1_V6}"),
        Duration::from_secs(20),
    );
    assert_eq!(
        busybox_received(&out),
        2,
        "CE 3 -> CE 1\n{out}\n{}",
        lab.metrics()
    );
    assert_eq!(hairpins(&lab), hairpinned + 4);

    // TCP MSS clamping: "strict" has tcp-mss = 1100, "vpc" none. The LAN
    // server sees CE 3's SYN-ACK announce the clamp and CE 1's its own
    // (sit1's MTU 1280 - 60); the transfers complete.
    let clamped = lab.counter("tcp-mss", "clamped");
    let log = lab.dir.join("mss.tcpdump");
    let capture = lab.lan.tcpdump("lan0", "ip6 and tcp", &log);
    for (vm, dst, port) in [(&mut *ce3, CE3_V6, 5003), (&mut *ce1, CE1_V6, 5004)] {
        vm.must(&format!("(nc -l -p {port} > /tmp/mss &) ; sleep 1"));
        let data = down[..256 * 1024].to_vec();
        lab.lan.enter(move || {
            let mut c = std::net::TcpStream::connect_timeout(
                &format!("[{dst}]:{port}").parse().unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
            c.write_all(&data).unwrap();
        });
        std::thread::sleep(Duration::from_secs(2));
        let out = vm.must("md5sum /tmp/mss");
        assert!(
            out.contains(&md5(&down[..256 * 1024])),
            "LAN -> {dst} with MSS clamping: {out}"
        );
    }
    let syn_acks: Vec<String> = capture
        .output()
        .lines()
        .filter(|l| l.contains("Flags [S.]"))
        .map(String::from)
        .collect();
    drop(capture);
    let announced = |from: &str| {
        syn_acks
            .iter()
            .find(|l| l.contains(&format!("{from}.")))
            .and_then(|l| l.split("mss ").nth(1))
            .and_then(|m| m.split([',', ']']).next())
            .map(String::from)
    };
    assert_eq!(announced(CE3_V6).as_deref(), Some("1100"), "{syn_acks:?}");
    assert_eq!(announced(CE1_V6).as_deref(), Some("1220"), "{syn_acks:?}");
    // CE 3's SYN-ACK and the LAN server's SYN to it (1440 -> 1100).
    assert_eq!(
        lab.counter("tcp-mss", "clamped"),
        clamped + 2,
        "{}",
        lab.metrics()
    );

    drop(vms);
    let summary = lab.stop_daemon();
    assert!(!summary.contains("MISMATCH"), "{summary}");
}

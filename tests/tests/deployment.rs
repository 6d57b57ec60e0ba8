//! SCENARIO.md's real deployment, end to end, on the kernels its users
//! run: br-daemon runs inside a qemu guest of each Debian 12 cloud kernel
//! (6.1, 6.12), which holds in its own namespaces the LAN server, the
//! gateway (br-daemon and the IPsec endpoint towards the VPC), the wire,
//! the VPC's VPN gateway and two kernel `sit` CEs behind it (CE 1 exactly
//! as SCENARIO.md, CE 2 from `br-daemon ce-config`). The topology and the
//! IPsec modes are `tests/guest/deployment.sh`.
//!
//! In every mode (no IPsec; policy-based with routes in main; policy-based
//! with strongSwan's table 220; route-based with an xfrm interface; VTI),
//! with the XDP fast path on and off: pings both ways with the BR as one
//! hop, 1 MiB TCP each way (MD5), a Packet Too Big that reaches the LAN
//! sender and a retry that gets through, a spoofed CE source dropped and
//! counted, and a capture on the wire that shows no plaintext protocol 41
//! in the IPsec modes (and ESP carrying the traffic).

use std::path::Path;
use std::time::{Duration, Instant};

use br_tests::vm::{GuestKernel, Vm};
use br_tests::{
    busybox_received, ce_config, counter_in, daemon_binary, CE1_V6, CE2_V4, CE2_V6, LAN_SERVER,
};

const MODES: &[&str] = &["none", "policy", "table220", "xfrmi", "vti"];

/// The SCENARIO domain as the guest's daemon has it, for `ce-config`.
const CONFIG: &str = "[relay]\ninterfaces = [\"gw-lan\", \"gw-wan\"]\n\n[[domain]]\nname = \"vpc\"\nprefix = \"2001:db8:0:f096::/64\"\nipv4-mask-len = 0\nbr-ipv4 = \"10.255.255.222\"\n";

struct Guest {
    vm: Vm,
}

impl Guest {
    /// Runs one of deployment.sh's functions (or any command after
    /// sourcing it): (status, output).
    fn run(&mut self, cmd: &str, limit: Duration) -> (i32, String) {
        self.vm.run(&format!(". /deployment.sh; {cmd}"), limit)
    }

    fn must(&mut self, cmd: &str) -> String {
        let (status, out) = self.run(cmd, Duration::from_secs(120));
        assert_eq!(status, 0, "{}: `{cmd}` failed:\n{out}", self.vm.name);
        out
    }

    fn metrics(&mut self) -> String {
        self.must("metrics")
    }
}

/// "proto41 N esp M" from capture_stop.
fn capture_counts(out: &str) -> (u64, u64) {
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} count in {out}"))
    };
    (at("proto41"), at("esp"))
}

fn boot(kernel: GuestKernel) -> Guest {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/deployment.sh");
    let daemon = daemon_binary();
    // The test XDP object, for its xdp_pass program on the gateway's peers.
    // One file per guest: both kernels' tests boot at once.
    let pass = std::env::temp_dir().join(format!(
        "br6rd-xdp-pass-{}-{}.o",
        std::process::id(),
        kernel.label()
    ));
    std::fs::write(&pass, br_ebpf::bench_object()).unwrap();
    let vm = Vm::boot_standalone(
        kernel,
        &format!("gateway-{}", kernel.label()),
        &[
            ("/usr/bin/br-daemon", &daemon),
            ("/deployment.sh", &script),
            ("/xdp_pass.o", &pass),
        ],
        1024,
    );
    let _ = std::fs::remove_file(&pass);
    Guest {
        vm: vm.expect("boot the gateway guest"),
    }
}

/// One mode with the fast path on or off: every check, then the capture.
fn check_mode(g: &mut Guest, kernel: GuestKernel, mode: &str, fast: bool) {
    let ipsec = mode != "none";
    let what = format!("{mode}, xdp-fast-path = {fast}");
    // As the systemd unit runs it: only the unit's capabilities.
    let caps = br_tests::unit_capabilities().join(",+");
    let log = g.must(&format!(
        "daemon_start {fast} +{caps} && cat /tmp/daemon.log"
    ));
    assert!(
        log.contains("CapEff:\t000000c000007000"),
        "{what}: the daemon holds the unit's capabilities only:\n{log}"
    );
    if ipsec {
        assert!(
            log.contains("CEs in 10.96.0.0/16 (out 10.255.255.222/32 -> 10.96.0.0/16 esp tunnel 192.0.2.1 -> 192.0.2.2"),
            "{what}: the start-up log names the IPsec coverage:\n{log}"
        );
    } else {
        assert!(log.contains("all go direct"), "{what}:\n{log}");
    }
    g.must("capture_start");

    // Pings both ways, the BR one hop (64 -> 63).
    for (from, to) in [
        ("lan", CE1_V6),
        ("lan", CE2_V6),
        ("ce1", LAN_SERVER),
        ("ce2", LAN_SERVER),
    ] {
        let (_, out) = g.run(
            &format!("nsx {from} ping -6 -c 3 -W 2 {to}"),
            Duration::from_secs(30),
        );
        assert_eq!(busybox_received(&out), 3, "{what}: {from} -> {to}\n{out}");
        assert!(out.contains("ttl=63"), "{what}: {from} -> {to}\n{out}");
    }

    // 1 MiB of TCP each way, checksummed.
    for (from, to, port, listener) in [
        ("ce1", LAN_SERVER, 5001, "lan"),
        ("lan", CE1_V6, 5002, "ce1"),
    ] {
        let out = g.must(&format!("transfer {from} {to} {port} {listener}"));
        let sums: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("sent "))
            .unwrap_or_else(|| panic!("{what}: no sums in {out}"))
            .split_whitespace()
            .collect();
        assert_eq!(sums[1], sums[3], "{what}: {from} -> {to} TCP\n{out}");
    }

    // Packet Too Big: the first oversized echo dies at the BR, the LAN
    // server learns the tunnel MTU, and the retry gets through.
    let ptb_before = counter_in(&g.metrics(), "path", "icmp-packet-too-big");
    let (_, first) = g.run(
        &format!("nsx lan ping -6 -c 1 -W 2 -s 1300 {CE2_V6}"),
        Duration::from_secs(20),
    );
    let metrics = g.metrics();
    assert_eq!(
        counter_in(&metrics, "path", "icmp-packet-too-big"),
        ptb_before + 1,
        "{what}: {first}\n{metrics}"
    );
    let route = g.must(&format!("nsx lan ip -6 route get {CE2_V6}"));
    assert!(
        route.contains("mtu 1280"),
        "{what}: PTB reached the LAN server: {route}"
    );
    // Through ESP the WAN path is shorter still: the CE's first reply
    // (sit sets DF) may die at the VPN gateway, which tells it the ESP
    // path MTU; the later ones get through.
    let (_, retry) = g.run(
        &format!("nsx lan ping -6 -c 3 -W 2 -s 1300 {CE2_V6}"),
        Duration::from_secs(20),
    );
    let expected = if ipsec { 2 } else { 3 };
    assert!(
        busybox_received(&retry) >= expected,
        "{what}: retry after PTB\n{retry}"
    );

    // A CE sending from CE 2's prefix: dropped and counted.
    let spoofed = counter_in(&g.metrics(), "reason", "spoofed-source");
    g.must("nsx ce1 ip -6 addr add 2001:db8:0:f096:a60:165::99/128 dev sit1");
    let (_, out) = g.run(
        &format!("nsx ce1 ping -6 -c 2 -W 1 -I 2001:db8:0:f096:a60:165::99 {LAN_SERVER}"),
        Duration::from_secs(20),
    );
    g.must("nsx ce1 ip -6 addr del 2001:db8:0:f096:a60:165::99/128 dev sit1");
    assert_eq!(busybox_received(&out), 0, "{what}: spoofed\n{out}");
    let metrics = g.metrics();
    assert_eq!(
        counter_in(&metrics, "reason", "spoofed-source"),
        spoofed + 2,
        "{what}\n{metrics}"
    );

    // What crossed the wire.
    let (proto41, esp) = capture_counts(&g.must("capture_stop"));
    let encap =
        counter_in(&metrics, "path", "encapsulated") + counter_in(&metrics, "action", "fast-encap");
    if ipsec {
        assert_eq!(
            proto41, 0,
            "{what}: plaintext protocol 41 on the WAN\n{metrics}"
        );
        assert!(esp > 1400, "{what}: ESP carried it ({esp})\n{metrics}");
        assert_eq!(
            counter_in(&metrics, "action", "fast-encap"),
            0,
            "{what}\n{metrics}"
        );
        assert!(
            counter_in(&metrics, "io", "tx-kernel-ipsec") >= encap && encap > 700,
            "{what}: every encapsulated packet went to the kernel's IPsec\n{metrics}"
        );
        if fast {
            assert!(
                counter_in(&metrics, "declined", "ipsec") > 700,
                "{what}\n{metrics}"
            );
        }
    } else {
        assert!(
            proto41 > 1400,
            "{what}: {proto41} protocol-41 packets\n{metrics}"
        );
        assert_eq!(esp, 0, "{what}");
        assert_eq!(
            counter_in(&metrics, "io", "tx-kernel-ipsec"),
            0,
            "{what}\n{metrics}"
        );
        if fast {
            // The fast path carried the plain traffic.
            assert!(
                counter_in(&metrics, "action", "fast-encap") > 700,
                "{what}\n{metrics}"
            );
            assert!(
                counter_in(&metrics, "action", "fast-decap") > 700,
                "{what}\n{metrics}"
            );
        }
    }
    let summary = g.must("daemon_stop");
    assert!(
        summary.contains("forwarder: packets in") && !summary.contains("MISMATCH"),
        "{what}: {summary}"
    );
    // How the daemon knew the egresses take redirected frames.
    let method = match kernel {
        GuestKernel::Debian6_1 => "known from the drivers (this kernel has no xdp-features)",
        GuestKernel::Debian6_12 => "known from the devices' xdp-features",
    };
    assert!(summary.contains(method), "{what}: {summary}");
    // VLAN tags the driver strips: read by device-bound copies on 6.12;
    // on 6.1 the shared program runs and the operator is told.
    let (vlan_seen, vlan_blind) = (
        "XDP reads VLAN tags the driver strips",
        "strips VLAN tags and XDP cannot read them here",
    );
    match kernel {
        GuestKernel::Debian6_1 => assert!(
            summary.contains(vlan_blind) && !summary.contains(vlan_seen),
            "{what}: {summary}"
        ),
        GuestKernel::Debian6_12 => assert!(
            summary.contains(vlan_seen) && !summary.contains(vlan_blind),
            "{what}: {summary}"
        ),
    }
    assert!(
        summary.contains("XDP fast path may transmit on ifindex"),
        "{what}: {summary}"
    );
    // The next run starts with an empty route cache on the LAN server.
    g.must("nsx lan ip -6 route flush cache");
}

fn deployment(kernel: GuestKernel) {
    let started = Instant::now();
    let mut g = boot(kernel);
    // The peers take redirected frames by GRO; before 6.3 the daemon can
    // only see an XDP program there.
    let peers = match kernel {
        GuestKernel::Debian6_1 => "xdp",
        GuestKernel::Debian6_12 => "gro",
    };
    g.must(&format!("topology {peers}"));
    let dir = std::env::temp_dir().join(format!(
        "br6rd-deploy-{}-{}",
        std::process::id(),
        kernel.label()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("br.toml");
    std::fs::write(&config, CONFIG).unwrap();
    for line in ce_config(&config, CE2_V4, "vpc") {
        g.must(&format!("nsx ce2 {line}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for mode in MODES {
        g.must(&format!("mode_setup {mode}"));
        for fast in [true, false] {
            let t = Instant::now();
            check_mode(&mut g, kernel, mode, fast);
            eprintln!(
                "deployment on {}: {mode}, fast path {fast}: passed in {:.1} s",
                kernel.label(),
                t.elapsed().as_secs_f64()
            );
        }
        g.must("mode_clear");
    }
    eprintln!(
        "deployment on {}: every mode passed in {:.0} s",
        kernel.label(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn deployment_on_debian_6_12() {
    deployment(GuestKernel::Debian6_12);
}

#[test]
fn deployment_on_debian_6_1() {
    deployment(GuestKernel::Debian6_1);
}

/// For debugging by hand: boots the gateway guest (6.12, or 6.1 with
/// `BR_GUEST_KERNEL=6.1`), runs each line of the file `BR_GUEST_SCRIPT`
/// after sourcing deployment.sh and prints what it printed:
/// `BR_GUEST_SCRIPT=/tmp/steps.sh cargo test --release -p br-tests --test
/// deployment -- --ignored --nocapture`.
#[test]
#[ignore]
fn guest_by_hand() {
    let kernel = match std::env::var("BR_GUEST_KERNEL").as_deref() {
        Ok("6.1") => GuestKernel::Debian6_1,
        _ => GuestKernel::Debian6_12,
    };
    let steps = std::env::var("BR_GUEST_SCRIPT").expect("BR_GUEST_SCRIPT: a file of commands");
    let mut g = boot(kernel);
    for step in std::fs::read_to_string(steps).unwrap().lines() {
        if step.trim().is_empty() {
            continue;
        }
        let t = Instant::now();
        let (status, out) = g.run(step, Duration::from_secs(300));
        println!(
            "$ {step}\n{out}[status {status}, {:.1} s]",
            t.elapsed().as_secs_f64()
        );
    }
}

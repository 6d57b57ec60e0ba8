//! The demo lab of `cargo xtask run` (which installs what it needs and
//! builds this first): the SCENARIO.md lab in network namespaces (the same
//! one the tests use), the daemon on the gateway, and pings crossing it
//! both ways and between two CEs, with the counters.
//!
//! `br-demo [--duration SECONDS]`: without a duration, until Ctrl-C.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use br_tests::{ping, Lab, LabOptions, CE1_V6, CE2_V6, LAN_SERVER};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let duration: Option<u64> = match args.get(1).map(String::as_str) {
        Some("--duration") => Some(
            args.get(2)
                .and_then(|s| s.parse().ok())
                .context("--duration SECONDS")?,
        ),
        Some(other) => bail!("usage: br-demo [--duration SECONDS] (not {other:?})"),
        None => None,
    };
    let target = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    std::env::set_var("BR_DAEMON_BIN", target.join("br-daemon"));
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    println!("Building the lab (SCENARIO.md addresses):");
    println!("  LAN server  {LAN_SERVER}   (namespace lan)");
    println!("  gateway     br-daemon on gw-lan + gw-wan, BR 10.255.255.222 / 2001:db8:0:f096:aff:ffde::1");
    println!("  CE 1        10.96.1.100 -> {CE1_V6}/96  (namespace ce1)");
    println!("  CE 2        10.96.1.101 -> {CE2_V6}/96  (namespace ce2)");
    let mut lab = Lab::start(LabOptions {
        queues: 2,
        extra_config: String::new(),
        extra_domains: String::new(),
        emulated_ces: true,
        ce_emulator: target.join("ce-emulator"),
        fast_path_peers: true,
    });
    println!("br-daemon is running with {}:", lab.config.display());
    println!("{}", std::fs::read_to_string(&lab.config)?);
    match duration {
        Some(s) => println!("Running for {s} s."),
        None => println!("Pinging every 2 s; Ctrl-C stops and tears the lab down."),
    }

    let checks: [(&str, &br_tests::Netns, String); 3] = [
        ("LAN -> CE1      ", &lab.lan, CE1_V6.to_string()),
        ("CE1 -> LAN      ", &lab.ce1, LAN_SERVER.to_string()),
        ("CE1 -> CE2 (hairpin)", &lab.ce1, CE2_V6.to_string()),
    ];
    let total_checks = checks.len();
    let start = Instant::now();
    let mut failures = 0;
    let mut rounds = 0;
    'outer: loop {
        rounds += 1;
        for (what, ns, dst) in &checks {
            let (n, out) = ping(ns, &format!("-6 -c 1 {dst}"));
            let rtt = out
                .lines()
                .find_map(|l| l.split("time=").nth(1))
                .unwrap_or("-");
            let ttl = out
                .lines()
                .find_map(|l| l.split("ttl=").nth(1)?.split(' ').next())
                .unwrap_or("-");
            if n == 1 {
                println!("  ok    {what} {dst}  ttl={ttl} time={rtt}");
            } else {
                failures += 1;
                println!("  FAIL  {what} {dst}\n{out}");
            }
        }
        println!(
            "  counters: XDP fast path: encapsulated {} decapsulated {} hairpinned {}; \
             forwarder: encapsulated {} decapsulated {} hairpinned {} dropped {}",
            lab.counter("action", "fast-encap"),
            lab.counter("action", "fast-decap"),
            lab.counter("action", "fast-hairpin"),
            lab.counter("path", "encapsulated"),
            lab.counter("path", "decapsulated"),
            lab.counter("path", "hairpinned"),
            lab.metrics()
                .lines()
                .filter(|l| l.starts_with("br6rd_dropped_packets_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        );
        let deadline = duration.map(Duration::from_secs);
        for _ in 0..20 {
            if INTERRUPTED.load(Ordering::SeqCst) || deadline.is_some_and(|d| start.elapsed() >= d)
            {
                break 'outer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(checks);
    println!("\nStopping br-daemon (SIGTERM):");
    let summary = lab.stop_daemon();
    println!(
        "{}",
        summary
            .lines()
            .skip_while(|l| !l.starts_with("br-daemon counters"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(lab);
    let leftovers = Command::new("ip").args(["netns", "list"]).output()?;
    let leftovers = String::from_utf8_lossy(&leftovers.stdout);
    println!(
        "Lab torn down{}.",
        if leftovers.contains("-gw") {
            " (some namespaces remain!)"
        } else {
            ""
        }
    );
    if failures > 0 {
        bail!("{failures} of {} pings failed", rounds * total_checks);
    }
    println!("All {} pings crossed the BR.", rounds * total_checks);
    Ok(())
}

//! End-to-end tests of the daemon in the SCENARIO.md lab (network
//! namespaces, veth with two queues, emulated CEs). Need root.

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

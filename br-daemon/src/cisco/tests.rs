use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::config::Config;

/// SCENARIO.md's configuration, as docs/examples keeps it.
pub(crate) const SCENARIO_CISCO: &str = include_str!("../../../docs/examples/cisco-scenario.txt");
/// A whole `show running-config` of a 1921: IPsec, ACLs, DHCP, a shut
/// down second tunnel, passwords.
const FULL_1921: &str = include_str!("../../../docs/examples/cisco-1921-full.txt");

fn parsed(toml: &str) -> Config {
    Config::parse(&toml.replace("CHANGE-ME-", "eth-"), "imported.toml").unwrap()
}

/// The line numbers of the warnings.
fn lines_of(warnings: &[String]) -> Vec<usize> {
    warnings
        .iter()
        .map(|w| w.split(':').nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn scenario_imports_cleanly() {
    let out = import(SCENARIO_CISCO, "cisco.txt").unwrap();
    let config = parsed(&out.toml);
    let d = &config.domains[0];
    assert_eq!(d.prefix(), "2001:db8:0:f096::/64".parse().unwrap());
    assert_eq!(d.br_ipv4(), "10.255.255.222".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        d.br_ipv6(),
        "2001:db8:0:f096:aff:ffde::1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        d.delegated_prefix("10.96.1.100".parse().unwrap()),
        Some("2001:db8:0:f096:a60:164::/96".parse().unwrap())
    );
    // Only the LAN address is not used: it stays on the Linux interface.
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].starts_with("cisco.txt:4: warning: not used"),
        "{:?}",
        out.warnings
    );
    assert!(out.toml.contains("CHANGE-ME-lan"));
}

#[test]
fn unused_lines_are_reported_with_their_line_in_order() {
    let text = format!("hostname br1\n{SCENARIO_CISCO}interface Tunnel0\n  tunnel path-mtu-discovery\nipv6 route 2001:db8:0:f096:1::/80 Null0\n");
    let out = import(&text, "c").unwrap();
    // hostname is boilerplate; the rest in line order.
    assert_eq!(lines_of(&out.warnings), [5, 19, 20], "{:?}", out.warnings);
}

#[test]
fn a_whole_1921_configuration_imports_with_advice_and_no_secrets() {
    let out = import(FULL_1921, "run.txt").unwrap();
    let config = parsed(&out.toml);
    // Tunnel1 is shut down: commented out, not served.
    assert_eq!(config.domains.len(), 1, "{}", out.toml);
    let d = &config.domains[0];
    assert_eq!((d.name(), d.tcp_mss()), ("tunnel0", Some(1220)));
    assert!(
        out.toml.contains("# [[domain]]\n# name = \"tunnel1\""),
        "{}",
        out.toml
    );
    let text = out.warnings.join("\n");
    // Never a secret, anywhere.
    for secret in [
        "Vpc-Pre-Shared-Secret-42",
        "$1$",
        "0822455D0A16",
        "Private-Community-7",
    ] {
        assert!(
            !text.contains(secret) && !out.toml.contains(secret),
            "{secret}:\n{text}"
        );
    }
    // Boilerplate is not warned about.
    for line in [
        "Building configuration",
        "version 15.4",
        "hostname",
        "\"end\"",
        "boot-start",
    ] {
        assert!(!text.contains(line), "{line}:\n{text}");
    }
    // Line order, and what to set up on Linux instead.
    let lines = lines_of(&out.warnings);
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    let about = |line: usize| -> Vec<&String> {
        out.warnings
            .iter()
            .filter(|w| w.starts_with(&format!("run.txt:{line}: warning: ")))
            .collect()
    };
    assert!(
        about(25)[0].contains("strongSwan"),
        "crypto isakmp policy: {text}"
    );
    assert!(
        about(29)[0].contains("crypto isakmp key <redacted>"),
        "{text}"
    );
    assert!(about(34)[0].contains("IPsec"), "crypto map: {text}");
    assert!(
        about(64)[0].contains("IPsec"),
        "crypto map on Gi0/0: {text}"
    );
    assert!(
        about(77)[0].contains("ip route add 10.96.0.0/16 via 192.0.2.2"),
        "{text}"
    );
    assert!(about(78)[0].contains("DHCP client"), "{text}");
    assert!(
        about(70)[0].contains("SLAAC"),
        "ipv6 address autoconfig: {text}"
    );
    assert!(about(50)[0].contains("shut down"), "Tunnel1: {text}");
    // The crypto block's own lines are covered by its header's warning.
    assert!(about(26).is_empty() && about(35).is_empty(), "{text}");
    // Routes: the 6rd routes of both tunnels are the daemon's own; the
    // default route belongs to the host.
    assert!(
        about(82).is_empty() && about(83).is_empty() && about(84).is_empty(),
        "{text}"
    );
    assert!(
        about(85)[0].contains("ip -6 route add ::/0 via 2001:DB8:0:F013::1"),
        "{text}"
    );
}

#[test]
fn a_tunnel_source_with_dhcp_gets_a_placeholder_and_a_warning() {
    let text = "interface Gi0/0\n ip address dhcp\n!\ninterface Tunnel0\n tunnel source Gi0/0\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8:100::/40\n tunnel 6rd ipv4 prefix-len 8\n";
    let out = import(text, "c").unwrap();
    assert!(
        out.toml.contains("br-ipv4 = \"CHANGE-ME-br-ipv4\""),
        "{}",
        out.toml
    );
    assert!(
        out.warnings[0].starts_with(
            "c:2: warning: Gi0/0, the tunnel source of Tunnel0, takes its address by DHCP"
        ),
        "{:?}",
        out.warnings
    );
    // check-config refuses it until it is set.
    let e = Config::parse(
        &out.toml
            .replace("CHANGE-ME-lan", "a")
            .replace("CHANGE-ME-wan", "b"),
        "x",
    )
    .unwrap_err();
    assert!(e.to_string().contains("br-ipv4"), "{e}");
}

#[test]
fn a_tunnel_address_that_is_not_the_derived_one_is_said() {
    let text = "interface Tunnel0\n ipv6 address 2001:db8:0:f096::9/64\n tunnel source 10.255.255.222\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8:0:f096::/64\n";
    let out = import(text, "c").unwrap();
    assert_eq!(
        parsed(&out.toml).domains[0].br_ipv6(),
        "2001:db8:0:f096::9".parse::<Ipv6Addr>().unwrap()
    );
    assert!(
        out.warnings[0].starts_with(
            "c:2: warning: Tunnel0 address 2001:db8:0:f096::9 is not the BR address derived"
        ),
        "{:?}",
        out.warnings
    );
}

#[test]
fn suffix_len_is_an_error_and_the_warnings_stay() {
    let text = "hostname x\nsnmp-server community S3cret RO\ninterface Tunnel0\n tunnel source 10.0.0.1\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8:100::/40\n tunnel 6rd ipv4 suffix-len 4\n";
    let failure = import(text, "c").unwrap_err();
    assert!(
        matches!(failure.error, ImportError::Invalid { line: 7, .. }),
        "{failure:?}"
    );
    assert!(
        failure
            .error
            .located("c")
            .starts_with("c:7: tunnel 6rd ipv4 suffix-len 4"),
        "{failure:?}"
    );
    assert_eq!(lines_of(&failure.warnings), [2]);
    assert!(
        failure.warnings[0].contains("community <redacted>"),
        "{failure:?}"
    );
}

#[test]
fn source_as_address_prefix_len_mtu_and_ttl() {
    let text = "interface Tunnel7\n tunnel source 192.0.2.1\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8:100::/40\n tunnel 6rd ipv4 prefix-len 8\n ipv6 mtu 1400\n tunnel ttl 30\n";
    let out = import(text, "c").unwrap();
    let config = parsed(&out.toml);
    let d = &config.domains[0];
    assert_eq!((d.ipv4_mask_len(), d.mtu(), d.ttl()), (8, 1400, 30));
    assert_eq!(d.br_ipv4(), "192.0.2.1".parse::<Ipv4Addr>().unwrap());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn adjust_mss_becomes_tcp_mss() {
    let tunnel = |mtu: u16, mss: u16| {
        format!("interface Tunnel0\n tunnel source 192.0.2.1\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8:100::/40\n ipv6 mtu {mtu}\n ipv6 tcp adjust-mss {mss}\n")
    };
    let mss = |out: &Import| parsed(&out.toml).domains[0].tcp_mss();
    let out = import(&tunnel(1480, 1400), "c").unwrap();
    assert_eq!(mss(&out), Some(1400));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    // More than fits: "auto", said on its line.
    let out = import(&tunnel(1280, 1440), "c").unwrap();
    assert_eq!(mss(&out), Some(1220));
    assert!(
        out.warnings[0].starts_with("c:6: warning: ipv6 tcp adjust-mss 1440 does not fit"),
        "{:?}",
        out.warnings
    );
    // On another interface: what to do instead.
    let lan = format!(
        "{}interface Gi0/1\n ipv6 tcp adjust-mss 1360\n",
        tunnel(1480, 1400)
    );
    let out = import(&lan, "c").unwrap();
    assert!(
        out.warnings[0].starts_with("c:8: warning: not used: Gi0/1 clamps the MSS"),
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings[0].contains("set tcp-mss = 1360"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn missing_pieces_are_errors_with_lines() {
    let error = |text: &str| import(text, "c").unwrap_err().error;
    assert_eq!(
        error("interface Gi0\n ip address 10.0.0.1 255.0.0.0\n"),
        ImportError::NoSixrdTunnel
    );
    let no_source =
        "interface Tunnel0\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8::/32\n";
    assert!(matches!(
        error(no_source),
        ImportError::Invalid { line: 1, .. }
    ));
    let dangling = "interface Tunnel0\n tunnel source Loopback9\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8::/32\n";
    assert!(matches!(
        error(dangling),
        ImportError::Invalid { line: 2, .. }
    ));
    let bad_mask = "interface lo1\n ip address 10.0.0.1 255.0.255.0\n";
    assert!(matches!(
        error(bad_mask),
        ImportError::Invalid { line: 2, .. }
    ));
}

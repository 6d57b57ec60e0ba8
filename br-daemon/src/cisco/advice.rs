//! What to say about a Cisco line the import does not turn into a key:
//! nothing (boilerplate), what to set up on the Linux gateway instead, or
//! "not used". Secrets (keys, passwords, communities) are never repeated.

/// Words after which the rest of a line is a secret.
const SECRET_WORDS: &[&str] = &[
    "key",
    "key-string",
    "password",
    "secret",
    "pre-shared-key",
    "community",
];

/// The line with every secret replaced by `<redacted>`.
pub fn redact(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words
        .iter()
        .position(|w| SECRET_WORDS.contains(&w.to_ascii_lowercase().as_str()))
    {
        Some(i) if i + 1 < words.len() => format!("{} <redacted>", words[..=i].join(" ")),
        _ => words.join(" "),
    }
}

/// What becomes of a top-level line that is not an interface or an IPv6 route.
#[derive(Debug, PartialEq, Eq)]
pub enum Global {
    /// Boilerplate of `show running-config`: said nothing about.
    Silent,
    /// A warning; `block`: its indented lines belong to it (not warned).
    Say { message: String, block: bool },
}

/// Advice for a top-level line (`l`: its words in lower case).
pub fn global(line: &str, l: &[&str]) -> Global {
    let say = |message: String, block: bool| Global::Say { message, block };
    let shown = redact(line);
    match l {
        ["building", "configuration..."]
        | ["current", "configuration", ..]
        | ["version", ..]
        | ["end"]
        | ["boot-start-marker"]
        | ["boot-end-marker"]
        | ["hostname", ..]
        | ["service", ..]
        | ["no", "service", ..]
        | ["ip", "cef"]
        | ["ipv6", "cef"]
        | ["no", "aaa", "new-model"]
        | ["no", "ip", "http", ..]
        | ["ip", "forward-protocol", ..]
        | ["ipv6", "unicast-routing"] => Global::Silent,
        ["crypto", ..] => say(
            format!(
                "{shown:?}: IPsec to the VPC: set it up on the Linux gateway (strongSwan, or ip xfrm): \
                 its policy must cover protocol 41 between br-ipv4 and the CEs; with an xfrm or VTI \
                 interface, list it in ce-interfaces (docs/configuration.md)"
            ),
            true,
        ),
        ["ip", "route", dst, mask, via, ..] => say(ipv4_route(&shown, dst, mask, via), false),
        ["access-list", ..] | ["ip", "access-list", ..] => say(
            format!(
                "{shown:?}: an ACL: the BR admits CEs by ce-ipv4-allow and ce-interfaces, an IPsec \
                 policy selects its traffic itself; other filtering belongs in the host's nftables"
            ),
            true,
        ),
        ["username", ..] | ["enable", ..] | ["line", ..] => say(
            format!("not used: {shown:?} (logins and consoles are the Linux host's)"),
            true,
        ),
        ["snmp-server", ..] => say(
            format!(
                "not used: {shown:?} (the BR's counters are on its Prometheus endpoint, /metrics)"
            ),
            false,
        ),
        _ => say(
            format!("not used: {shown:?} (no equivalent in the software BR)"),
            true,
        ),
    }
}

/// `ip route A M N`: the Linux command that does the same.
fn ipv4_route(shown: &str, dst: &str, mask: &str, via: &str) -> String {
    let len = mask
        .parse::<std::net::Ipv4Addr>()
        .map(|m| u32::from(m).leading_ones())
        .unwrap_or(32);
    let how = if via.eq_ignore_ascii_case("dhcp") {
        "its DHCP client on Linux installs it".to_string()
    } else {
        format!("ip route add {dst}/{len} via {via}")
    };
    format!("{shown:?}: an IPv4 route: keep it in the Linux gateway's routing table ({how})")
}

/// Interface lines that say nothing the BR needs.
pub fn silent_in_interface(l: &[&str]) -> bool {
    matches!(
        l,
        ["description", ..]
            | ["duplex", ..]
            | ["speed", ..]
            | ["negotiation", ..]
            | ["media-type", ..]
            | ["no", "shutdown"]
            | ["no", "ip", "address"]
    )
}

/// Advice for an interface line the import does not use.
pub fn in_interface(line: &str, l: &[&str], interface: &str) -> String {
    let shown = redact(line);
    match l {
        ["crypto", "map", ..] | ["tunnel", "protection", ..] => format!(
            "{interface}: {shown:?}: IPsec: set it up on the Linux gateway (strongSwan, or ip xfrm) \
             for the traffic of this interface; the BR's protocol 41 must be covered"
        ),
        _ => format!("not used: {interface}: {shown:?} (no equivalent in the software BR)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_repeated() {
        for (line, shown) in [
            (
                "crypto isakmp key Vpc-Secret address 192.0.2.2",
                "crypto isakmp key <redacted>",
            ),
            (
                "username admin privilege 15 secret 5 $1$abc",
                "username admin privilege 15 secret <redacted>",
            ),
            ("enable secret 5 $1$x", "enable secret <redacted>"),
            (" password 7 0822455D0A16", "password <redacted>"),
            (
                "snmp-server community Private RW",
                "snmp-server community <redacted>",
            ),
            (
                "ip address 10.0.0.1 255.0.0.0",
                "ip address 10.0.0.1 255.0.0.0",
            ),
        ] {
            assert_eq!(redact(line), shown);
        }
    }

    #[test]
    fn boilerplate_is_silent_and_work_on_linux_is_said() {
        let words = |s: &str| s.to_ascii_lowercase();
        let advice = |line: &str| {
            let lower = words(line);
            let l: Vec<&str> = lower.split_whitespace().collect();
            global(line, &l)
        };
        for line in [
            "Building configuration...",
            "version 15.4",
            "end",
            "hostname br",
        ] {
            assert_eq!(advice(line), Global::Silent, "{line}");
        }
        let Global::Say { message, .. } = advice("ip route 10.96.0.0 255.255.0.0 192.0.2.2") else {
            panic!()
        };
        assert!(
            message.contains("ip route add 10.96.0.0/16 via 192.0.2.2"),
            "{message}"
        );
        let Global::Say { message, block } = advice("crypto map VPC-MAP 10 ipsec-isakmp") else {
            panic!()
        };
        assert!(message.contains("strongSwan") && block, "{message}");
    }
}

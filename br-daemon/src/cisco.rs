//! Import of a Cisco IOS 6rd BR configuration (`tunnel mode ipv6ip 6rd`)
//! into our TOML. Each line either maps to a key, is checked against what
//! the daemon does on its own (the `Null0` route of the BR's prefix, the
//! route of the 6rd prefix to the tunnel), or is reported as not used.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::relay::{Domain, DomainSpec};

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The TOML configuration.
    pub toml: String,
    /// `line: message` for every line not used, and every doubt.
    pub warnings: Vec<String>,
}

/// Why nothing usable came out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("no interface with `tunnel mode ipv6ip 6rd` in the configuration")]
    NoSixrdTunnel,
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
}

#[derive(Default, Debug)]
struct Interface {
    /// Name as written, e.g. `Tunnel0`.
    display: String,
    line: usize,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<(Ipv6Net, usize)>,
    sixrd_mode: bool,
    source: Option<(String, usize)>,
    prefix: Option<(Ipv6Net, usize)>,
    ipv4_prefix_len: Option<u8>,
    mtu: Option<u16>,
    ttl: Option<u8>,
    /// `ipv6 tcp adjust-mss N`, with its line.
    adjust_mss: Option<(u16, usize)>,
}

/// `GigabitEthernet 0/1` and `gigabitethernet0/1` are the same interface.
fn normalize(name: &str) -> String {
    name.split_whitespace()
        .collect::<String>()
        .to_ascii_lowercase()
}

fn parse_mask(mask: &str) -> Option<u8> {
    let m: Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones() as u8)
}

/// Translates the text of a Cisco configuration.
pub fn import(text: &str, origin: &str) -> Result<Import, ImportError> {
    let mut interfaces: BTreeMap<String, Interface> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut routes: Vec<(Ipv6Net, String, usize)> = Vec::new();
    let mut warnings = Vec::new();
    let mut current: Option<String> = None;
    let invalid = |line: usize, message: String| ImportError::Invalid { line, message };

    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed == "!" || trimmed.starts_with('!') {
            if trimmed.starts_with('!') {
                current = None;
            }
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        if !indented {
            current = None;
        }
        if !indented && words[0].eq_ignore_ascii_case("interface") && words.len() >= 2 {
            let display = words[1..].join(" ");
            let key = normalize(&display);
            current = Some(key.clone());
            if !interfaces.contains_key(&key) {
                order.push(key.clone());
            }
            interfaces.entry(key).or_insert_with(|| Interface {
                display: display.replace(' ', ""),
                line,
                ..Interface::default()
            });
            continue;
        }
        if let Some(key) = current.as_ref().filter(|_| indented) {
            let iface = interfaces
                .get_mut(key)
                .expect("created on its interface line");
            let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
            let l: Vec<&str> = lower.iter().map(String::as_str).collect();
            match l.as_slice() {
                ["ip", "address", addr, mask] => {
                    let a = addr
                        .parse()
                        .map_err(|_| invalid(line, format!("{addr:?} is not an IPv4 address")))?;
                    parse_mask(mask)
                        .ok_or_else(|| invalid(line, format!("{mask:?} is not a netmask")))?;
                    iface.ipv4 = Some(a);
                }
                ["ipv6", "address", prefix] => {
                    let p = prefix.parse().map_err(|_| {
                        invalid(line, format!("{prefix:?} is not an IPv6 address/length"))
                    })?;
                    iface.ipv6 = Some((p, line));
                }
                ["tunnel", "mode", "ipv6ip", "6rd"] => iface.sixrd_mode = true,
                ["tunnel", "source", rest @ ..] if !rest.is_empty() => {
                    iface.source = Some((words[2..].join(" "), line));
                }
                ["tunnel", "6rd", "prefix", prefix] => {
                    let p = prefix
                        .parse()
                        .map_err(|_| invalid(line, format!("{prefix:?} is not an IPv6 prefix")))?;
                    iface.prefix = Some((p, line));
                }
                ["tunnel", "6rd", "ipv4", "prefix-len", n] => {
                    let n = n.parse().ok().filter(|n| *n <= 32);
                    iface.ipv4_prefix_len =
                        Some(n.ok_or_else(|| invalid(line, "prefix-len must be 0..=32".into()))?);
                }
                ["ipv6", "mtu", n] | ["tunnel", "mtu", n] => {
                    iface.mtu = Some(
                        n.parse()
                            .map_err(|_| invalid(line, format!("{n:?} is not an MTU")))?,
                    );
                }
                ["ipv6", "tcp", "adjust-mss", n] => {
                    iface.adjust_mss = Some((
                        n.parse()
                            .map_err(|_| invalid(line, format!("{n:?} is not an MSS")))?,
                        line,
                    ));
                }
                ["tunnel", "ttl", n] => {
                    iface.ttl = Some(
                        n.parse()
                            .map_err(|_| invalid(line, format!("{n:?} is not a TTL")))?,
                    );
                }
                _ => warnings.push(format!(
                    "{origin}:{line}: not used: {trimmed:?} (no equivalent in the software BR)"
                )),
            }
            continue;
        }
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        match l.as_slice() {
            ["ipv6", "unicast-routing"] => {}
            ["ipv6", "route", prefix, _target] => match prefix.parse::<Ipv6Net>() {
                Ok(p) => routes.push((p, words[3].to_string(), line)),
                Err(_) => warnings.push(format!(
                    "{origin}:{line}: not used: {trimmed:?} (not an IPv6 prefix)"
                )),
            },
            _ => warnings.push(format!(
                "{origin}:{line}: not used: {trimmed:?} (no equivalent in the software BR)"
            )),
        }
    }

    let tunnels: Vec<&Interface> = order
        .iter()
        .map(|k| &interfaces[k])
        .filter(|i| i.sixrd_mode)
        .collect();
    if tunnels.is_empty() {
        return Err(ImportError::NoSixrdTunnel);
    }
    for iface in interfaces.values().filter(|i| !i.sixrd_mode) {
        if let Some((mss, line)) = iface.adjust_mss {
            warnings.push(format!(
                "{origin}:{line}: not used: {} clamps the MSS of all TCP through it; the BR \
                 clamps 6rd traffic per domain: set tcp-mss = {mss} in the [[domain]]s whose \
                 traffic crosses it",
                iface.display
            ));
        }
        if let Some((addr, line)) = iface.ipv6 {
            warnings.push(format!(
                "{origin}:{line}: not used: {} address {addr} stays on the Linux interface (ip -6 addr add {addr} dev <lan interface>)",
                iface.display
            ));
        }
    }

    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Imported from {origin} by `br-daemon import-cisco`."
    );
    let _ = writeln!(toml, "# Check it with `br-daemon check-config FILE`; docs/configuration.md explains every key.\n");
    let _ = writeln!(toml, "[relay]");
    let _ = writeln!(
        toml,
        "# A Cisco configuration cannot know the Linux interface names: replace these"
    );
    let _ = writeln!(
        toml,
        "# with the gateway's LAN and WAN (VPC side) interfaces."
    );
    let _ = writeln!(toml, "interfaces = [\"CHANGE-ME-lan\", \"CHANGE-ME-wan\"]");
    let _ = writeln!(
        toml,
        "# Protocol 41 is accepted only here (the tunnel source's side; add the xfrm/VTI"
    );
    let _ = writeln!(toml, "# interface if the VPN is route-based).");
    let _ = writeln!(toml, "ce-interfaces = [\"CHANGE-ME-wan\"]");

    for t in tunnels {
        let (prefix, prefix_line) = t
            .prefix
            .ok_or_else(|| invalid(t.line, format!("{} has no `tunnel 6rd prefix`", t.display)))?;
        let (source, source_line) = t
            .source
            .clone()
            .ok_or_else(|| invalid(t.line, format!("{} has no `tunnel source`", t.display)))?;
        let br: Ipv4Addr = match source.parse() {
            Ok(a) => a,
            Err(_) => {
                let src_iface = interfaces.get(&normalize(&source)).ok_or_else(|| {
                    invalid(
                        source_line,
                        format!("tunnel source {source} is not an interface of this configuration"),
                    )
                })?;
                src_iface.ipv4.ok_or_else(|| {
                    invalid(
                        source_line,
                        format!("tunnel source {source} has no `ip address`"),
                    )
                })?
            }
        };
        let k = t.ipv4_prefix_len.unwrap_or(0);
        let mut spec = DomainSpec::new(&t.display.to_ascii_lowercase(), prefix, k, br);
        if let Some(mtu) = t.mtu {
            spec.mtu = mtu;
        }
        if let Some(ttl) = t.ttl {
            spec.ttl = ttl;
        }
        let (domain, _) = Domain::new(&spec).map_err(|e| invalid(prefix_line, e.to_string()))?;
        let mut br_ipv6: Option<Ipv6Addr> = None;
        if let Some((addr, line)) = t.ipv6 {
            if addr.addr() != domain.br_ipv6() {
                if domain.prefix().contains(&addr.addr()) {
                    br_ipv6 = Some(addr.addr());
                } else {
                    warnings.push(format!(
                        "{origin}:{line}: not used: {} address {addr} is outside the 6rd prefix {prefix}",
                        t.display
                    ));
                }
            }
        }
        check_routes(&routes, &domain, &t.display, origin, &mut warnings);

        let _ = writeln!(toml, "\n# From interface {} (line {}).", t.display, t.line);
        let _ = writeln!(toml, "[[domain]]");
        let _ = writeln!(toml, "name = {:?}", domain.name());
        let _ = writeln!(toml, "prefix = \"{prefix}\"");
        let _ = writeln!(toml, "ipv4-mask-len = {k}");
        let _ = writeln!(toml, "# tunnel source {source}");
        let _ = writeln!(toml, "br-ipv4 = \"{br}\"");
        if let Some(a) = br_ipv6 {
            let _ = writeln!(toml, "br-ipv6 = \"{a}\"");
        }
        let _ = writeln!(toml, "mtu = {}", domain.mtu());
        let _ = writeln!(toml, "ttl = {}", domain.ttl());
        if let Some((mss, line)) = t.adjust_mss {
            let fits = domain.mtu().saturating_sub(60);
            if mss <= fits {
                let _ = writeln!(toml, "# ipv6 tcp adjust-mss {mss}");
                let _ = writeln!(toml, "tcp-mss = {mss}");
            } else {
                warnings.push(format!(
                    "{origin}:{line}: ipv6 tcp adjust-mss {mss} does not fit the tunnel MTU \
                     {} (at most {fits}): imported as tcp-mss = \"auto\" ({fits})",
                    domain.mtu()
                ));
                let _ = writeln!(
                    toml,
                    "# ipv6 tcp adjust-mss {mss}: more than fits mtu {}",
                    domain.mtu()
                );
                let _ = writeln!(toml, "tcp-mss = \"auto\"");
            }
        }
        let _ = writeln!(
            toml,
            "# The IPv4 prefixes the CEs are in (e.g. the VPC CIDR): protocol 41 from"
        );
        let _ = writeln!(
            toml,
            "# elsewhere, and packets towards elsewhere, are dropped. Strongly advised"
        );
        let _ = writeln!(toml, "# when ipv4-mask-len is 0.");
        let _ = writeln!(toml, "# ce-ipv4-allow = [\"CHANGE-ME/16\"]");
    }
    Ok(Import { toml, warnings })
}

/// The daemon routes the 6rd prefix into the tunnel and drops the BR's own
/// delegated prefix by itself; the Cisco routes that say so are checked.
fn check_routes(
    routes: &[(Ipv6Net, String, usize)],
    domain: &Domain,
    tunnel: &str,
    origin: &str,
    warnings: &mut Vec<String>,
) {
    for (prefix, target, line) in routes {
        let to_tunnel = normalize(target) == normalize(tunnel);
        let to_null = target.eq_ignore_ascii_case("null0");
        if to_tunnel && *prefix == domain.prefix() {
            continue; // the daemon routes the 6rd prefix to its TUN interface
        }
        if to_null && Some(*prefix) == domain.br_prefix() {
            continue; // dropped and counted as br-own-prefix
        }
        if to_tunnel || to_null || domain.prefix().contains(prefix) {
            warnings.push(format!(
                "{origin}:{line}: not used: ipv6 route {prefix} {target} (the BR routes {} to the tunnel and drops its own {} by itself)",
                domain.prefix(),
                domain.br_prefix().map(|p| p.to_string()).unwrap_or_default()
            ));
        }
    }
    for (prefix, target, line) in routes {
        let related = normalize(target) == normalize(tunnel)
            || target.eq_ignore_ascii_case("null0")
            || domain.prefix().contains(prefix);
        if !related {
            warnings.push(format!(
                "{origin}:{line}: not used: ipv6 route {prefix} {target} (other routes belong in the host's routing table)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// SCENARIO.md's configuration, as docs/examples keeps it.
    pub(crate) const SCENARIO_CISCO: &str = include_str!("../../docs/examples/cisco-scenario.txt");

    #[test]
    fn scenario_imports_cleanly() {
        let out = import(SCENARIO_CISCO, "cisco.txt").unwrap();
        // As the operator would: the placeholders replaced first.
        let config =
            Config::parse(&out.toml.replace("CHANGE-ME-", "eth-"), "imported.toml").unwrap();
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
            out.warnings[0].starts_with("cisco.txt:4: not used"),
            "{:?}",
            out.warnings
        );
        assert!(out.toml.contains("CHANGE-ME-lan"));
    }

    #[test]
    fn unused_lines_are_reported_with_their_line() {
        let text = format!("hostname br1\n{SCENARIO_CISCO}interface Tunnel0\n  tunnel path-mtu-discovery\nipv6 route 2001:db8:0:f096:1::/80 Null0\n");
        let out = import(&text, "c").unwrap();
        let lines: Vec<&str> = out
            .warnings
            .iter()
            .map(|w| w.split(": ").next().unwrap())
            .collect();
        assert_eq!(lines, ["c:1", "c:19", "c:5", "c:20"], "{:?}", out.warnings);
    }

    #[test]
    fn source_as_address_prefix_len_mtu_and_ttl() {
        let text = "interface Tunnel7\n tunnel source 192.0.2.1\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8:100::/40\n tunnel 6rd ipv4 prefix-len 8\n ipv6 mtu 1400\n tunnel ttl 30\n";
        let out = import(text, "c").unwrap();
        let config = Config::parse(&out.toml.replace("CHANGE-ME-", "eth-"), "x").unwrap();
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
        let parsed = |out: &Import| {
            Config::parse(&out.toml.replace("CHANGE-ME-", "eth-"), "x")
                .unwrap()
                .domains[0]
                .tcp_mss()
        };
        let out = import(&tunnel(1480, 1400), "c").unwrap();
        assert_eq!(parsed(&out), Some(1400));
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        // More than fits: "auto", said on its line.
        let out = import(&tunnel(1280, 1440), "c").unwrap();
        assert_eq!(parsed(&out), Some(1220));
        assert!(
            out.warnings[0].starts_with("c:6: ipv6 tcp adjust-mss 1440 does not fit"),
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
            out.warnings[0].starts_with("c:8: not used: Gi0/1 clamps the MSS"),
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
        assert_eq!(
            import("interface Gi0\n ip address 10.0.0.1 255.0.0.0\n", "c"),
            Err(ImportError::NoSixrdTunnel)
        );
        let no_source =
            "interface Tunnel0\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8::/32\n";
        assert!(matches!(
            import(no_source, "c"),
            Err(ImportError::Invalid { line: 1, .. })
        ));
        let dangling = "interface Tunnel0\n tunnel source Loopback9\n tunnel mode ipv6ip 6rd\n tunnel 6rd prefix 2001:db8::/32\n";
        assert!(matches!(
            import(dangling, "c"),
            Err(ImportError::Invalid { line: 2, .. })
        ));
        let bad_mask = "interface lo1\n ip address 10.0.0.1 255.0.255.0\n";
        assert!(matches!(
            import(bad_mask, "c"),
            Err(ImportError::Invalid { line: 2, .. })
        ));
    }
}

//! Import of a Cisco IOS 6rd BR configuration (`tunnel mode ipv6ip 6rd`,
//! a whole `show running-config` of a 1921 included) into our TOML. Each
//! line either maps to a key, is checked against what the daemon does on
//! its own (the `Null0` route of the BR's prefix, the route of the 6rd
//! prefix to the tunnel), becomes advice on what to set up on Linux
//! instead (IPsec, IPv4 routes), or is reported as not used. Boilerplate is
//! passed over in silence; secrets are never repeated.

mod advice;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::relay::{Domain, DomainSpec};
use parse::{normalize, Interface, Parsed};

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The TOML configuration.
    pub toml: String,
    /// `file:line: warning: message` for every line not used, and every
    /// doubt, in line order.
    pub warnings: Vec<String>,
}

/// Why nothing usable came out; `warnings` as for a successful import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportFailure {
    pub error: ImportError,
    pub warnings: Vec<String>,
}

/// What is wrong with the configuration.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("no interface with `tunnel mode ipv6ip 6rd` in the configuration")]
    NoSixrdTunnel,
    #[error("{message}")]
    Invalid { line: usize, message: String },
}

impl ImportError {
    /// The message in the `file:line: reason` form of every other message.
    pub fn located(&self, origin: &str) -> String {
        match self {
            ImportError::Invalid { line, message } => format!("{origin}:{line}: {message}"),
            other => format!("{origin}: {other}"),
        }
    }
}

/// Warnings collected by line, given out in line order.
pub(crate) struct Warnings {
    origin: String,
    list: Vec<(usize, String)>,
}

impl Warnings {
    pub(crate) fn add(&mut self, line: usize, message: String) {
        if !message.is_empty() {
            self.list.push((line, message));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.list.sort_by_key(|(line, _)| *line);
        let origin = self.origin;
        self.list
            .into_iter()
            .map(|(line, m)| format!("{origin}:{line}: warning: {m}"))
            .collect()
    }
}

/// Translates the text of a Cisco configuration; `origin` names it in
/// messages.
pub fn import(text: &str, origin: &str) -> Result<Import, ImportFailure> {
    let mut warnings = Warnings {
        origin: origin.to_string(),
        list: Vec::new(),
    };
    let result = parse::parse(text, &mut warnings).and_then(|p| translate(&p, &mut warnings));
    let warnings = warnings.finish();
    match result {
        Ok(toml) => Ok(Import { toml, warnings }),
        Err(error) => Err(ImportFailure { error, warnings }),
    }
}

/// A tunnel turned into a domain.
struct Tunnel<'a> {
    iface: &'a Interface,
    domain: Domain,
    /// What br-ipv4 says: the address, or a placeholder (DHCP).
    br_text: String,
    source: String,
    br_ipv6: Option<Ipv6Addr>,
}

fn translate(p: &Parsed, warnings: &mut Warnings) -> Result<String, ImportError> {
    let tunnels: Vec<&Interface> = p
        .order
        .iter()
        .map(|k| &p.interfaces[k])
        .filter(|i| i.sixrd_mode)
        .collect();
    if tunnels.is_empty() {
        return Err(ImportError::NoSixrdTunnel);
    }
    for iface in p.interfaces.values().filter(|i| !i.sixrd_mode) {
        other_interface(iface, warnings);
    }
    let tunnels: Vec<Tunnel> = tunnels
        .into_iter()
        .map(|t| tunnel(t, p, warnings))
        .collect::<Result<_, _>>()?;
    check_routes(&p.routes, &tunnels, warnings);
    let mut toml = header(&warnings.origin);
    for t in &tunnels {
        let block = domain_toml(t, warnings);
        if t.iface.shutdown {
            warnings.add(
                t.iface.line,
                format!(
                    "{} is shut down on the Cisco box: imported commented out (uncomment it to serve it)",
                    t.iface.display
                ),
            );
            for line in block.lines() {
                let _ = writeln!(toml, "# {line}");
            }
        } else {
            toml.push_str(&block);
        }
    }
    Ok(toml)
}

/// What an interface that is not a 6rd tunnel leaves to Linux.
fn other_interface(iface: &Interface, warnings: &mut Warnings) {
    if let Some((mss, line)) = iface.adjust_mss {
        warnings.add(
            line,
            format!(
                "not used: {} clamps the MSS of all TCP through it; the BR clamps 6rd traffic \
                 per domain: set tcp-mss = {mss} in the [[domain]]s whose traffic crosses it",
                iface.display
            ),
        );
    }
    if let Some((addr, line)) = iface.ipv6 {
        warnings.add(
            line,
            format!(
                "not used: {} address {addr} stays on the Linux interface (ip -6 addr add {addr} dev <lan interface>)",
                iface.display
            ),
        );
    }
}

fn tunnel<'a>(
    t: &'a Interface,
    p: &Parsed,
    warnings: &mut Warnings,
) -> Result<Tunnel<'a>, ImportError> {
    let invalid = |line: usize, message: String| ImportError::Invalid { line, message };
    let (prefix, prefix_line) = t
        .prefix
        .ok_or_else(|| invalid(t.line, format!("{} has no `tunnel 6rd prefix`", t.display)))?;
    let (source, source_line) = t
        .source
        .clone()
        .ok_or_else(|| invalid(t.line, format!("{} has no `tunnel source`", t.display)))?;
    // (the address, or None when DHCP gives it)
    let br: Option<Ipv4Addr> = match source.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            let src = p.interfaces.get(&normalize(&source)).ok_or_else(|| {
                invalid(
                    source_line,
                    format!("tunnel source {source} is not an interface of this configuration"),
                )
            })?;
            match (src.ipv4, src.ipv4_dhcp) {
                (Some(a), _) => Some(a),
                (None, Some(line)) => {
                    warnings.add(
                        line,
                        format!(
                            "{}, the tunnel source of {}, takes its address by DHCP: br-ipv4 is a \
                             placeholder; set the address it has (it must not change: the CEs \
                             are configured with it)",
                            src.display, t.display
                        ),
                    );
                    None
                }
                (None, None) => {
                    return Err(invalid(
                        source_line,
                        format!("tunnel source {source} has no `ip address`"),
                    ))
                }
            }
        }
    };
    let k = t.ipv4_prefix_len.unwrap_or(0);
    // A documentation address stands in for a DHCP one, to check the rest.
    let mut spec = DomainSpec::new(
        &t.display.to_ascii_lowercase(),
        prefix,
        k,
        br.unwrap_or(Ipv4Addr::new(192, 0, 2, 1)),
    );
    if let Some(mtu) = t.mtu {
        spec.mtu = mtu;
    }
    if let Some(ttl) = t.ttl {
        spec.ttl = ttl;
    }
    let (domain, _) = Domain::new(&spec).map_err(|e| invalid(prefix_line, e.to_string()))?;
    let br_ipv6 = tunnel_address(t, &domain, prefix, br.is_some(), warnings);
    Ok(Tunnel {
        iface: t,
        domain,
        br_text: br.map_or("CHANGE-ME-br-ipv4".to_string(), |a| a.to_string()),
        source,
        br_ipv6,
    })
}

/// The tunnel's own `ipv6 address`: the BR's derived 6rd address (nothing
/// to say), another address in the prefix (br-ipv6, said), or outside it.
fn tunnel_address(
    t: &Interface,
    domain: &Domain,
    prefix: Ipv6Net,
    br_known: bool,
    warnings: &mut Warnings,
) -> Option<Ipv6Addr> {
    let (addr, line) = t.ipv6?;
    if addr.addr() == domain.br_ipv6() && br_known {
        return None;
    }
    if !domain.prefix().contains(&addr.addr()) {
        warnings.add(
            line,
            format!(
                "not used: {} address {addr} is outside the 6rd prefix {prefix}",
                t.display
            ),
        );
        return None;
    }
    if br_known {
        warnings.add(
            line,
            format!(
                "{} address {} is not the BR address derived from br-ipv4 ({}): imported as br-ipv6",
                t.display,
                addr.addr(),
                domain.br_ipv6()
            ),
        );
    }
    Some(addr.addr())
}

fn header(origin: &str) -> String {
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
    toml
}

/// The `[[domain]]` block of a tunnel.
fn domain_toml(t: &Tunnel, warnings: &mut Warnings) -> String {
    let (d, mut toml) = (&t.domain, String::new());
    let _ = writeln!(
        toml,
        "\n# From interface {} (line {}).",
        t.iface.display, t.iface.line
    );
    let _ = writeln!(toml, "[[domain]]");
    let _ = writeln!(toml, "name = {:?}", d.name());
    let _ = writeln!(toml, "prefix = \"{}\"", d.prefix());
    let _ = writeln!(toml, "ipv4-mask-len = {}", d.ipv4_mask_len());
    let _ = writeln!(toml, "# tunnel source {}", t.source);
    let _ = writeln!(toml, "br-ipv4 = \"{}\"", t.br_text);
    if let Some(a) = t.br_ipv6 {
        let _ = writeln!(toml, "br-ipv6 = \"{a}\"");
    }
    let _ = writeln!(toml, "mtu = {}", d.mtu());
    let _ = writeln!(toml, "ttl = {}", d.ttl());
    if let Some((mss, line)) = t.iface.adjust_mss {
        let fits = d.mtu().saturating_sub(60);
        if mss <= fits {
            let _ = writeln!(toml, "# ipv6 tcp adjust-mss {mss}");
            let _ = writeln!(toml, "tcp-mss = {mss}");
        } else {
            warnings.add(
                line,
                format!(
                    "ipv6 tcp adjust-mss {mss} does not fit the tunnel MTU {} (at most {fits}): \
                     imported as tcp-mss = \"auto\" ({fits})",
                    d.mtu()
                ),
            );
            let _ = writeln!(
                toml,
                "# ipv6 tcp adjust-mss {mss}: more than fits mtu {}",
                d.mtu()
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
    toml
}

/// The daemon routes each 6rd prefix into its TUN interface and drops the
/// BR's own delegated prefixes by itself: the Cisco routes that say so
/// are passed over, the ones about the tunnels that say something else
/// are reported, and every other route belongs to the host.
fn check_routes(routes: &[(Ipv6Net, String, usize)], tunnels: &[Tunnel], warnings: &mut Warnings) {
    for (prefix, target, line) in routes {
        let to_null = target.eq_ignore_ascii_case("null0");
        let to = tunnels
            .iter()
            .find(|t| normalize(target) == normalize(&t.iface.display));
        let handled = tunnels.iter().any(|t| {
            (to.is_some_and(|to| std::ptr::eq(to, t)) && *prefix == t.domain.prefix())
                || (to_null && Some(*prefix) == t.domain.br_prefix())
        });
        if handled {
            continue;
        }
        let about = to.or_else(|| tunnels.iter().find(|t| t.domain.prefix().contains(prefix)));
        let message = match about {
            Some(t) => format!(
                "not used: ipv6 route {prefix} {target} (the BR routes {} to {} and drops its own {} by itself)",
                t.domain.prefix(),
                t.iface.display,
                t.domain.br_prefix().map(|p| p.to_string()).unwrap_or_default()
            ),
            None if to_null => format!("not used: ipv6 route {prefix} {target} (a discard route belongs in the host's routing table: ip -6 route add blackhole {prefix})"),
            None => format!(
                "not used: ipv6 route {prefix} {target} (other routes belong in the host's routing table: ip -6 route add {prefix} via {target})"
            ),
        };
        warnings.add(*line, message);
    }
}

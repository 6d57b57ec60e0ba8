//! The configuration file (TOML), validated completely before anything
//! touches an interface. Every mistake is reported as `file:line: reason`;
//! unknown keys are mistakes. `docs/br-daemon.example.toml` documents each key.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use ipnet::Ipv6Net;
use serde::Deserialize;
use toml::Spanned;

use crate::relay::{Domain, DomainError, DomainSpec, DomainWarning, Domains, IcmpRate, Relay};

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (fast; veth and most NICs support it).
    Native,
    /// In the generic kernel path (works everywhere, slower).
    Generic,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Interfaces the XDP program attaches to.
    pub interfaces: Vec<String>,
    /// Interfaces that face the CEs: protocol 41 is accepted only on these
    /// (RFC 4213 §3.6). None: on every interface.
    pub ce_interfaces: Option<Vec<String>>,
    /// Receive queues (and workers) per interface.
    pub queues: u16,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Name of the TUN interface that carries the BR's own 6rd addresses.
    pub tun: String,
    /// Where counters are served (plain text and JSON over HTTP).
    pub metrics: Option<SocketAddr>,
    /// Busy-poll the AF_XDP sockets instead of sleeping in poll().
    pub busy_poll: bool,
    /// Let the XDP program encapsulate and decapsulate plain packets itself.
    pub xdp_fast_path: bool,
    /// Limit on the ICMPv6 errors each worker originates.
    pub icmp_rate: IcmpRate,
    /// The routing table where the BR announces itself while healthy
    /// (docs/anycast.md); None: no announcements.
    pub announce_table: Option<u32>,
    /// The 6rd domains.
    pub domains: Vec<Domain>,
    /// RFC SHOULDs the domains depart from, with their line.
    pub warnings: Vec<(usize, DomainWarning)>,
}

/// One mistake in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// Every mistake found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given.
    pub file: String,
    /// The mistakes, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            // Line 0: about the file as a whole (it cannot be read).
            match p.line {
                0 => write!(f, "{}: {}", self.file, p.message)?,
                line => write!(f, "{}:{line}: {}", self.file, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    relay: Option<Spanned<RawRelay>>,
    #[serde(default)]
    domain: Vec<Spanned<RawDomain>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRelay {
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    ce_interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    queues: Option<Spanned<i64>>,
    xdp_mode: Option<Spanned<String>>,
    tun: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    busy_poll: Option<bool>,
    xdp_fast_path: Option<bool>,
    icmp_errors_per_second: Option<Spanned<i64>>,
    icmp_burst: Option<Spanned<i64>>,
    announce_table: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDomain {
    name: Option<Spanned<String>>,
    prefix: Spanned<String>,
    ipv4_mask_len: Option<Spanned<i64>>,
    br_ipv4: Spanned<toml::Value>,
    br_ipv6: Option<Spanned<String>>,
    icmp_source: Option<Spanned<String>>,
    ce_ipv4_prefix: Option<Spanned<String>>,
    #[serde(default)]
    ce_ipv4_allow: Vec<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
    ttl: Option<Spanned<i64>>,
    tcp_mss: Option<Spanned<toml::Value>>,
}

/// Reports every key the configuration does not know, in file order.
/// Syntax errors are left to the parser that follows.
fn unknown_keys(lines: &mut Lines, text: &str) {
    use toml::de::{DeTable, DeValue};
    let Ok(doc) = DeTable::parse(text) else {
        return;
    };
    let mut found: Vec<(Range<usize>, String)> = Vec::new();
    let mut check = |table: &DeTable, section: &str, known: &[&str]| {
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                found.push((
                    key.span(),
                    format!(
                        "unknown key {} in {section}; it takes: {}",
                        key.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
    };
    check(doc.get_ref(), "the file", fields_of::<RawConfig>());
    for (key, value) in doc.get_ref() {
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("relay", DeValue::Table(t)) => check(t, "[relay]", fields_of::<RawRelay>()),
            ("domain", DeValue::Array(list)) => {
                for d in list.iter() {
                    if let DeValue::Table(t) = d.get_ref() {
                        check(t, "[[domain]]", fields_of::<RawDomain>());
                    }
                }
            }
            _ => {}
        }
    }
    found.sort_by_key(|(span, _)| span.start);
    for (span, message) in found {
        lines.report(span, message);
    }
}

/// The keys a configuration struct takes, as serde knows them: one list,
/// the struct's own (a deserializer that only asks for it).
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Fields {}
    impl serde::de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct AskFields;
    impl<'de> serde::Deserializer<'de> for AskFields {
        type Error = Fields;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(AskFields) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}

/// Default address of the counters endpoint.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9641";
/// Default name of the slow-path TUN interface.
pub const DEFAULT_TUN: &str = "br6rd0";

/// Collects problems with the line they are on.
struct Lines<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Lines<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn report(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line_of(span);
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    fn int<T: TryFrom<i64>>(&mut self, v: &Spanned<i64>, key: &str, lo: i64, hi: i64) -> Option<T> {
        let n = *v.get_ref();
        let out = (lo..=hi)
            .contains(&n)
            .then(|| T::try_from(n).ok())
            .flatten();
        if out.is_none() {
            self.report(
                v.span(),
                format!("{key} = {n} is out of range ({lo}..={hi})"),
            );
        }
        out
    }

    fn parse<T: std::str::FromStr>(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        what: &str,
    ) -> Option<T> {
        let out = v.get_ref().parse().ok();
        if out.is_none() {
            self.report(v.span(), format!("{key} = {:?} is not {what}", v.get_ref()));
        }
        out
    }
}

/// `(key, value)` when `line` is `key = value` with a value TOML cannot
/// take unquoted that looks like an address or prefix (digits, dots,
/// colons, slashes: `2001:db8::/64`, `10.0.0.1`).
fn unquoted_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let (key, value) = (key.trim(), value.split('#').next()?.trim());
    let address_like = value.contains([':', '/']) || value.matches('.').count() > 1;
    let plain = value
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '/'));
    (!key.is_empty() && address_like && plain).then_some((key, value))
}

fn valid_interface_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with("CHANGE-ME") {
        return Err("a placeholder left by import-cisco: put the gateway's interface name here");
    }
    if name.is_empty() || name.len() > 15 {
        return Err("Linux interface names have 1 to 15 bytes");
    }
    if name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
        || name == "."
        || name == ".."
    {
        return Err("Linux interface names cannot contain '/', ':' or spaces");
    }
    Ok(())
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &file),
            Err(e) => Err(ConfigError {
                file,
                problems: vec![Problem {
                    line: 0,
                    message: format!("cannot read the file: {e}"),
                }],
            }),
        }
    }

    /// Validates the text of a file named `file` (the name is for messages).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut lines = Lines {
            text,
            problems: Vec::new(),
        };
        // serde stops at the first unknown key: name them all first.
        unknown_keys(&mut lines, text);
        if !lines.problems.is_empty() {
            return Err(ConfigError {
                file: file.to_string(),
                problems: lines.problems,
            });
        }
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let line = text[..span.start.min(text.len())].matches('\n').count();
                let said = e.message().trim();
                let source_line = text.lines().nth(line).unwrap_or("");
                let message = match unquoted_value(source_line) {
                    Some((key, value)) => format!(
                        "{key} = {value}: addresses, prefixes and names are strings in TOML, \
                         write {key} = \"{value}\" (the TOML parser said: {said})"
                    ),
                    None if source_line.trim() == "[domain]" => format!(
                        "write [[domain]]: each 6rd domain is one entry of an array of tables \
                         (the TOML parser said: {said})"
                    ),
                    None => said.to_string(),
                };
                lines.report(span, message);
                return Err(ConfigError {
                    file: file.to_string(),
                    problems: lines.problems,
                });
            }
        };
        let config = build(&mut lines, raw);
        match config {
            Some(c) if lines.problems.is_empty() => Ok(c),
            _ => {
                lines.problems.sort_by_key(|p| p.line);
                Err(ConfigError {
                    file: file.to_string(),
                    problems: lines.problems,
                })
            }
        }
    }

    /// The relay these domains describe.
    pub fn relay(&self) -> Relay {
        let domains = Domains::new(self.domains.clone()).expect("overlaps were refused by parse()");
        Relay::new(domains, self.icmp_rate)
    }
}

fn build(lines: &mut Lines, raw: RawConfig) -> Option<Config> {
    let relay_span = raw.relay.as_ref().map(|r| r.span()).unwrap_or(0..0);
    let relay = raw.relay.map(Spanned::into_inner).unwrap_or_default();

    let interfaces = interface_list(lines, &relay.interfaces);
    if interfaces.is_empty() && relay.interfaces.is_empty() {
        lines.report(
            relay_span.clone(),
            "no interfaces in [relay]: list the LAN and WAN interfaces the XDP program attaches to \
             (interfaces = [\"eth0\", \"eth1\"])",
        );
    }
    if interfaces.len() > br_ebpf::MAX_INTERFACES as usize {
        lines.report(
            relay_span.clone(),
            format!(
                "{} interfaces: the XDP program serves at most {}",
                interfaces.len(),
                br_ebpf::MAX_INTERFACES
            ),
        );
    }
    let ce_interfaces = relay
        .ce_interfaces
        .as_ref()
        .map(|list| interface_list(lines, list.get_ref()));
    let queues = match &relay.queues {
        Some(q) => lines.int::<u16>(q, "queues", 1, 64),
        None => Some(1),
    };
    let xdp_mode = match relay
        .xdp_mode
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("native", _)) => XdpMode::Native,
        Some(("generic", _)) => XdpMode::Generic,
        Some((other, span)) => {
            lines.report(
                span,
                format!("xdp-mode = {other:?}: expected \"native\" or \"generic\""),
            );
            XdpMode::Native
        }
    };
    let tun = match &relay.tun {
        Some(t) => {
            if let Err(why) = valid_interface_name(t.get_ref()) {
                lines.report(t.span(), format!("tun = {:?}: {why}", t.get_ref()));
            }
            t.get_ref().clone()
        }
        None => DEFAULT_TUN.to_string(),
    };
    let metrics = match &relay.metrics {
        Some(m) if m.get_ref() == "off" => None,
        Some(m) => metrics_address(lines, m),
        None => Some(DEFAULT_METRICS.parse().expect("constant")),
    };
    let mut icmp_rate = IcmpRate::default();
    if let Some(v) = &relay.icmp_errors_per_second {
        icmp_rate.per_second = lines
            .int(v, "icmp-errors-per-second", 0, 1_000_000)
            .unwrap_or(0);
    }
    if let Some(v) = &relay.icmp_burst {
        icmp_rate.burst = lines.int(v, "icmp-burst", 0, 1_000_000).unwrap_or(0);
    }

    let announce_table = relay.announce_table.as_ref().and_then(|t| {
        let table = lines.int::<u32>(t, "announce-table", 1, i64::from(u32::MAX - 1))?;
        if (253..=255).contains(&table) {
            lines.report(
                t.span(),
                format!(
                    "announce-table = {table} is the kernel's default, main or local table: \
                     give the announcements a table of their own (e.g. 6969)"
                ),
            );
        }
        Some(table)
    });

    let mut domains: Vec<(Domain, Range<usize>)> = Vec::new();
    let mut warnings = Vec::new();
    if raw.domain.is_empty() {
        // Allowed: the last tunnel removed by a reload leaves a BR that
        // relays nothing, rather than one stuck on the old domains.
        warnings.push((
            lines.line_of(relay_span.clone()),
            DomainWarning {
                rule: "configuration",
                message: "no [[domain]]: the BR relays nothing (every 6rd packet goes to \
                          the kernel, which has no route into the tunnel for it)"
                    .to_string(),
            },
        ));
    }
    for (i, d) in raw.domain.iter().enumerate() {
        let span = d.span();
        let d = d.get_ref();
        let Some(spec) = domain_spec(lines, d, i) else {
            continue;
        };
        match Domain::new(&spec) {
            Ok((domain, warns)) => {
                let line = lines.line_of(span.clone());
                warnings.extend(warns.into_iter().map(|w| (line, w)));
                if let Some((other, _)) = domains.iter().find(|(o, _)| o.name() == domain.name()) {
                    lines.report(
                        d.prefix.span(),
                        format!("two domains are named {:?}", other.name()),
                    );
                }
                domains.push((domain, d.prefix.span()));
            }
            Err(e) => lines.report(span_of(d, &e), format!("domain {:?}: {e}", spec.name)),
        }
    }
    if ce_interfaces.is_none() && !domains.is_empty() {
        warnings.push((
            lines.line_of(relay_span.clone()),
            DomainWarning {
                rule: "RFC 4213 §3.6",
                message: "no ce-interfaces in [relay]: protocol 41 is accepted on every interface, so a host on the LAN can send as if it were a CE; list the interfaces that face the CEs (and any xfrm/VTI interface their IPsec traffic arrives on)"
                    .to_string(),
            },
        ));
    }
    if domains.len() > br_ebpf::MAX_PREFIXES as usize {
        lines.report(
            domains[br_ebpf::MAX_PREFIXES as usize].1.clone(),
            format!(
                "{} domains: the XDP program holds at most {}",
                domains.len(),
                br_ebpf::MAX_PREFIXES
            ),
        );
    }
    let mut br_addresses: Vec<Ipv4Addr> = domains
        .iter()
        .flat_map(|(d, _)| d.br_ipv4_all().iter().copied())
        .collect();
    br_addresses.sort();
    br_addresses.dedup();
    if br_addresses.len() > br_ebpf::MAX_BR_ADDRS as usize {
        lines.report(
            relay_span.clone(),
            format!(
                "{} BR IPv4 addresses in all domains: the XDP program holds at most {}",
                br_addresses.len(),
                br_ebpf::MAX_BR_ADDRS
            ),
        );
    }
    let only_domains: Vec<Domain> = domains.iter().map(|(d, _)| d.clone()).collect();
    if let Err(e) = Domains::new(only_domains.clone()) {
        let span = domains
            .iter()
            .rev()
            .find(|(d, _)| d.prefix() == e.2 || d.prefix() == e.0)
            .map(|(_, s)| s.clone())
            .unwrap_or(0..0);
        lines.report(span, e.to_string());
    }
    Some(Config {
        interfaces,
        ce_interfaces,
        queues: queues?,
        xdp_mode,
        tun,
        metrics,
        busy_poll: relay.busy_poll.unwrap_or(false),
        xdp_fast_path: relay.xdp_fast_path.unwrap_or(true),
        icmp_rate,
        announce_table,
        domains: only_domains,
        warnings,
    })
}

/// A list of interface names, each valid and listed once.
fn interface_list(lines: &mut Lines, list: &[Spanned<String>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in list {
        if let Err(why) = valid_interface_name(name.get_ref()) {
            lines.report(
                name.span(),
                format!("interface {:?}: {why}", name.get_ref()),
            );
        } else if names.contains(name.get_ref()) {
            lines.report(
                name.span(),
                format!("interface {:?} is listed twice", name.get_ref()),
            );
        } else {
            names.push(name.get_ref().clone());
        }
    }
    names
}

fn domain_spec(lines: &mut Lines, d: &RawDomain, index: usize) -> Option<DomainSpec> {
    let before = lines.problems.len();
    let name = d
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| format!("domain{}", index + 1));
    let prefix: Option<Ipv6Net> =
        lines.parse(&d.prefix, "prefix", "an IPv6 prefix like 2001:db8::/32");
    let mask_len = match &d.ipv4_mask_len {
        Some(k) => lines.int::<u8>(k, "ipv4-mask-len", 0, 32),
        None => Some(0),
    };
    let br_span = d.br_ipv4.span();
    let br_texts: Vec<&toml::Value> = match d.br_ipv4.get_ref() {
        toml::Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    let mut br_ipv4: Vec<Ipv4Addr> = Vec::new();
    for v in br_texts {
        match v.as_str().map(str::parse) {
            Some(Ok(a)) => br_ipv4.push(a),
            _ => lines.report(
                br_span.clone(),
                format!("br-ipv4 = {v}: expected an IPv4 address or a list of them"),
            ),
        }
    }
    if br_ipv4.is_empty() && lines.problems.len() == before {
        lines.report(
            d.br_ipv4.span(),
            "br-ipv4 is empty: give the BR's IPv4 address",
        );
    }
    let br_ipv6: Option<Ipv6Addr> = d
        .br_ipv6
        .as_ref()
        .and_then(|a| lines.parse(a, "br-ipv6", "an IPv6 address"));
    let icmp_source: Option<Ipv6Addr> = d
        .icmp_source
        .as_ref()
        .and_then(|a| lines.parse(a, "icmp-source", "an IPv6 address"));
    let ce_sample: Option<ipnet::Ipv4Net> = d
        .ce_ipv4_prefix
        .as_ref()
        .and_then(|a| lines.parse(a, "ce-ipv4-prefix", "an IPv4 prefix like 10.0.0.0/8"));
    if let (Some(p), Some(k)) = (ce_sample, mask_len) {
        if p.prefix_len() != k {
            let span = d.ce_ipv4_prefix.as_ref().expect("parsed").span();
            lines.report(
                span,
                format!("ce-ipv4-prefix {p} must be a /{k}, the ipv4-mask-len"),
            );
        }
    }
    let mut ce_ipv4_allow = Vec::new();
    for p in &d.ce_ipv4_allow {
        let Some(net) =
            lines.parse::<ipnet::Ipv4Net>(p, "ce-ipv4-allow", "an IPv4 prefix like 10.96.0.0/16")
        else {
            continue;
        };
        if net.trunc() != net {
            lines.report(
                p.span(),
                format!(
                    "ce-ipv4-allow {net} has bits set after its length; did you mean {}?",
                    net.trunc()
                ),
            );
        }
        ce_ipv4_allow.push(net);
    }
    let mtu = match &d.mtu {
        Some(m) => lines.int::<u16>(m, "mtu", 1280, 65515),
        None => Some(crate::relay::domain::DEFAULT_TUNNEL_MTU),
    };
    let ttl = match &d.ttl {
        Some(t) => lines.int::<u8>(t, "ttl", 1, 255),
        None => Some(crate::relay::domain::DEFAULT_TTL),
    };
    let tcp_mss = d.tcp_mss.as_ref().and_then(|v| tcp_mss(lines, v, mtu?));
    if lines.problems.len() != before {
        return None;
    }
    Some(DomainSpec {
        name,
        prefix: prefix?,
        ipv4_mask_len: mask_len?,
        br_ipv4,
        br_ipv6,
        icmp_source,
        ce_ipv4_sample: ce_sample.map(|p| p.network()),
        mtu: mtu?,
        ttl: ttl?,
        ce_ipv4_allow,
        tcp_mss,
    })
}

/// `metrics = "host:port"`: an address, or a name resolved now (the
/// first address it has), as `counters --live` takes it.
fn metrics_address(lines: &mut Lines, m: &Spanned<String>) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    match m.get_ref().to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Some(a),
        _ => {
            lines.report(
                m.span(),
                format!(
                    "metrics = {:?} is not an address:port (like 127.0.0.1:9641 or localhost:9641) or \"off\"",
                    m.get_ref()
                ),
            );
            None
        }
    }
}

/// The line a domain's error belongs on: the key it is about.
fn span_of(d: &RawDomain, e: &DomainError) -> Range<usize> {
    let or_prefix = |s: Option<Range<usize>>| s.unwrap_or_else(|| d.prefix.span());
    match e {
        DomainError::NoBrAddress
        | DomainError::BrAddressNotUnicast(_)
        | DomainError::BrOutsideCommonPrefix { .. } => d.br_ipv4.span(),
        DomainError::BrIpv6OutsidePrefix(..) => or_prefix(d.br_ipv6.as_ref().map(|v| v.span())),
        DomainError::BadIcmpSource(_) => or_prefix(d.icmp_source.as_ref().map(|v| v.span())),
        DomainError::MtuTooSmall(_) | DomainError::MtuTooLarge(_) => {
            or_prefix(d.mtu.as_ref().map(|v| v.span()))
        }
        DomainError::ZeroTtl => or_prefix(d.ttl.as_ref().map(|v| v.span())),
        DomainError::TooManyCeAllow(..) => or_prefix(d.ce_ipv4_allow.first().map(|v| v.span())),
        DomainError::MaskLenOutOfRange(_) => or_prefix(d.ipv4_mask_len.as_ref().map(|v| v.span())),
        _ => d.prefix.span(),
    }
}

/// IPv6 + TCP headers: what a segment adds to its MSS (RFC 9293 §3.7.1).
const TCP_IPV6_OVERHEAD: u16 = 60;
/// The smallest clamp accepted: IPv4's default MSS (RFC 9293 §3.7.1);
/// IPv6's minimum MTU gives 1220, and less only wastes the link.
const MIN_TCP_MSS: i64 = 536;

/// `tcp-mss = N` or `"auto"` (the tunnel MTU less 60, what fits it).
fn tcp_mss(lines: &mut Lines, v: &Spanned<toml::Value>, mtu: u16) -> Option<u16> {
    let fits = mtu - TCP_IPV6_OVERHEAD;
    match v.get_ref() {
        toml::Value::String(s) if s == "auto" => Some(fits),
        toml::Value::Integer(n) => {
            let n = lines.int::<u16>(&Spanned::new(v.span(), *n), "tcp-mss", MIN_TCP_MSS, 65535)?;
            if n > fits {
                lines.report(
                    v.span(),
                    format!(
                        "tcp-mss = {n} is more than fits the tunnel (mtu {mtu} - 60 = {fits}): \
                         such segments would need Packet Too Big; use {fits} or \"auto\""
                    ),
                );
                return None;
            }
            Some(n)
        }
        other => {
            lines.report(
                v.span(),
                format!("tcp-mss = {other}: expected a number like 1220, or \"auto\" (mtu - 60)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SCENARIO: &str = r#"
[relay]
interfaces = ["lan0", "wan0"]
ce-interfaces = ["wan0"]
queues = 2

[[domain]]
name = "vpc"
prefix = "2001:db8:0:f096::/64"
ipv4-mask-len = 0
br-ipv4 = "10.255.255.222"
"#;

    fn problems(text: &str) -> Vec<(usize, String)> {
        Config::parse(text, "t.toml")
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| (p.line, p.message))
            .collect()
    }

    #[test]
    fn scenario_config_is_valid_with_warnings() {
        let c = Config::parse(SCENARIO, "t.toml").unwrap();
        assert_eq!(c.interfaces, ["lan0", "wan0"]);
        assert_eq!(c.ce_interfaces, Some(vec!["wan0".to_string()]));
        assert_eq!(c.queues, 2);
        assert_eq!(c.xdp_mode, XdpMode::Native);
        assert!(c.xdp_fast_path, "on by default");
        assert_eq!(c.tun, DEFAULT_TUN);
        assert_eq!(c.metrics, Some(DEFAULT_METRICS.parse().unwrap()));
        assert_eq!(c.domains.len(), 1);
        assert_eq!(c.domains[0].mtu(), 1280);
        assert!(
            c.warnings.iter().all(|(line, _)| *line == 7),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(c
            .warnings
            .iter()
            .any(|(_, w)| w.message.contains("ce-ipv4-allow")));
    }

    #[test]
    fn tcp_mss_is_a_number_that_fits_or_auto() {
        let with = |v: &str| {
            SCENARIO.replace(
                "ipv4-mask-len = 0\n",
                &format!("ipv4-mask-len = 0\nmtu = 1480\ntcp-mss = {v}\n"),
            )
        };
        let mss = |v: &str| Config::parse(&with(v), "t.toml").unwrap().domains[0].tcp_mss();
        assert_eq!(mss("1220"), Some(1220));
        assert_eq!(mss("\"auto\""), Some(1420));
        assert_eq!(
            Config::parse(SCENARIO, "t.toml").unwrap().domains[0].tcp_mss(),
            None
        );
        for (v, says) in [
            ("1460", "more than fits the tunnel (mtu 1480 - 60 = 1420)"),
            ("100", "out of range (536..=65535)"),
            ("\"big\"", "expected a number like 1220, or \"auto\""),
        ] {
            let p = problems(&with(v));
            assert_eq!(p.len(), 1, "{v}: {p:?}");
            assert!(p[0].1.contains(says), "{v}: {p:?}");
            // On the tcp-mss line (the domain starts at SCENARIO's line 5).
            let line = with(v)
                .lines()
                .position(|l| l.starts_with("tcp-mss"))
                .unwrap()
                + 1;
            assert_eq!(p[0].0, line, "{v}: {p:?}");
        }
    }

    #[test]
    fn ce_ipv4_allow_is_a_list_of_prefixes() {
        let with = |list: &str| {
            SCENARIO.replace(
                "ipv4-mask-len = 0\n",
                &format!("ipv4-mask-len = 0\nce-ipv4-allow = {list}\n"),
            )
        };
        let c = Config::parse(&with("[\"10.96.0.0/16\", \"192.0.2.0/24\"]"), "t.toml").unwrap();
        assert_eq!(c.domains[0].ce_ipv4_allow().len(), 2);
        assert!(c.domains[0].ce_allowed("10.96.1.100".parse().unwrap()));
        assert!(!c.domains[0].ce_allowed("10.97.0.1".parse().unwrap()));
        assert_eq!(
            c.warnings.len(),
            3,
            "no ce-ipv4-allow warning: {:?}",
            c.warnings
        );
        let p = problems(&with("[\"10.96.1.0/16\", \"ten\"]"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.contains("did you mean 10.96.0.0/16"), "{p:?}");
        assert!(p[1].1.contains("is not an IPv4 prefix"), "{p:?}");
        let nine: Vec<String> = (0..9).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
        let p = problems(&with(&format!("[{}]", nine.join(", "))));
        assert!(p[0].1.contains("at most 8"), "{p:?}");
    }

    #[test]
    fn without_ce_interfaces_protocol_41_is_accepted_everywhere_with_a_warning() {
        let text = SCENARIO.replace("ce-interfaces = [\"wan0\"]\n", "");
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(c.ce_interfaces, None);
        let w: Vec<_> = c
            .warnings
            .iter()
            .filter(|(_, w)| w.rule == "RFC 4213 §3.6")
            .collect();
        assert_eq!(w.len(), 1, "{:?}", c.warnings);
        assert_eq!(w[0].0, 2, "at [relay]");
        assert!(w[0].1.message.contains("ce-interfaces"), "{:?}", w[0]);
        let bad = SCENARIO.replace("[\"wan0\"]", "[\"wan0\", \"wan0\", \"a/b\"]");
        let p = problems(&bad);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|(line, _)| *line == 4), "{p:?}");
        assert!(p[0].1.contains("listed twice"), "{p:?}");
    }

    #[test]
    fn a_single_bracket_domain_gets_a_hint_and_an_unreadable_file_no_line() {
        let p = problems(&SCENARIO.replace("[[domain]]", "[domain]"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 7, "{p:?}");
        assert!(p[0].1.starts_with("write [[domain]]"), "{p:?}");
        let e = Config::load(Path::new("/nonexistent/br.toml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("/nonexistent/br.toml: cannot read"),
            "{text}"
        );
    }

    #[test]
    fn an_unquoted_address_says_to_quote_it() {
        for (from, to, line) in [
            ("\"2001:db8:0:f096::/64\"", "2001:db8:0:f096::/64", 9),
            ("\"10.255.255.222\"", "10.255.255.222", 11),
        ] {
            let p = problems(&SCENARIO.replace(from, to));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].0, line, "{p:?}");
            assert!(
                p[0].1.contains(&format!(
                    "write {} = \"{to}\"",
                    ["prefix", "br-ipv4"][usize::from(line == 11)]
                )),
                "{p:?}"
            );
        }
        // Other syntax errors keep the parser's words.
        let p = problems("[relay]\nqueues = = 2\n");
        assert!(!p[0].1.contains("strings in TOML"), "{p:?}");
    }

    #[test]
    fn what_run_refuses_check_config_refuses() {
        // No interfaces, or import-cisco's placeholders.
        for relay in [
            "[relay]\ninterfaces = []\n",
            "",
            "[relay]\ninterfaces = [\"CHANGE-ME-lan\"]\n",
        ] {
            let text =
                format!("{relay}[[domain]]\nprefix = \"2001:db8::/32\"\nbr-ipv4 = \"10.0.0.1\"\n");
            let p = problems(&text);
            assert_eq!(p.len(), 1, "{relay:?}: {p:?}");
            assert!(
                p[0].1.contains("no interfaces") || p[0].1.contains("placeholder"),
                "{p:?}"
            );
        }
        let nine: Vec<String> = (0..9).map(|i| format!("\"eth{i}\"")).collect();
        let p = problems(&format!("[relay]\ninterfaces = [{}]\n", nine.join(", ")));
        assert!(p[0].1.contains("at most 8"), "{p:?}");
        // A 6rd prefix that would capture the host's own traffic.
        for prefix in ["::/0", "fe80::/64", "ff00::/8"] {
            let p = problems(&SCENARIO.replace("2001:db8:0:f096::/64", prefix));
            assert!(p[0].1.contains("not global unicast"), "{prefix}: {p:?}");
        }
        // More domains or BR addresses than the XDP maps hold.
        let many: String = (0..65)
            .map(|i| format!("[[domain]]\nprefix = \"2001:db8:{i:x}::/48\"\nipv4-mask-len = 16\nbr-ipv4 = \"10.{i}.0.1\"\n"))
            .collect();
        let p = problems(&format!("[relay]\ninterfaces = [\"eth0\"]\n{many}"));
        assert!(p.iter().any(|(_, m)| m.contains("65 domains")), "{p:?}");
        assert!(
            p.iter().any(|(_, m)| m.contains("65 BR IPv4 addresses")),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = SCENARIO.replace("queues = 2", "queues = 2\nqueus = 3");
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, 6);
        assert!(p[0].1.contains("queus"), "{}", p[0].1);
    }

    #[test]
    fn every_unknown_key_is_reported_in_file_order() {
        let text = format!(
            "colour = 1\n{}",
            SCENARIO
                .replace("queues = 2", "queus = 3")
                .replace("br-ipv4 = ", "mask = 8\nbr-ipv4 = ")
        ) + "\n[[domain]]\nname = \"b\"\nprefix = \"2001:db8:1::/48\"\nbr-ipv4 = \"10.0.0.1\"\nbr_ipv6 = \"x\"\n";
        let p = problems(&text);
        let lines: Vec<usize> = p.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 6, 12, 19], "{p:?}");
        assert!(
            p[0].1
                .contains("unknown key colour in the file; it takes: relay, domain"),
            "{p:?}"
        );
        assert!(p[1].1.contains("unknown key queus in [relay]"), "{p:?}");
        assert!(p[1].1.contains("queues"), "the keys it takes: {p:?}");
        assert!(p[2].1.contains("unknown key mask in [[domain]]"), "{p:?}");
        assert!(
            p[3].1.contains("unknown key br_ipv6 in [[domain]]"),
            "{p:?}"
        );
    }

    #[test]
    fn address_errors_point_at_their_own_key() {
        for (key, value, says) in [
            (
                "br-ipv4",
                "\"224.0.0.1\"",
                "cannot be a unicast tunnel endpoint",
            ),
            (
                "br-ipv6",
                "\"2001:db8:1::1\"",
                "is not inside the 6rd prefix",
            ),
            (
                "icmp-source",
                "\"ff02::1\"",
                "cannot be the source of a packet",
            ),
        ] {
            let text = if key == "br-ipv4" {
                SCENARIO.replace(
                    "br-ipv4 = \"10.255.255.222\"",
                    &format!("br-ipv4 = {value}"),
                )
            } else {
                SCENARIO.replace(
                    "ipv4-mask-len = 0\n",
                    &format!("ipv4-mask-len = 0\n{key} = {value}\n"),
                )
            };
            let p = problems(&text);
            let line = text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
            assert_eq!(p.len(), 1, "{key}: {p:?}");
            assert_eq!(p[0].0, line, "{key}: {p:?}");
            assert!(p[0].1.contains(says), "{key}: {p:?}");
        }
    }

    #[test]
    fn syntax_error_has_its_line() {
        let p = problems("[relay]\ninterfaces = [\"a\"\n");
        assert_eq!(p[0].0, 2, "{p:?}");
    }

    #[test]
    fn every_semantic_mistake_is_reported_with_its_line() {
        let text = r#"
[relay]
interfaces = ["lan0", "lan0", "this-name-is-far-too-long"]
queues = 0
xdp-mode = "fast"
metrics = "localhost"

[[domain]]
prefix = "2001:db8::/100"
br-ipv4 = "10.0.0.1"

[[domain]]
prefix = "2001:db8:1::/48"
ipv4-mask-len = 40
br-ipv4 = ["10.0.0.1", "nope"]
mtu = 1000
"#;
        let p = problems(text);
        let lines: Vec<usize> = p.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3, 3, 4, 5, 6, 9, 14, 15, 16], "{p:?}");
        assert!(p[0].1.contains("listed twice"));
        assert!(p[1].1.contains("1 to 15 bytes"));
        assert!(p[5].1.contains("longer than an IPv6 address"), "{}", p[5].1);
        assert!(p[6].1.contains("ipv4-mask-len = 40"));
        assert!(p[7].1.contains("\"nope\""), "{}", p[7].1);
    }

    #[test]
    fn bad_domain_values_are_caught_after_parsing() {
        let text = SCENARIO.replace("f096::/64", "f096::1/64");
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, 9);
        assert!(
            p[0].1.contains("did you mean 2001:db8:0:f096::/64"),
            "{}",
            p[0].1
        );
    }

    #[test]
    fn overlapping_domains_are_refused() {
        let text = format!(
            "{SCENARIO}\n[[domain]]\nname = \"wide\"\nprefix = \"2001:db8::/32\"\nipv4-mask-len = 32\nbr-ipv4 = \"10.0.0.1\"\n"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert!(p[0].1.contains("overlaps"), "{p:?}");
        assert_eq!(p[0].0, 15);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../docs/br-daemon.example.toml");
        let c = Config::parse(text, "docs/br-daemon.example.toml").unwrap();
        assert_eq!(c.queues, 2);
        assert_eq!(
            c.domains[0].br_ipv6(),
            "2001:db8:0:f096:aff:ffde::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn no_domain_is_valid_with_a_warning() {
        let c = Config::parse("[relay]\ninterfaces = [\"eth0\"]\n", "br.toml").unwrap();
        assert!(c.domains.is_empty());
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].0, 1);
        assert!(c.warnings[0].1.message.contains("relays nothing"));
    }

    #[test]
    fn several_br_addresses_and_explicit_fields() {
        let text = r#"
[relay]
interfaces = ["eth0"]
metrics = "off"
xdp-mode = "generic"
xdp-fast-path = false
icmp-errors-per-second = 100
icmp-burst = 5
[[domain]]
prefix = "2001:db8:100::/40"
ipv4-mask-len = 8
br-ipv4 = ["192.0.2.1", "192.0.2.2"]
ce-ipv4-prefix = "10.0.0.0/8"
br-ipv6 = "2001:db8:100::1"
ttl = 32
mtu = 1480
"#;
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(c.metrics, None);
        let named = Config::parse(
            &SCENARIO.replace("queues = 2", "queues = 2\nmetrics = \"localhost:9641\""),
            "t",
        )
        .unwrap();
        assert!(named
            .metrics
            .is_some_and(|a| a.ip().is_loopback() && a.port() == 9641));
        assert_eq!(c.xdp_mode, XdpMode::Generic);
        assert!(!c.xdp_fast_path);
        assert_eq!(
            c.icmp_rate,
            IcmpRate {
                per_second: 100,
                burst: 5
            }
        );
        let d = &c.domains[0];
        assert_eq!(d.br_ipv4_all().len(), 2);
        assert_eq!(d.common_ipv4_prefix(), "10.0.0.0/8".parse().unwrap());
        assert_eq!(
            d.ce_ipv4("2001:db8:101:203::1".parse().unwrap()),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!((d.ttl(), d.mtu()), (32, 1480));
    }

    #[test]
    fn announce_table_is_a_table_of_its_own() {
        let c = Config::parse(
            &SCENARIO.replace("queues = 2", "queues = 2\nannounce-table = 6969"),
            "br.toml",
        )
        .unwrap();
        assert_eq!(c.announce_table, Some(6969));
        let p = problems(&SCENARIO.replace("queues = 2", "queues = 2\nannounce-table = 254"));
        assert!(
            p.iter()
                .any(|(_, m)| m.contains("default, main or local table")),
            "{p:?}"
        );
        let p = problems(&SCENARIO.replace("queues = 2", "queues = 2\nannounce-table = 0"));
        assert!(p.iter().any(|(_, m)| m.contains("out of range")), "{p:?}");
    }

    #[test]
    fn warnings_read_as_sentences() {
        let c = Config::parse(
            &SCENARIO.replace("ce-interfaces", "# ce-interfaces"),
            "br.toml",
        )
        .unwrap();
        for (_, w) in &c.warnings {
            assert!(!w.to_string().contains("  "), "a run of spaces in {w}");
        }
    }
}

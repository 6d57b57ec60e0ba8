//! Reading `show running-config` text into interfaces and IPv6 routes;
//! every other line gets its advice (advice.rs) as a warning.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv6Net;

use super::advice::{self, Global};
use super::{ImportError, Warnings};

#[derive(Default, Debug)]
pub struct Interface {
    /// Name as written, without spaces, e.g. `Tunnel0`.
    pub display: String,
    pub line: usize,
    pub ipv4: Option<Ipv4Addr>,
    /// `ip address dhcp`, with its line.
    pub ipv4_dhcp: Option<usize>,
    pub ipv6: Option<(Ipv6Net, usize)>,
    pub sixrd_mode: bool,
    pub shutdown: bool,
    pub source: Option<(String, usize)>,
    pub prefix: Option<(Ipv6Net, usize)>,
    pub ipv4_prefix_len: Option<u8>,
    pub mtu: Option<u16>,
    pub ttl: Option<u8>,
    /// `ipv6 tcp adjust-mss N`, with its line.
    pub adjust_mss: Option<(u16, usize)>,
}

/// What the configuration holds.
#[derive(Default)]
pub struct Parsed {
    pub interfaces: BTreeMap<String, Interface>,
    /// Interface keys in file order.
    pub order: Vec<String>,
    /// `ipv6 route PREFIX TARGET`, with its line.
    pub routes: Vec<(Ipv6Net, String, usize)>,
}

/// `GigabitEthernet 0/1` and `gigabitethernet0/1` are the same interface.
pub fn normalize(name: &str) -> String {
    name.split_whitespace()
        .collect::<String>()
        .to_ascii_lowercase()
}

fn parse_mask(mask: &str) -> Option<u8> {
    let m: Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones() as u8)
}

/// Where indented lines belong.
enum Block {
    None,
    Interface(String),
    /// A global block already warned about: its lines are not.
    Quiet,
}

pub fn parse(text: &str, warnings: &mut Warnings) -> Result<Parsed, ImportError> {
    let mut p = Parsed::default();
    let mut block = Block::None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('!') {
            if trimmed.starts_with('!') {
                block = Block::None;
            }
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        if indented {
            match &block {
                Block::Interface(key) => {
                    let iface = p.interfaces.get_mut(key).expect("created on its line");
                    interface_line(iface, trimmed, &words, &l, line, warnings)?;
                }
                Block::Quiet => {}
                Block::None => warnings.add(line, advice_text(advice::global(trimmed, &l))),
            }
            continue;
        }
        block = Block::None;
        match l.as_slice() {
            ["interface", _, ..] => {
                let display = words[1..].join(" ");
                let key = normalize(&display);
                if !p.interfaces.contains_key(&key) {
                    p.order.push(key.clone());
                }
                p.interfaces
                    .entry(key.clone())
                    .or_insert_with(|| Interface {
                        display: display.replace(' ', ""),
                        line,
                        ..Interface::default()
                    });
                block = Block::Interface(key);
            }
            ["ipv6", "route", prefix, _target] => match prefix.parse::<Ipv6Net>() {
                Ok(net) => p.routes.push((net, words[3].to_string(), line)),
                Err(_) => warnings.add(line, format!("not used: {trimmed:?} (not an IPv6 prefix)")),
            },
            _ => match advice::global(trimmed, &l) {
                Global::Silent => {}
                Global::Say { message, block: b } => {
                    warnings.add(line, message);
                    if b {
                        block = Block::Quiet;
                    }
                }
            },
        }
    }
    Ok(p)
}

fn advice_text(g: Global) -> String {
    match g {
        Global::Silent => String::new(),
        Global::Say { message, .. } => message,
    }
}

/// One line inside `interface ...`.
fn interface_line(
    iface: &mut Interface,
    trimmed: &str,
    words: &[&str],
    l: &[&str],
    line: usize,
    warnings: &mut Warnings,
) -> Result<(), ImportError> {
    let invalid = |message: String| ImportError::Invalid { line, message };
    match l {
        ["ip", "address", "dhcp", ..] => iface.ipv4_dhcp = Some(line),
        ["ip", "address", addr, mask] => {
            let a = addr
                .parse()
                .map_err(|_| invalid(format!("{addr:?} is not an IPv4 address")))?;
            parse_mask(mask).ok_or_else(|| invalid(format!("{mask:?} is not a netmask")))?;
            iface.ipv4 = Some(a);
        }
        ["ipv6", "address", how @ ("autoconfig" | "dhcp"), ..] => warnings.add(
            line,
            format!(
                "not used: {}: ipv6 address {how} (the Linux interface gets its address by {} itself)",
                iface.display,
                if *how == "dhcp" { "DHCPv6" } else { "SLAAC" }
            ),
        ),
        ["ipv6", "address", prefix] => {
            let p = prefix
                .parse()
                .map_err(|_| invalid(format!("{prefix:?} is not an IPv6 address/length")))?;
            iface.ipv6 = Some((p, line));
        }
        ["shutdown"] => iface.shutdown = true,
        ["tunnel", "mode", "ipv6ip", "6rd"] => iface.sixrd_mode = true,
        ["tunnel", "source", rest @ ..] if !rest.is_empty() => {
            iface.source = Some((words[2..].join(" "), line));
        }
        ["tunnel", "6rd", "prefix", prefix] => {
            let p = prefix
                .parse()
                .map_err(|_| invalid(format!("{prefix:?} is not an IPv6 prefix")))?;
            iface.prefix = Some((p, line));
        }
        ["tunnel", "6rd", "ipv4", "prefix-len", n] => {
            let n = n.parse().ok().filter(|n| *n <= 32);
            iface.ipv4_prefix_len =
                Some(n.ok_or_else(|| invalid("prefix-len must be 0..=32".into()))?);
        }
        ["tunnel", "6rd", "ipv4", "suffix-len", n] => {
            return Err(invalid(format!(
                "tunnel 6rd ipv4 suffix-len {n}: the BR embeds the CE's IPv4 bits up to the \
                 last one (RFC 5969 §4 has no suffix); with a suffix the CEs' prefixes would \
                 differ from what the BR computes. Remove it on the CEs and here, or keep \
                 this tunnel on the Cisco box"
            )));
        }
        ["ipv6", "mtu", n] | ["tunnel", "mtu", n] => {
            iface.mtu = Some(n.parse().map_err(|_| invalid(format!("{n:?} is not an MTU")))?);
        }
        ["tunnel", "ttl", n] => {
            iface.ttl = Some(n.parse().map_err(|_| invalid(format!("{n:?} is not a TTL")))?);
        }
        ["ipv6", "tcp", "adjust-mss", n] => {
            let mss = n.parse().map_err(|_| invalid(format!("{n:?} is not an MSS")))?;
            iface.adjust_mss = Some((mss, line));
        }
        _ if advice::silent_in_interface(l) => {}
        _ => warnings.add(line, advice::in_interface(trimmed, l, &iface.display)),
    }
    Ok(())
}

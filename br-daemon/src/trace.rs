//! `br-daemon trace`: which packets a trace shows, and how each one is
//! written (a line, or JSON). Pure: the XDP ring, the workers' hand-off
//! and the HTTP stream are in `dataplane::tracer`.
//!
//! Every event names what happened with the counter's own name and kind
//! (docs/counters.md): `action` for the XDP program, `path` for what the
//! relay forwarded, `reason` for a drop.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;
use serde::Serialize;

use crate::relay::wire::{ipv4_at, ipv6_at};
use crate::relay::{describe, Domains, Mapping};

/// Which packets to show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceFilter {
    /// Every packet the BR sees.
    #[default]
    All,
    /// Packets from or to this CE: as the outer IPv4 address, or embedded
    /// in an IPv6 address of a domain.
    Ce(Ipv4Addr),
    /// Packets with this IPv6 source or destination (inner or native).
    Ipv6(Ipv6Addr),
    /// Packets with an IPv6 source or destination in this prefix.
    Prefix(Ipv6Net),
}

/// Protocol 41 (RFC 4213 §3.5).
const PROTO_IPV6_IN_IPV4: u8 = 41;

/// The addresses of an IP packet (IPv4 or IPv6 header first): the IPv4
/// ones (outer), and the IPv6 ones (native, or inner of protocol 41).
fn addresses(ip: &[u8]) -> ([Option<Ipv4Addr>; 2], [Option<Ipv6Addr>; 2]) {
    let v6 = |p: &[u8]| {
        if p.len() >= 40 && p[0] >> 4 == 6 {
            [Some(ipv6_at(p, 8)), Some(ipv6_at(p, 24))]
        } else {
            [None, None]
        }
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            let outer = [Some(ipv4_at(ip, 12)), Some(ipv4_at(ip, 16))];
            let header = usize::from(ip[0] & 0x0f) * 4;
            let inner = match ip.get(header..) {
                Some(inner) if ip[9] == PROTO_IPV6_IN_IPV4 => v6(inner),
                _ => [None, None],
            };
            (outer, inner)
        }
        Some(6) => ([None, None], v6(ip)),
        _ => ([None, None], [None, None]),
    }
}

impl TraceFilter {
    /// Whether the IP packet `ip` is one to show; `domains` maps IPv6
    /// addresses to the CEs they embed.
    pub fn matches(&self, ip: &[u8], domains: &Domains) -> bool {
        let (v4, v6) = addresses(ip);
        let v6 = v6.into_iter().flatten();
        match *self {
            TraceFilter::All => true,
            TraceFilter::Ce(ce) => {
                v4.contains(&Some(ce))
                    || v6.into_iter().any(
                        |a| matches!(domains.map_ipv6(a), Mapping::Ce { ipv4, .. } if ipv4 == ce),
                    )
            }
            TraceFilter::Ipv6(addr) => v6.into_iter().any(|a| a == addr),
            TraceFilter::Prefix(p) => v6.into_iter().any(|a| p.contains(&a)),
        }
    }

    /// The query string of `/trace` (`ce=...`, `ipv6=...`, `prefix=...`).
    pub fn to_query(&self) -> String {
        match self {
            TraceFilter::All => String::new(),
            TraceFilter::Ce(a) => format!("ce={a}"),
            TraceFilter::Ipv6(a) => format!("ipv6={a}"),
            TraceFilter::Prefix(p) => format!("prefix={p}"),
        }
    }
}

/// What `/trace?...` asks for: `ce=`, `ipv6=` or `prefix=` (at most one),
/// `count=N` and `json=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRequest {
    pub filter: TraceFilter,
    pub count: u64,
    pub json: bool,
}

/// Events shown when `count` is not given.
pub const DEFAULT_TRACE_COUNT: u64 = 100;

impl TraceRequest {
    /// Parses the query string of `/trace`.
    pub fn parse(query: &str) -> Result<TraceRequest, String> {
        let mut r = TraceRequest {
            filter: TraceFilter::All,
            count: DEFAULT_TRACE_COUNT,
            json: false,
        };
        let mut filters = 0;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |what: &str| format!("{key}={value:?} is not {what}");
            match key {
                "ce" => {
                    r.filter = TraceFilter::Ce(value.parse().map_err(|_| bad("an IPv4 address"))?)
                }
                "ipv6" => {
                    r.filter = TraceFilter::Ipv6(value.parse().map_err(|_| bad("an IPv6 address"))?)
                }
                "prefix" => {
                    r.filter =
                        TraceFilter::Prefix(value.parse().map_err(|_| bad("an IPv6 prefix"))?)
                }
                "count" => r.count = value.parse().map_err(|_| bad("a number"))?,
                "json" => r.json = value == "1",
                _ => return Err(format!("unknown trace parameter {key:?}")),
            }
            filters += usize::from(matches!(key, "ce" | "ipv6" | "prefix"));
        }
        if filters > 1 {
            return Err("give at most one of ce, ipv6, prefix".into());
        }
        Ok(r)
    }

    /// The query string that [`TraceRequest::parse`] reads back.
    pub fn to_query(&self) -> String {
        let mut q = vec![format!("count={}", self.count)];
        let f = self.filter.to_query();
        if !f.is_empty() {
            q.push(f);
        }
        if self.json {
            q.push("json=1".into());
        }
        q.join("&")
    }
}

/// One traced packet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEvent {
    /// CLOCK_MONOTONIC, ns.
    #[serde(skip)]
    pub ns: u64,
    /// Seconds since the trace started.
    pub time: f64,
    /// `xdp`, `forwarder` or `slow-path`.
    pub stage: &'static str,
    /// Where the packet arrived.
    pub interface: String,
    /// Its headers, as it arrived (XDP fast-path frames: as they left).
    pub packet: String,
    /// The counter kind: `action`, `path` or `reason`.
    pub kind: &'static str,
    /// The counter's name: what happened.
    pub name: &'static str,
    /// Where it went (interface and next hop, the kernel, the host).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub to: String,
}

impl TraceEvent {
    /// The line `br-daemon trace` prints.
    pub fn line(&self) -> String {
        let to = if self.to.is_empty() {
            String::new()
        } else {
            format!(" -> {}", self.to)
        };
        format!(
            "{:>10.6} {:<9} {:<10} {}: {} {}{to}",
            self.time, self.stage, self.interface, self.packet, self.kind, self.name
        )
    }

    /// One JSON object, for `--json`.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain fields serialize")
    }
}

/// The headers of an IP packet, protocol 41's inner IPv6 too.
pub fn summary(ip: &[u8]) -> String {
    let outer = describe(ip);
    let header = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
    match ip.get(header..) {
        Some(inner) if ip[0] >> 4 == 4 && ip.len() >= 20 && ip[9] == PROTO_IPV6_IN_IPV4 => {
            format!("{outer} [{}]", describe(inner))
        }
        _ => outer,
    }
}

/// The IP packet of an Ethernet frame (after the header and any VLAN tag).
pub fn ip_of_frame(frame: &[u8]) -> &[u8] {
    let mut at = 12;
    while frame.len() >= at + 2 && matches!([frame[at], frame[at + 1]], [0x81, 0x00] | [0x88, 0xa8])
    {
        at += 4;
    }
    frame.get(at + 2..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tests::{echo, ipv4, scenario_relay, CE1_V6, CE2_V6, LAN_SERVER};

    #[test]
    fn filters_match_outer_inner_and_embedded_addresses() {
        let relay = scenario_relay();
        let domains = relay.domains();
        let native = echo(LAN_SERVER, CE1_V6, 64, 0, 8);
        let from_ce2 = ipv4(
            "10.96.1.101",
            "10.255.255.222",
            0,
            41,
            &echo(CE2_V6, LAN_SERVER, 64, 0, 8),
        );
        let ce1 = TraceFilter::Ce("10.96.1.100".parse().unwrap());
        let ce2 = TraceFilter::Ce("10.96.1.101".parse().unwrap());
        assert!(ce1.matches(&native, domains), "embedded in the destination");
        assert!(!ce1.matches(&from_ce2, domains));
        assert!(ce2.matches(&from_ce2, domains), "the outer source");
        let lan = TraceFilter::Ipv6(LAN_SERVER.parse().unwrap());
        assert!(lan.matches(&native, domains) && lan.matches(&from_ce2, domains));
        let prefix = TraceFilter::Prefix("2001:db8:0:f096:a60:164::/96".parse().unwrap());
        assert!(prefix.matches(&native, domains) && !prefix.matches(&from_ce2, domains));
        assert!(TraceFilter::All.matches(&[0x45], domains));
        assert!(!ce1.matches(&[], domains));
    }

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        for q in [
            "count=5&ce=10.96.1.100&json=1",
            "count=100",
            "count=1&prefix=2001:db8::/32",
        ] {
            let r = TraceRequest::parse(q).unwrap();
            assert_eq!(TraceRequest::parse(&r.to_query()).unwrap(), r, "{q}");
        }
        assert_eq!(TraceRequest::parse("").unwrap().count, DEFAULT_TRACE_COUNT);
        for (q, says) in [
            ("ce=10.96.1", "is not an IPv4 address"),
            ("count=many", "is not a number"),
            ("ce=10.0.0.1&ipv6=::1", "at most one"),
            ("colour=red", "unknown trace parameter"),
        ] {
            let e = TraceRequest::parse(q).unwrap_err();
            assert!(e.contains(says), "{q}: {e}");
        }
    }

    #[test]
    fn events_print_with_the_counter_names() {
        let e = TraceEvent {
            ns: 0,
            time: 0.25,
            stage: "forwarder",
            interface: "gw-lan".into(),
            packet: summary(&echo(LAN_SERVER, CE1_V6, 64, 0, 8)),
            kind: "path",
            name: "encapsulated",
            to: "gw-wan next hop 02:00:00:00:00:01".into(),
        };
        let line = e.line();
        assert!(line.contains("forwarder gw-lan"), "{line}");
        assert!(
            line.ends_with(": path encapsulated -> gw-wan next hop 02:00:00:00:00:01"),
            "{line}"
        );
        let json: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(json["name"], "encapsulated");
        assert_eq!(json["kind"], "path");
        let inner = summary(&ipv4(
            "10.96.1.100",
            "10.255.255.222",
            0,
            41,
            &echo(CE1_V6, LAN_SERVER, 64, 0, 8),
        ));
        assert!(
            inner.starts_with("IPv4 10.96.1.100 -> 10.255.255.222 protocol 41"),
            "{inner}"
        );
        assert!(
            inner.contains("[IPv6 2001:db8:0:f096:a60:164:0:1 -> "),
            "{inner}"
        );
    }

    #[test]
    fn frames_give_their_ip_packet_past_vlan_tags() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0, 7, 0x86, 0xdd, 0x60]);
        assert_eq!(ip_of_frame(&frame), &[0x60]);
        assert_eq!(ip_of_frame(&[0u8; 5]), &[] as &[u8]);
    }
}

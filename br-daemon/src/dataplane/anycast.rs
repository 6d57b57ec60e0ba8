//! Anycast: the BR announces itself to the routing daemon only while it
//! relays (docs/anycast.md). The announcements are routes in a table of
//! their own (`announce-table`), through the TUN interface, with protocol
//! `br6rd` (250): each BR IPv4 address as a /32 and each 6rd prefix.
//! BIRD's `kernel` protocol learns them from that table and its BGP or
//! OSPF exports them; withdrawing them withdraws the BR. They leave with
//! the TUN when the process dies (kill -9 included). The slow-path routes
//! of the main table are not touched, so a draining BR keeps relaying
//! what still reaches it.
//!
//! Health: every worker's loop has turned since the last check, the XDP
//! program is attached, and the data-path self-check (`selfcheck.rs`) does
//! not fail; a draining BR is healthy but not announced.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::relay::Domain;

/// The `proto` of the announcement routes (rt_protos: unassigned range),
/// so BIRD's `learn` takes them and nothing else in the table is ours.
pub const RTPROTO_BR6RD: u8 = 250;

/// The prefixes a BR announces for `domains`.
pub fn announced(domains: &[Domain]) -> BTreeSet<IpNet> {
    let v4 = domains
        .iter()
        .flat_map(|d| d.br_ipv4_all().iter())
        .map(|a| IpNet::from(ipnet::Ipv4Net::from(*a)));
    let v6 = domains.iter().map(|d| IpNet::from(d.prefix()));
    v4.chain(v6).collect()
}

/// The `ip` argument lists that turn announcements `from` into `to` in
/// `table` through `dev`: new ones first, then the ones gone.
pub fn changes(
    from: &BTreeSet<IpNet>,
    to: &BTreeSet<IpNet>,
    dev: &str,
    table: u32,
) -> Vec<Vec<String>> {
    let route = |verb: &str, net: &IpNet| -> Vec<String> {
        let family = if matches!(net, IpNet::V4(_)) {
            "-4"
        } else {
            "-6"
        };
        [
            family,
            "route",
            verb,
            &net.to_string(),
            "dev",
            dev,
            "table",
            &table.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["proto".to_string(), RTPROTO_BR6RD.to_string()])
        .collect()
    };
    let added = to.difference(from).map(|n| route("replace", n));
    let removed = from.difference(to).map(|n| route("del", n));
    added.chain(removed).collect()
}

/// Whether the BR should attract traffic, from what was seen since the
/// last check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Every worker turned its loop since the last check.
    pub workers_alive: bool,
    /// The XDP program is attached to every interface.
    pub xdp_attached: bool,
    /// The data-path self-check has not failed (see `selfcheck.rs`).
    pub probes_relayed: bool,
    /// The operator asked to drain.
    pub draining: bool,
}

impl Health {
    /// Relaying: the data path works (announce it unless draining).
    pub fn relaying(&self) -> bool {
        self.workers_alive && self.xdp_attached && self.probes_relayed
    }

    /// Announce the BR now.
    pub fn announce(&self) -> bool {
        self.relaying() && !self.draining
    }

    /// What is wrong, in words, for the log and `/health`.
    pub fn reason(&self) -> &'static str {
        match (
            self.workers_alive,
            self.xdp_attached,
            self.probes_relayed,
            self.draining,
        ) {
            (false, _, _, _) => "a worker stopped turning",
            (_, false, _, _) => "XDP is not attached",
            (_, _, false, _) => "the data-path self-check failed (its probes were not relayed)",
            (_, _, _, true) => "draining (br-daemon drain)",
            _ => "relaying",
        }
    }
}

/// Per-worker loop counters seen at the last check; true when every one
/// has moved since (a stuck or dead worker does not).
pub fn all_moved(before: &[u64], now: &[u64]) -> bool {
    before.len() == now.len() && before.iter().zip(now).all(|(b, n)| n != b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::DomainSpec;

    fn domain(prefix: &str, br: &str) -> Domain {
        let spec = DomainSpec::new("d", prefix.parse().unwrap(), 0, br.parse().unwrap());
        Domain::new(&spec).unwrap().0
    }

    fn joined(c: Vec<Vec<String>>) -> Vec<String> {
        c.iter().map(|v| v.join(" ")).collect()
    }

    #[test]
    fn a_healthy_br_announces_its_addresses_and_prefixes() {
        let on = announced(&[domain("2001:db8:0:f096::/64", "10.255.255.222")]);
        assert_eq!(
            joined(changes(&BTreeSet::new(), &on, "br6rd0", 6969)),
            [
                "-4 route replace 10.255.255.222/32 dev br6rd0 table 6969 proto 250",
                "-6 route replace 2001:db8:0:f096::/64 dev br6rd0 table 6969 proto 250",
            ]
        );
        assert_eq!(
            joined(changes(&on, &BTreeSet::new(), "br6rd0", 6969)),
            [
                "-4 route del 10.255.255.222/32 dev br6rd0 table 6969 proto 250",
                "-6 route del 2001:db8:0:f096::/64 dev br6rd0 table 6969 proto 250",
            ]
        );
        assert!(changes(&on, &on.clone(), "br6rd0", 6969).is_empty());
    }

    #[test]
    fn a_reload_adds_before_it_withdraws_and_keeps_the_rest() {
        let kept = domain("2001:db8:0:f096::/64", "10.255.255.222");
        let from = announced(&[kept.clone(), domain("2001:db8:1::/48", "10.255.255.1")]);
        let to = announced(&[kept, domain("2001:db8:2::/48", "10.255.255.1")]);
        assert_eq!(
            joined(changes(&from, &to, "t", 7)),
            [
                "-6 route replace 2001:db8:2::/48 dev t table 7 proto 250",
                "-6 route del 2001:db8:1::/48 dev t table 7 proto 250",
            ]
        );
    }

    #[test]
    fn health_needs_turning_workers_and_xdp_and_drain_only_withdraws() {
        let ok = Health {
            workers_alive: true,
            xdp_attached: true,
            probes_relayed: true,
            draining: false,
        };
        assert!(ok.announce() && ok.relaying());
        let draining = Health {
            draining: true,
            ..ok
        };
        assert!(!draining.announce() && draining.relaying());
        assert_eq!(draining.reason(), "draining (br-daemon drain)");
        let stuck = Health {
            workers_alive: false,
            ..ok
        };
        assert!(!stuck.announce());
        let broken = Health {
            probes_relayed: false,
            ..ok
        };
        assert!(!broken.relaying() && !broken.announce());
        assert!(broken.reason().contains("self-check"));
        assert!(all_moved(&[1, 5], &[2, 9]));
        assert!(!all_moved(&[1, 5], &[2, 5]), "the second worker is stuck");
    }
}

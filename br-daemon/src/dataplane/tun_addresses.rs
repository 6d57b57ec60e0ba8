//! What the TUN interface carries for a set of domains (the BR's /128s,
//! its IPv4 /32s and a route per 6rd prefix), and the `ip` commands that
//! turn one set into another without a window: everything new is added
//! before anything old is removed, and what both sets hold is not touched,
//! so a reload never leaves a packet for an unchanged domain without its
//! address or route (a removed address made the host route the BR's own
//! packets back into the TUN until it returned).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::relay::Domain;

/// The addresses and routes of the TUN interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TunAddresses {
    ipv6: BTreeSet<Ipv6Addr>,
    ipv4: BTreeSet<Ipv4Addr>,
    routes: BTreeSet<Ipv6Net>,
}

impl TunAddresses {
    /// What the TUN should carry for these domains.
    pub fn of(domains: &[Domain]) -> TunAddresses {
        TunAddresses {
            ipv6: domains.iter().map(|d| d.br_ipv6()).collect(),
            ipv4: domains
                .iter()
                .flat_map(|d| d.br_ipv4_all().iter().copied())
                .collect(),
            routes: domains.iter().map(|d| d.prefix()).collect(),
        }
    }

    /// The `ip` argument lists that change `self` into `new` on the
    /// interface `dev`: additions first, then removals.
    pub fn changes_to(&self, new: &TunAddresses, dev: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut cmd = |words: &[&str], what: String, extra: &[&str]| {
            let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            v.insert(3, what);
            v.extend(["dev", dev].iter().chain(extra).map(|w| w.to_string()));
            out.push(v);
        };
        // No duplicate address detection on the BR's /128: it is the only
        // holder, and DAD would delay the address.
        for a in new.ipv6.difference(&self.ipv6) {
            cmd(&["-6", "addr", "replace"], format!("{a}/128"), &["nodad"]);
        }
        for a in new.ipv4.difference(&self.ipv4) {
            cmd(&["-4", "addr", "replace"], format!("{a}/32"), &[]);
        }
        for r in new.routes.difference(&self.routes) {
            cmd(&["-6", "route", "replace"], r.to_string(), &[]);
        }
        for r in self.routes.difference(&new.routes) {
            cmd(&["-6", "route", "del"], r.to_string(), &[]);
        }
        for a in self.ipv4.difference(&new.ipv4) {
            cmd(&["-4", "addr", "del"], format!("{a}/32"), &[]);
        }
        for a in self.ipv6.difference(&new.ipv6) {
            cmd(&["-6", "addr", "del"], format!("{a}/128"), &[]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::DomainSpec;

    fn domain(prefix: &str, br: &str) -> Domain {
        let spec = DomainSpec::new("d", prefix.parse().unwrap(), 0, br.parse().unwrap());
        Domain::new(&spec).unwrap().0
    }

    fn joined(cmds: &[Vec<String>]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn an_unchanged_domain_is_not_touched() {
        let a = TunAddresses::of(&[domain("2001:db8:0:f096::/64", "10.255.255.222")]);
        assert!(a.changes_to(&a.clone(), "br6rd0").is_empty());
    }

    #[test]
    fn the_first_configuration_adds_everything() {
        let d = domain("2001:db8:0:f096::/64", "10.255.255.222");
        let new = TunAddresses::of(std::slice::from_ref(&d));
        assert_eq!(
            joined(&TunAddresses::default().changes_to(&new, "br6rd0")),
            [
                format!("-6 addr replace {}/128 dev br6rd0 nodad", d.br_ipv6()),
                "-4 addr replace 10.255.255.222/32 dev br6rd0".to_string(),
                "-6 route replace 2001:db8:0:f096::/64 dev br6rd0".to_string(),
            ]
        );
    }

    #[test]
    fn a_changed_domain_is_added_before_the_old_one_goes() {
        let kept = domain("2001:db8:0:f096::/64", "10.255.255.222");
        let old = domain("2001:db8:1::/48", "10.255.255.1");
        let new = domain("2001:db8:2::/48", "10.255.255.2");
        let from = TunAddresses::of(&[kept.clone(), old.clone()]);
        let to = TunAddresses::of(&[kept.clone(), new.clone()]);
        let cmds = joined(&from.changes_to(&to, "t"));
        assert_eq!(
            cmds,
            [
                format!("-6 addr replace {}/128 dev t nodad", new.br_ipv6()),
                "-4 addr replace 10.255.255.2/32 dev t".to_string(),
                "-6 route replace 2001:db8:2::/48 dev t".to_string(),
                "-6 route del 2001:db8:1::/48 dev t".to_string(),
                "-4 addr del 10.255.255.1/32 dev t".to_string(),
                format!("-6 addr del {}/128 dev t", old.br_ipv6()),
            ]
        );
        assert!(!cmds.iter().any(|c| c.contains(&kept.br_ipv6().to_string())));
        // The last domain removed: everything goes (a removed domain's
        // route must not stay pointing into the TUN).
        let gone = joined(&to.changes_to(&TunAddresses::default(), "t"));
        assert_eq!(gone.iter().filter(|c| c.contains(" del ")).count(), 6);
    }
}

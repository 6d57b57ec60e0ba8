//! `br-daemon map`: the other side of the 6rd mapping, for operators who
//! used to compute it with printf.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::relay::{is_martian_ipv4, Domain};

/// One answer: the domain, what the query maps to in it, and what the
/// relay does with it when it does not simply relay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub domain: String,
    /// The other side of the mapping (prefix, address or range).
    pub value: String,
    pub note: Option<Note>,
}

/// Why the relay treats an answer specially, and the drop counter that
/// counts its packets if it drops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub says: &'static str,
    pub drop_reason: Option<&'static str>,
}

impl Answer {
    /// What `map` prints: `value (note, drop-reason)`.
    pub fn text(&self) -> String {
        match self.note {
            None => self.value.clone(),
            Some(Note {
                says,
                drop_reason: None,
            }) => format!("{} ({says})", self.value),
            Some(Note {
                says,
                drop_reason: Some(r),
            }) => format!("{} ({says}, {r})", self.value),
        }
    }

    /// What `map --json` prints for it.
    pub fn to_json(&self, query: &str) -> serde_json::Value {
        serde_json::json!({
            "query": query,
            "domain": self.domain,
            "answer": self.value,
            "relayed": self.note.is_none_or(|n| n.drop_reason.is_none()),
            "note": self.note.map(|n| n.says),
            "drop-reason": self.note.and_then(|n| n.drop_reason),
        })
    }
}

const fn dropped(says: &'static str, reason: &'static str) -> Option<Note> {
    Some(Note {
        says,
        drop_reason: Some(reason),
    })
}

/// What the relay does with packets of CE `ce` in `d`, when it does not
/// simply relay them (docs/counters.md names the counters).
fn fate(d: &Domain, ce: Ipv4Addr, br_known: bool) -> Option<Note> {
    if is_martian_ipv4(ce) {
        dropped(
            "no CE can have this address: the relay drops it",
            "martian-ipv4",
        )
    } else if br_known && d.is_br_ipv4(ce) {
        dropped(
            "the BR itself: the relay drops packets towards it",
            "martian-ipv4",
        )
    } else if !d.ce_allowed(ce) {
        dropped(
            "outside ce-ipv4-allow: the relay drops it",
            "ce-not-allowed",
        )
    } else {
        None
    }
}

/// Maps an IPv4 address (→ delegated prefix), an IPv6 address (→ CE IPv4)
/// or an IPv6 prefix (→ the CE IPv4 address or range it covers), saying
/// what the relay would do with it. `br_known`: the domains have a real
/// BR address (not given by flags without one), so answers may name it.
pub fn map(domains: &[Domain], query: &str, br_known: bool) -> Result<Vec<Answer>, String> {
    let answer = |d: &Domain, value: String, note: Option<Note>| Answer {
        domain: d.name().to_string(),
        value,
        note,
    };
    let answers: Vec<Answer> = if let Ok(v4) = query.parse::<Ipv4Addr>() {
        domains
            .iter()
            .filter_map(|d| {
                let p = d.delegated_prefix(v4)?;
                Some(answer(d, p.to_string(), fate(d, v4, br_known)))
            })
            .collect()
    } else if let Ok(v6) = query.parse::<Ipv6Addr>() {
        domains
            .iter()
            .filter_map(|d| {
                let ce = d.ce_ipv4(v6)?;
                let note = if br_known && v6 == d.br_ipv6() {
                    Some(Note {
                        says: "the BR's own address",
                        drop_reason: None,
                    })
                } else if br_known && d.in_br_prefix(v6) {
                    dropped("inside the BR's own prefix: dropped", "br-own-prefix")
                } else {
                    fate(d, ce, br_known)
                };
                Some(answer(d, ce.to_string(), note))
            })
            .collect()
    } else if let Ok(net) = query.parse::<Ipv6Net>() {
        domains
            .iter()
            .filter_map(|d| {
                let range = prefix_to_ipv4(d, net)?;
                // One CE: what the relay does with it, as for an address.
                let note = (range.prefix_len() == 32)
                    .then(|| fate(d, range.addr(), br_known))
                    .flatten();
                Some(answer(d, range.to_string(), note))
            })
            .collect()
    } else if let Ok(net) = query.parse::<Ipv4Net>() {
        domains
            .iter()
            .filter_map(|d| {
                let covered = ipv4_to_prefix(d, net)?;
                let note = (net.prefix_len() == 32)
                    .then(|| fate(d, net.addr(), br_known))
                    .flatten();
                Some(answer(d, covered.to_string(), note))
            })
            .collect()
    } else {
        return Err(format!(
            "{query:?} is neither an IPv4 address or prefix nor an IPv6 address or prefix"
        ));
    };
    if answers.is_empty() {
        return Err(format!("{query} is in no configured 6rd domain"));
    }
    Ok(answers)
}

/// The CE addresses an IPv6 prefix inside the 6rd prefix covers (all of
/// them, the common prefix, for one that covers the whole 6rd prefix).
fn prefix_to_ipv4(d: &Domain, net: Ipv6Net) -> Option<Ipv4Net> {
    if net.contains(&d.prefix()) {
        return Some(d.common_ipv4_prefix());
    }
    if !d.prefix().contains(&net) {
        return None;
    }
    let ce = d.ce_ipv4(net.network())?;
    let covered = net.prefix_len().saturating_sub(d.prefix().prefix_len());
    let len = (d.ipv4_mask_len() + covered).min(32);
    Ipv4Net::new(ce, len).ok().map(|n| n.trunc())
}

/// The IPv6 prefix the CEs of an IPv4 prefix share: their delegated
/// prefixes, shortened by the IPv4 bits the prefix leaves open.
fn ipv4_to_prefix(d: &Domain, net: Ipv4Net) -> Option<Ipv6Net> {
    let net = net.trunc();
    let common = d.common_ipv4_prefix();
    if net.prefix_len() <= common.prefix_len() {
        // Covers the whole domain (or more): its 6rd prefix, if it overlaps.
        return net.contains(&common.network()).then_some(d.prefix());
    }
    let delegated = d.delegated_prefix(net.network())?;
    let open = 32 - net.prefix_len();
    let len = delegated.prefix_len() - open;
    Ipv6Net::new(delegated.network(), len)
        .ok()
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::DomainSpec;

    fn domains() -> Vec<Domain> {
        let a = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().unwrap(),
            0,
            "10.255.255.222".parse().unwrap(),
        );
        let b = DomainSpec::new(
            "strict",
            "2001:db8:100::/40".parse().unwrap(),
            8,
            "10.255.255.222".parse().unwrap(),
        );
        vec![Domain::new(&a).unwrap().0, Domain::new(&b).unwrap().0]
    }

    fn texts(q: &str) -> Vec<String> {
        map(&domains(), q, true)
            .unwrap()
            .into_iter()
            .map(|a| a.text())
            .collect()
    }

    #[test]
    fn both_directions_and_prefixes() {
        assert_eq!(
            texts("10.96.1.100"),
            ["2001:db8:0:f096:a60:164::/96", "2001:db8:160:164::/64"]
        );
        assert_eq!(texts("2001:db8:0:f096:a60:164::1"), ["10.96.1.100"]);
        assert_eq!(texts("2001:db8:0:f096:a60::/80"), ["10.96.0.0/16"]);
        assert_eq!(texts("2001:db8:101::/48"), ["10.1.0.0/16"]);
        assert_eq!(
            texts("2001:db8:0:f096:aff:ffde::1"),
            ["10.255.255.222 (the BR's own address)"]
        );
        assert!(map(&domains(), "2001:db9::1", true)
            .unwrap_err()
            .contains("no configured 6rd domain"));
        assert!(map(&domains(), "nonsense", true).is_err());
    }

    #[test]
    fn answers_say_what_the_relay_does() {
        assert_eq!(
            texts("2001:db8:0:f096::1"),
            ["0.0.0.0 (no CE can have this address: the relay drops it, martian-ipv4)"]
        );
        assert_eq!(
            texts("224.0.0.1")[0],
            "2001:db8:0:f096:e000:1::/96 (no CE can have this address: the relay drops it, martian-ipv4)"
        );
        assert!(texts("10.255.255.222")[0].contains("(the BR itself"));
        // A prefix covering the whole domain covers every CE.
        assert_eq!(texts("2001:db8:0:f096::/60")[0], "0.0.0.0/0");
        // Without a BR, nothing is said of one.
        let no_br = map(&domains(), "10.255.255.222", false).unwrap();
        assert!(!no_br[0].text().contains("BR"), "{no_br:?}");
        let own = map(&domains(), "2001:db8:0:f096:aff:ffde::1", false).unwrap();
        assert_eq!(own[0].text(), "10.255.255.222", "{own:?}");
    }

    #[test]
    fn ipv4_prefixes_map_to_the_prefix_their_ces_share() {
        assert_eq!(
            texts("10.96.1.0/24"),
            ["2001:db8:0:f096:a60:100::/88", "2001:db8:160:100::/56"]
        );
        assert_eq!(
            texts("10.0.0.0/8"),
            ["2001:db8:0:f096:a00::/72", "2001:db8:100::/40"]
        );
        assert_eq!(texts("0.0.0.0/0")[0], "2001:db8:0:f096::/64");
        // A single address as a /32, with its fate.
        assert!(texts("10.255.255.222/32")[0].contains("(the BR itself"));
    }

    #[test]
    fn a_prefix_of_one_ce_says_what_the_relay_does_with_it() {
        assert!(texts("2001:db8:0:f096:aff:ffde::/96")[0].contains("(the BR itself"));
        assert!(texts("2001:db8:0:f096:e000:1::/96")[0].contains("martian-ipv4"));
        assert_eq!(texts("2001:db8:0:f096:a60:164::/96"), ["10.96.1.100/32"]);
    }

    #[test]
    fn json_answers_carry_the_same_facts() {
        let a = &map(&domains(), "2001:db8:0:f096::1", true).unwrap()[0];
        assert_eq!(
            a.to_json("2001:db8:0:f096::1"),
            serde_json::json!({
                "query": "2001:db8:0:f096::1", "domain": "vpc", "answer": "0.0.0.0",
                "relayed": false, "drop-reason": "martian-ipv4",
                "note": "no CE can have this address: the relay drops it",
            })
        );
        let a = &map(&domains(), "10.96.1.100", true).unwrap()[0];
        let j = a.to_json("10.96.1.100");
        assert_eq!(j["answer"], "2001:db8:0:f096:a60:164::/96");
        assert_eq!(j["relayed"], true);
        assert!(j["drop-reason"].is_null() && j["note"].is_null());
    }
}

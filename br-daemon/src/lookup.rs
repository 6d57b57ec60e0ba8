//! `br-daemon map`: the other side of the 6rd mapping, for operators who
//! used to compute it with printf.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::relay::Domain;

/// One answer: the domain and what the query maps to in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub domain: String,
    pub text: String,
}

/// Maps an IPv4 address (→ delegated prefix), an IPv6 address (→ CE IPv4)
/// or an IPv6 prefix (→ the CE IPv4 address or range it covers).
pub fn map(domains: &[Domain], query: &str) -> Result<Vec<Answer>, String> {
    let answer = |d: &Domain, text: String| Answer {
        domain: d.name().to_string(),
        text,
    };
    let answers: Vec<Answer> = if let Ok(v4) = query.parse::<Ipv4Addr>() {
        domains
            .iter()
            .filter_map(|d| {
                let p = d.delegated_prefix(v4)?;
                let note = if d.is_br_ipv4(v4) {
                    " (the BR itself)"
                } else {
                    ""
                };
                Some(answer(d, format!("{p}{note}")))
            })
            .collect()
    } else if let Ok(v6) = query.parse::<Ipv6Addr>() {
        domains
            .iter()
            .filter_map(|d| {
                let ce = d.ce_ipv4(v6)?;
                let note = if v6 == d.br_ipv6() {
                    " (the BR's own address)"
                } else if d.in_br_prefix(v6) {
                    " (inside the BR's own prefix: dropped, br-own-prefix)"
                } else {
                    ""
                };
                Some(answer(d, format!("{ce}{note}")))
            })
            .collect()
    } else if let Ok(net) = query.parse::<Ipv6Net>() {
        domains
            .iter()
            .filter_map(|d| prefix_to_ipv4(d, net).map(|r| answer(d, r.to_string())))
            .collect()
    } else {
        return Err(format!(
            "{query:?} is neither an IPv4 address, an IPv6 address nor an IPv6 prefix"
        ));
    };
    if answers.is_empty() {
        return Err(format!("{query} is in no configured 6rd domain"));
    }
    Ok(answers)
}

/// The CE addresses an IPv6 prefix inside the 6rd prefix covers.
fn prefix_to_ipv4(d: &Domain, net: Ipv6Net) -> Option<Ipv4Net> {
    if !d.prefix().contains(&net) {
        return None;
    }
    let ce = d.ce_ipv4(net.network())?;
    let covered = net.prefix_len().saturating_sub(d.prefix().prefix_len());
    let len = (d.ipv4_mask_len() + covered).min(32);
    Ipv4Net::new(ce, len).ok().map(|n| n.trunc())
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
        map(&domains(), q)
            .unwrap()
            .into_iter()
            .map(|a| a.text)
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
        assert!(map(&domains(), "2001:db9::1")
            .unwrap_err()
            .contains("no configured 6rd domain"));
        assert!(map(&domains(), "nonsense").is_err());
    }
}

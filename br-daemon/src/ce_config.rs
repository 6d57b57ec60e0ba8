//! The configuration a Linux 6rd CE (kernel `sit` in 6rd mode) needs to
//! reach this BR, in the two forms operators paste: iproute2 commands and
//! a RHEL/Amazon Linux `ifcfg-sit1` file with its `rc.local` line.
//!
//! Linux refuses a 6rd setting unless
//! `6rd prefix length + (32 - relay prefix length) <= 64`
//! (`ipip6_tunnel_update_6rd` in `net/ipv6/sit.c`). When the domain's
//! own IPv4MaskLen fits, the CE gets it and reaches other CEs directly
//! (RFC 5969 §7.1); otherwise it gets its own address as a /32 relay
//! prefix. Then sit maps every 6rd-prefix destination to the CE's own IPv4
//! address: IPv6 to other CEs never leaves the CE (docs/linux-ce.md has the
//! test that shows it); everything else goes to the BR.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::relay::Domain;

/// Why no CE configuration can be produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CeConfigError {
    #[error("{ce} is not in domain {domain:?}'s common IPv4 prefix {common}")]
    OutsideDomain {
        ce: Ipv4Addr,
        domain: String,
        common: Ipv4Net,
    },
    #[error("{0} is the BR's own address, not a CE")]
    IsBr(Ipv4Addr),
    #[error("{0} cannot be a CE: it is not a unicast address (0/8, 127/8, 224/4, 240/4); the relay drops its packets (martian-ipv4)")]
    NotUnicast(Ipv4Addr),
    #[error("{ce} is outside domain {domain:?}'s ce-ipv4-allow: the relay drops its packets (ce-not-allowed); add its prefix to ce-ipv4-allow first")]
    NotAllowed { ce: Ipv4Addr, domain: String },
}

/// What a CE is given, computed once and rendered in several forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CePlan {
    pub ce: Ipv4Addr,
    pub delegated: Ipv6Net,
    /// The tunnel address, with the prefix length the CE puts on `sit1`.
    pub address: Ipv6Net,
    /// The 6rd-relay_prefix Linux will accept.
    pub relay_prefix: Ipv4Net,
    /// Whether that relay prefix is the domain's own (the CE embeds
    /// IPv4 bits itself and reaches other CEs directly).
    pub direct_ce_to_ce: bool,
    /// The BR as the CE's default gateway, in IPv4-compatible form
    /// (`::10.255.255.222`), which is how sit finds the IPv4 next hop.
    pub gateway: Ipv4Compatible,
    pub mtu: u16,
    pub ttl: u8,
}

/// An IPv4-compatible IPv6 address, printed the way sit configurations
/// write it (`::10.255.255.222`; Rust would print `::aff:ffde`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Compatible(pub Ipv4Addr);

impl std::fmt::Display for Ipv4Compatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "::{}", self.0)
    }
}

impl From<Ipv4Compatible> for Ipv6Addr {
    fn from(a: Ipv4Compatible) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(u32::from(a.0)))
    }
}

/// The largest number of IPv4 bits a Linux CE can embed after a 6rd prefix.
pub fn linux_max_embedded_bits(prefix_len: u8) -> i16 {
    64 - i16::from(prefix_len)
}

impl CePlan {
    /// The plan for CE `ce` of `domain`.
    pub fn new(domain: &Domain, ce: Ipv4Addr) -> Result<CePlan, CeConfigError> {
        if crate::relay::is_martian_ipv4(ce) {
            return Err(CeConfigError::NotUnicast(ce));
        }
        if domain.is_br_ipv4(ce) {
            return Err(CeConfigError::IsBr(ce));
        }
        if domain.contains_ipv4(ce) && !domain.ce_allowed(ce) {
            return Err(CeConfigError::NotAllowed {
                ce,
                domain: domain.name().to_string(),
            });
        }
        let delegated =
            domain
                .delegated_prefix(ce)
                .ok_or_else(|| CeConfigError::OutsideDomain {
                    ce,
                    domain: domain.name().to_string(),
                    common: domain.common_ipv4_prefix(),
                })?;
        let embedded = 32 - i16::from(domain.ipv4_mask_len());
        let direct = embedded <= linux_max_embedded_bits(domain.prefix().prefix_len());
        let (relay_prefix, on_link_len) = if direct {
            // The whole 6rd prefix is on-link through sit1: Linux computes
            // other CEs' IPv4 addresses itself (try_6rd).
            (domain.common_ipv4_prefix(), domain.prefix().prefix_len())
        } else {
            (
                Ipv4Net::new(ce, 32).expect("32 is a valid length"),
                delegated.prefix_len(),
            )
        };
        let address = Ipv6Addr::from(u128::from(delegated.network()) | 1);
        let br = domain.br_ipv4();
        Ok(CePlan {
            ce,
            delegated,
            address: Ipv6Net::new(address, on_link_len).expect("length from a prefix"),
            relay_prefix,
            direct_ce_to_ce: direct,
            gateway: Ipv4Compatible(br),
            mtu: domain.mtu(),
            ttl: domain.ttl(),
        })
    }

    /// The `ip` lines that configure the tunnel by hand.
    pub fn ip_commands(&self, domain: &Domain, dev: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ip tunnel add {dev} mode sit local {} ttl {}",
            self.ce, self.ttl
        );
        self.relay_comment(&mut s, domain);
        let _ = writeln!(
            s,
            "ip tunnel 6rd dev {dev} 6rd-prefix {} 6rd-relay_prefix {}",
            domain.prefix(),
            self.relay_prefix
        );
        let _ = writeln!(s, "ip link set dev {dev} mtu {} up", self.mtu);
        let _ = writeln!(s, "ip -6 addr add {} dev {dev}", self.address);
        let _ = writeln!(
            s,
            "ip -6 route add default via {} dev {dev} metric 1",
            self.gateway
        );
        s
    }

    fn relay_comment(&self, s: &mut String, domain: &Domain) {
        if !self.direct_ce_to_ce {
            let _ = writeln!(
                s,
                "# Linux accepts a 6rd setting only when 6rd prefix length + (32 - relay prefix length) <= 64.\n\
                 # With the /{} 6rd prefix that rules out the domain's {}: this CE embeds no IPv4 bits\n\
                 # itself, so sit maps every 6rd-prefix destination to its own address: IPv6 to other\n\
                 # CEs never leaves this CE (use IPv4 between instances); all else goes to the BR.",
                domain.prefix().prefix_len(),
                domain.common_ipv4_prefix()
            );
        }
    }

    /// `/etc/sysconfig/network-scripts/ifcfg-<dev>` and the `rc.local` line.
    pub fn ifcfg(&self, domain: &Domain, dev: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# /etc/sysconfig/network-scripts/ifcfg-{dev}");
        let _ = writeln!(s, "DEVICE={dev}");
        let _ = writeln!(s, "IPV6INIT=yes");
        let _ = writeln!(s, "IPV6_MTU={}", self.mtu);
        let _ = writeln!(s, "IPV6_DEFAULTGW={}", self.gateway);
        let _ = writeln!(s, "IPV6TUNNELIPV4=any");
        let _ = writeln!(s, "IPV6TUNNELIPV4LOCAL={}", self.ce);
        let _ = writeln!(s, "IPV6ADDR={}", self.address);
        let _ = writeln!(s);
        let _ = writeln!(s, "# /etc/rc.d/rc.local");
        self.relay_comment(&mut s, domain);
        let _ = writeln!(
            s,
            "ip tunnel 6rd dev {dev} 6rd-prefix {} 6rd-relay_prefix {}",
            domain.prefix(),
            self.relay_prefix
        );
        s
    }
}

/// The complete text `br-daemon ce-config` prints.
pub fn render(domain: &Domain, ce: Ipv4Addr, dev: &str) -> Result<String, CeConfigError> {
    let plan = CePlan::new(domain, ce)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# 6rd CE {} in domain {:?} (6rd prefix {}, IPv4MaskLen {})",
        ce,
        domain.name(),
        domain.prefix(),
        domain.ipv4_mask_len()
    );
    let _ = writeln!(s, "# delegated prefix: {}", plan.delegated);
    let _ = writeln!(s, "# CE 6rd address:   {}", plan.address);
    let _ = writeln!(
        s,
        "# gateway (BR):     {} (BR IPv4 {})",
        plan.gateway,
        domain.br_ipv4()
    );
    let _ = writeln!(s, "# tunnel MTU:       {}", plan.mtu);
    let _ = writeln!(s, "\n## iproute2, as root");
    s.push_str(&plan.ip_commands(domain, dev));
    let _ = writeln!(s, "\n## RHEL / Amazon Linux network-scripts");
    s.push_str(&plan.ifcfg(domain, dev));
    Ok(s)
}

/// What `br-daemon ce-config --json` prints: the plan's facts, the
/// commands (without comments) and the ifcfg file.
pub fn render_json(
    domain: &Domain,
    ce: Ipv4Addr,
    dev: &str,
) -> Result<serde_json::Value, CeConfigError> {
    let plan = CePlan::new(domain, ce)?;
    let commands: Vec<String> = plan
        .ip_commands(domain, dev)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    Ok(serde_json::json!({
        "ce-ipv4": ce.to_string(),
        "domain": domain.name(),
        "6rd-prefix": domain.prefix().to_string(),
        "ipv4-mask-len": domain.ipv4_mask_len(),
        "br-ipv4": domain.br_ipv4().to_string(),
        "delegated-prefix": plan.delegated.to_string(),
        "address": plan.address.to_string(),
        "relay-prefix": plan.relay_prefix.to_string(),
        "direct-ce-to-ce": plan.direct_ce_to_ce,
        "gateway": plan.gateway.to_string(),
        "mtu": plan.mtu,
        "ttl": plan.ttl,
        "dev": dev,
        "ip-commands": commands,
        "ifcfg": plan.ifcfg(domain, dev),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::DomainSpec;

    fn domain(prefix: &str, k: u8) -> Domain {
        let spec = DomainSpec::new(
            "d",
            prefix.parse().unwrap(),
            k,
            "10.255.255.222".parse().unwrap(),
        );
        Domain::new(&spec).unwrap().0
    }

    #[test]
    fn scenario_ce_gets_the_scenario_configuration() {
        let text = render(
            &domain("2001:db8:0:f096::/64", 0),
            "10.96.1.100".parse().unwrap(),
            "sit1",
        )
        .unwrap();
        for line in [
            "ip tunnel 6rd dev sit1 6rd-prefix 2001:db8:0:f096::/64 6rd-relay_prefix 10.96.1.100/32",
            // RFC 5952 form, as `ip -6 addr` prints it: SCENARIO.md's
            // 2001:db8:0:f096:0a60:0164::1 is the same address.
            "ip -6 addr add 2001:db8:0:f096:a60:164:0:1/96 dev sit1",
            "ip -6 route add default via ::10.255.255.222 dev sit1 metric 1",
            "ip link set dev sit1 mtu 1280 up",
            "DEVICE=sit1",
            "IPV6INIT=yes",
            "IPV6_MTU=1280",
            "IPV6_DEFAULTGW=::10.255.255.222",
            "IPV6TUNNELIPV4=any",
            "IPV6TUNNELIPV4LOCAL=10.96.1.100",
            "IPV6ADDR=2001:db8:0:f096:a60:164:0:1/96",
            "# delegated prefix: 2001:db8:0:f096:a60:164::/96",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("6rd prefix length + (32 - relay prefix length) <= 64"));
    }

    #[test]
    fn rfc_domain_ce_embeds_the_common_prefix_and_goes_direct() {
        let d = domain("2001:db8:100::/40", 8);
        let plan = CePlan::new(&d, "10.1.2.3".parse().unwrap()).unwrap();
        assert!(plan.direct_ce_to_ce);
        assert_eq!(plan.relay_prefix, "10.0.0.0/8".parse().unwrap());
        assert_eq!(plan.address, "2001:db8:101:203::1/40".parse().unwrap());
        // Linux's own rule holds for what we print.
        let embedded = 32 - i16::from(plan.relay_prefix.prefix_len());
        assert!(i16::from(d.prefix().prefix_len()) + embedded <= 64);
    }

    #[test]
    fn every_generated_relay_prefix_is_one_linux_accepts() {
        for (prefix, k) in [
            ("2001:db8::/32", 0),
            ("2001:db8::/48", 16),
            ("2001:db8::/56", 0),
            ("2001:db8::/60", 30),
        ] {
            let d = domain(prefix, k);
            let ce = Ipv4Addr::from(u32::from(d.br_ipv4()) ^ 1);
            let plan = CePlan::new(&d, ce).unwrap();
            let embedded = 32 - i16::from(plan.relay_prefix.prefix_len());
            assert!(
                i16::from(d.prefix().prefix_len()) + embedded <= 64,
                "{prefix} k={k}"
            );
            assert!(plan.relay_prefix.contains(&ce));
        }
    }

    #[test]
    fn outside_the_domain_or_the_br_itself_is_refused() {
        let d = domain("2001:db8:100::/40", 8);
        assert!(matches!(
            CePlan::new(&d, "11.0.0.1".parse().unwrap()),
            Err(CeConfigError::OutsideDomain { .. })
        ));
        assert_eq!(
            CePlan::new(&d, "10.255.255.222".parse().unwrap()),
            Err(CeConfigError::IsBr("10.255.255.222".parse().unwrap()))
        );
    }

    #[test]
    fn a_ce_the_relay_would_not_accept_gets_no_configuration() {
        let mut spec = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().unwrap(),
            0,
            "10.255.255.222".parse().unwrap(),
        );
        spec.ce_ipv4_allow = vec!["10.96.0.0/16".parse().unwrap()];
        let d = Domain::new(&spec).unwrap().0;
        let refused = CePlan::new(&d, "192.168.1.1".parse().unwrap()).unwrap_err();
        assert!(refused.to_string().contains("ce-not-allowed"), "{refused}");
        assert!(CePlan::new(&d, "10.96.1.100".parse().unwrap()).is_ok());
    }
}

//! A 6rd domain and its address mapping (RFC 5969 §4, §7.1.1).
//!
//! A CE's delegated prefix is the 6rd prefix followed by the CE's IPv4
//! address with its first `IPv4MaskLen` bits (the domain's common IPv4
//! prefix) removed:
//!
//! ```text
//! |     n bits     |  o bits   |   m bits  |         128-n-o-m bits          |
//! +----------------+-----------+-----------+---------------------------------+
//! |  6rd prefix    |  IPv4 address  |  subnet ID  |     interface ID           |
//! +----------------+-----------+-----------+---------------------------------+
//! |<--- 6rd delegated prefix --->|
//! ```
//!
//! with `o = 32 - IPv4MaskLen` (RFC 5969 §4). Everything here is pure:
//! shifts and masks are precomputed when the domain is built, so mapping on
//! the packet path is a few integer operations.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The configured parameters of one 6rd domain, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec {
    /// A name for logs and counters.
    pub name: String,
    /// The 6rd prefix (RFC 5969 §4 "6rdPrefix" and "6rdPrefixLen").
    pub prefix: Ipv6Net,
    /// Number of high-order bits common to every CE IPv4 address
    /// (RFC 5969 §4 "IPv4MaskLen").
    pub ipv4_mask_len: u8,
    /// The BR's IPv4 addresses; the first is the source of encapsulated
    /// packets, all are accepted as the destination of CE traffic.
    pub br_ipv4: Vec<Ipv4Addr>,
    /// The BR's own IPv6 address in the domain. Derived from the first BR
    /// IPv4 address (`<delegated prefix>::1`) when not given.
    pub br_ipv6: Option<Ipv6Addr>,
    /// Source of the ICMPv6 errors the BR sends for this domain; default
    /// the BR's own 6rd address. Linux CEs with a /32 relay prefix drop
    /// errors from inside their 6rd prefix (docs/linux-ce.md).
    pub icmp_source: Option<Ipv6Addr>,
    /// An address inside the CEs' common IPv4 prefix, when the BR's own
    /// IPv4 address is not in it (the prefix is its first IPv4MaskLen bits).
    pub ce_ipv4_sample: Option<Ipv4Addr>,
    /// Largest IPv6 packet sent into the tunnel (RFC 4213 §3.2 static MTU).
    pub mtu: u16,
    /// TTL of the IPv4 header we add.
    pub ttl: u8,
    /// The IPv4 prefixes CEs may be in (empty: any address the mapping
    /// admits); protocol 41 from elsewhere and packets towards elsewhere
    /// are dropped (`ce-not-allowed`).
    pub ce_ipv4_allow: Vec<Ipv4Net>,
    /// The largest TCP MSS a SYN crossing the tunnel may announce
    /// (`tcp-mss`, Cisco `ipv6 tcp adjust-mss`); none: not clamped.
    pub tcp_mss: Option<u16>,
}

impl DomainSpec {
    /// A spec with the defaults for everything but the mapping itself.
    pub fn new(name: &str, prefix: Ipv6Net, ipv4_mask_len: u8, br_ipv4: Ipv4Addr) -> Self {
        DomainSpec {
            name: name.to_string(),
            prefix,
            ipv4_mask_len,
            br_ipv4: vec![br_ipv4],
            br_ipv6: None,
            icmp_source: None,
            ce_ipv4_sample: None,
            mtu: DEFAULT_TUNNEL_MTU,
            ttl: DEFAULT_TTL,
            ce_ipv4_allow: Vec::new(),
            tcp_mss: None,
        }
    }
}

/// RFC 4213 §3.2.1: the static tunnel MTU SHOULD be 1280.
pub const DEFAULT_TUNNEL_MTU: u16 = 1280;
/// TTL of the outer IPv4 header unless configured.
pub const DEFAULT_TTL: u8 = 64;
/// The IPv6 minimum link MTU (RFC 8200 §5).
pub const IPV6_MIN_MTU: u16 = 1280;
/// Whether a 6rd prefix lies in global unicast space (RFC 4291 §2.4:
/// 2000::/3, the space IANA allocates from) or unique local space
/// (RFC 4193 fc00::/7, for a private deployment), so that routing it into
/// the tunnel cannot capture link-local, multicast or mapped addresses.
fn is_global_unicast_prefix(p: Ipv6Net) -> bool {
    let bits = u128::from(p.network());
    (p.prefix_len() >= 3 && bits >> 125 == 1) || (p.prefix_len() >= 7 && bits >> 121 == 0x7e)
}

/// Most `ce-ipv4-allow` prefixes per domain: what the XDP program's
/// `struct domain_info` holds.
pub const MAX_CE_ALLOW: usize = br_ebpf::MAX_CE_ALLOW as usize;

/// Why a domain cannot work at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("ipv4-mask-len {0} is out of range: it counts IPv4 bits, 0..=32")]
    MaskLenOutOfRange(u8),
    #[error(
        "6rd prefix /{prefix_len} plus {embedded} embedded IPv4 bits (32 - ipv4-mask-len {mask_len}) \
         is {total} bits, longer than an IPv6 address (128)"
    )]
    DelegatedPrefixTooLong {
        prefix_len: u8,
        mask_len: u8,
        embedded: u8,
        total: u16,
    },
    #[error(
        "6rd prefix {0} is not global unicast space (it must lie inside 2000::/3, or fc00::/7 \
         for unique local addresses): ::/0, link-local, multicast or IPv4-mapped space would \
         route the host's own traffic into the tunnel"
    )]
    PrefixNotGlobalUnicast(Ipv6Net),
    #[error("6rd prefix {0} has bits set after its length; did you mean {1}?")]
    PrefixHostBits(Ipv6Net, Ipv6Net),
    #[error("the domain has no BR IPv4 address")]
    NoBrAddress,
    #[error("BR IPv4 address {0} cannot be a unicast tunnel endpoint")]
    BrAddressNotUnicast(Ipv4Addr),
    #[error(
        "BR IPv4 address {br} is outside the common IPv4 prefix {common}, so it has no address \
         in the 6rd prefix; set br-ipv6 to the BR's own IPv6 address"
    )]
    BrOutsideCommonPrefix { br: Ipv4Addr, common: Ipv4Net },
    #[error("br-ipv6 {0} is not inside the 6rd prefix {1}")]
    BrIpv6OutsidePrefix(Ipv6Addr, Ipv6Net),
    #[error("icmp-source {0} cannot be the source of a packet (unspecified, multicast, loopback or link-local)")]
    BadIcmpSource(Ipv6Addr),
    #[error("tunnel MTU {0} is below the IPv6 minimum of 1280 (RFC 8200 §5)")]
    MtuTooSmall(u16),
    #[error("tunnel MTU {0} does not fit in an IPv4 packet with a 20-byte header (at most 65515)")]
    MtuTooLarge(u16),
    #[error("TTL 0 would make every encapsulated packet expire at the first router")]
    ZeroTtl,
    #[error("ce-ipv4-allow has {0} prefixes; the XDP fast path holds at most {1} per domain")]
    TooManyCeAllow(usize, usize),
}

/// A departure from an RFC 5969 SHOULD that still works, with what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainWarning {
    /// The rule, e.g. "RFC 5969 §4".
    pub rule: &'static str,
    /// What the domain does, and what it means for the CEs.
    pub message: String,
}

impl fmt::Display for DomainWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// A validated 6rd domain with its mapping precomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    name: String,
    prefix: Ipv6Net,
    prefix_bits: u128,
    prefix_mask: u128,
    ipv4_mask_len: u8,
    /// The common IPv4 prefix bits (host order), already masked.
    ipv4_common: u32,
    ipv4_common_mask: u32,
    /// 32 - IPv4MaskLen: how many IPv4 bits a delegated prefix embeds.
    embedded_bits: u8,
    br_ipv4: Vec<Ipv4Addr>,
    br_ipv6: Ipv6Addr,
    icmp_source: Option<Ipv6Addr>,
    /// The BR's own delegated prefix (routed to Null0 on the Cisco box).
    br_prefix: Option<Ipv6Net>,
    mtu: u16,
    ttl: u8,
    ce_allow: Vec<Ipv4Net>,
    tcp_mss: Option<u16>,
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl Domain {
    /// Validates a spec. Returns the domain and the RFC SHOULDs it departs from.
    pub fn new(spec: &DomainSpec) -> Result<(Domain, Vec<DomainWarning>), DomainError> {
        let k = spec.ipv4_mask_len;
        if k > 32 {
            return Err(DomainError::MaskLenOutOfRange(k));
        }
        let n = spec.prefix.prefix_len();
        let embedded = 32 - k;
        let total = u16::from(n) + u16::from(embedded);
        if total > 128 {
            return Err(DomainError::DelegatedPrefixTooLong {
                prefix_len: n,
                mask_len: k,
                embedded,
                total,
            });
        }
        if !is_global_unicast_prefix(spec.prefix) {
            return Err(DomainError::PrefixNotGlobalUnicast(spec.prefix));
        }
        if spec.prefix.trunc() != spec.prefix {
            return Err(DomainError::PrefixHostBits(
                spec.prefix,
                spec.prefix.trunc(),
            ));
        }
        if spec.mtu < IPV6_MIN_MTU {
            return Err(DomainError::MtuTooSmall(spec.mtu));
        }
        if spec.mtu > 65535 - 20 {
            return Err(DomainError::MtuTooLarge(spec.mtu));
        }
        if spec.ttl == 0 {
            return Err(DomainError::ZeroTtl);
        }
        if let Some(a) = spec.icmp_source {
            if a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.is_unicast_link_local()
            {
                return Err(DomainError::BadIcmpSource(a));
            }
        }
        let first_br = *spec.br_ipv4.first().ok_or(DomainError::NoBrAddress)?;
        for br in &spec.br_ipv4 {
            if is_martian_ipv4(*br) {
                return Err(DomainError::BrAddressNotUnicast(*br));
            }
        }
        if spec.ce_ipv4_allow.len() > MAX_CE_ALLOW {
            return Err(DomainError::TooManyCeAllow(
                spec.ce_ipv4_allow.len(),
                MAX_CE_ALLOW,
            ));
        }
        let common_mask = mask32(k);
        let mut domain = Domain {
            name: spec.name.clone(),
            prefix: spec.prefix,
            prefix_bits: u128::from(spec.prefix.network()),
            prefix_mask: mask128(n),
            ipv4_mask_len: k,
            ipv4_common: u32::from(spec.ce_ipv4_sample.unwrap_or(first_br)) & common_mask,
            ipv4_common_mask: common_mask,
            embedded_bits: embedded,
            br_ipv4: spec.br_ipv4.clone(),
            br_ipv6: Ipv6Addr::UNSPECIFIED,
            icmp_source: spec.icmp_source,
            br_prefix: None,
            mtu: spec.mtu,
            ttl: spec.ttl,
            ce_allow: spec.ce_ipv4_allow.iter().map(Ipv4Net::trunc).collect(),
            tcp_mss: spec.tcp_mss,
        };
        // Unless told otherwise, the common prefix is the one the BR shares
        // with its CEs; with more than one BR address, the first one defines it.
        domain.br_prefix = domain.delegated_prefix(first_br);
        domain.br_ipv6 = match (spec.br_ipv6, domain.br_prefix) {
            (Some(addr), _) => {
                if !spec.prefix.contains(&addr) {
                    return Err(DomainError::BrIpv6OutsidePrefix(addr, spec.prefix));
                }
                addr
            }
            (None, Some(own)) => Ipv6Addr::from(u128::from(own.network()) | 1),
            (None, None) => {
                return Err(DomainError::BrOutsideCommonPrefix {
                    br: first_br,
                    common: domain.common_ipv4_prefix(),
                })
            }
        };
        let warnings = domain.rfc_departures();
        Ok((domain, warnings))
    }

    fn rfc_departures(&self) -> Vec<DomainWarning> {
        let mut warnings = Vec::new();
        if self.ipv4_mask_len == 0 && self.ce_allow.is_empty() {
            warnings.push(DomainWarning {
                rule: "RFC 5969 §12 (which IPv4 hosts may be CEs)",
                message: format!(
                    "domain {:?} embeds all 32 IPv4 bits and has no ce-ipv4-allow: any IPv4 \
                     host that can reach the BR address can send IPv6 into the LAN as a CE; \
                     list the CEs' prefixes (e.g. the VPC CIDR) in ce-ipv4-allow",
                    self.name
                ),
            });
        }
        let delegated = self.delegated_prefix_len();
        if delegated > 64 {
            warnings.push(DomainWarning {
                rule: "RFC 5969 §4 (delegated prefix SHOULD be /64 or shorter)",
                message: format!(
                    "domain {:?} delegates a /{delegated} to each CE: a CE cannot number a LAN \
                     behind it with SLAAC; it can use its 6rd address and static addresses \
                     inside its /{delegated}",
                    self.name
                ),
            });
        }
        if self.ipv4_mask_len == 0 && self.prefix.prefix_len() > 32 {
            warnings.push(DomainWarning {
                rule: "RFC 5969 §11 (with all 32 IPv4 bits embedded the 6rd prefix should be /32 or shorter)",
                message: format!(
                    "domain {:?} embeds all 32 IPv4 bits after a /{}",
                    self.name,
                    self.prefix.prefix_len()
                ),
            });
        }
        let linux_max_embedded = 64i16 - i16::from(self.prefix.prefix_len());
        if i16::from(self.embedded_bits) > linux_max_embedded {
            warnings.push(DomainWarning {
                rule: "Linux sit (6rd prefix length + 32 - relay prefix length <= 64)",
                message: format!(
                    "a Linux CE cannot be given 6rd-relay_prefix {}: it must use its own \
                     address/32, so sit maps every 6rd-prefix destination to its own IPv4 \
                     address and IPv6 between CEs never leaves the CE (they talk IPv4); \
                     LAN <-> CE works; `br-daemon ce-config` prints the right lines",
                    self.common_ipv4_prefix()
                ),
            });
        }
        if self.mtu > 1480 {
            warnings.push(DomainWarning {
                rule: "RFC 4213 §3.2.1 (static tunnel MTU between 1280 and 1480)",
                message: format!(
                    "domain {:?} tunnel MTU {} needs an IPv4 path MTU of {} to every CE",
                    self.name,
                    self.mtu,
                    u32::from(self.mtu) + 20
                ),
            });
        }
        warnings
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The 6rd prefix.
    pub fn prefix(&self) -> Ipv6Net {
        self.prefix
    }
    /// IPv4MaskLen.
    pub fn ipv4_mask_len(&self) -> u8 {
        self.ipv4_mask_len
    }
    /// The IPv4 prefix common to every CE of the domain.
    pub fn common_ipv4_prefix(&self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(self.ipv4_common), self.ipv4_mask_len)
            .expect("mask length validated to be <= 32")
    }
    /// Length of each CE's delegated prefix.
    pub fn delegated_prefix_len(&self) -> u8 {
        self.prefix.prefix_len() + self.embedded_bits
    }
    /// The BR IPv4 address used as the source of encapsulated packets.
    pub fn br_ipv4(&self) -> Ipv4Addr {
        self.br_ipv4[0]
    }
    /// Every BR IPv4 address of the domain.
    pub fn br_ipv4_all(&self) -> &[Ipv4Addr] {
        &self.br_ipv4
    }
    /// The BR's own IPv6 address in the domain (source of ICMPv6 it sends).
    pub fn br_ipv6(&self) -> Ipv6Addr {
        self.br_ipv6
    }
    /// Source of the ICMPv6 errors the BR originates for this domain.
    pub fn icmp_source(&self) -> Ipv6Addr {
        self.icmp_source.unwrap_or(self.br_ipv6)
    }
    /// The BR's own delegated prefix, when its IPv4 address is in the domain.
    pub fn br_prefix(&self) -> Option<Ipv6Net> {
        self.br_prefix
    }
    /// The static tunnel MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }
    /// TTL of the outer IPv4 header.
    pub fn ttl(&self) -> u8 {
        self.ttl
    }

    /// The MSS clamp of TCP SYNs crossing the tunnel, if any.
    pub fn tcp_mss(&self) -> Option<u16> {
        self.tcp_mss
    }

    /// The prefixes CEs may be in (empty: no list).
    pub fn ce_ipv4_allow(&self) -> &[Ipv4Net] {
        &self.ce_allow
    }

    /// Whether `ce` may be a CE of this domain (`ce-ipv4-allow`).
    pub fn ce_allowed(&self, ce: Ipv4Addr) -> bool {
        self.ce_allow.is_empty() || self.ce_allow.iter().any(|n| n.contains(&ce))
    }

    /// Whether `addr` is one of the BR's IPv4 addresses.
    #[inline]
    pub fn is_br_ipv4(&self, addr: Ipv4Addr) -> bool {
        self.br_ipv4.contains(&addr)
    }

    /// Whether an IPv6 address lies inside the 6rd prefix.
    #[inline]
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & self.prefix_mask == self.prefix_bits
    }

    /// Whether an IPv4 address lies inside the common IPv4 prefix.
    #[inline]
    pub fn contains_ipv4(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.ipv4_common_mask == self.ipv4_common
    }

    /// CE IPv4 → the CE's delegated prefix; `None` when the address is not
    /// in the common IPv4 prefix (RFC 5969 §7.1.1).
    pub fn delegated_prefix(&self, ce: Ipv4Addr) -> Option<Ipv6Net> {
        if !self.contains_ipv4(ce) {
            return None;
        }
        let len = self.delegated_prefix_len();
        let suffix = u128::from(u32::from(ce) & !self.ipv4_common_mask);
        let bits = if self.embedded_bits == 0 {
            self.prefix_bits
        } else {
            self.prefix_bits | (suffix << (128 - u32::from(len)))
        };
        Some(Ipv6Net::new(Ipv6Addr::from(bits), len).expect("length validated to be <= 128"))
    }

    /// IPv6 address inside the 6rd prefix → the CE IPv4 address it embeds;
    /// `None` when the address is outside the prefix.
    #[inline]
    pub fn ce_ipv4(&self, addr: Ipv6Addr) -> Option<Ipv4Addr> {
        if !self.contains(addr) {
            return None;
        }
        if self.embedded_bits == 0 {
            return Some(Ipv4Addr::from(self.ipv4_common));
        }
        let shift = 128 - u32::from(self.delegated_prefix_len());
        let field_mask = (1u128 << self.embedded_bits) - 1;
        // The field is at most 32 bits wide, so the narrowing is exact.
        let suffix = ((u128::from(addr) >> shift) & field_mask) as u32;
        Some(Ipv4Addr::from(self.ipv4_common | suffix))
    }

    /// Whether an address is inside the BR's own delegated prefix (the
    /// Cisco `ipv6 route <own /96> Null0`).
    #[inline]
    pub fn in_br_prefix(&self, addr: Ipv6Addr) -> bool {
        self.br_prefix.is_some_and(|p| p.contains(&addr))
    }
}

/// IPv4 addresses that can never be a CE or a BR: "this network" (0/8),
/// loopback (127/8), multicast (224/4), reserved and broadcast (240/4)
/// (RFC 1122 §3.2.1.3, RFC 5735).
pub fn is_martian_ipv4(addr: Ipv4Addr) -> bool {
    let first = addr.octets()[0];
    first == 0 || first == 127 || first >= 224
}

/// Where an IPv6 address falls among the domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping<'a> {
    /// Inside a domain's 6rd prefix, embedding this CE IPv4 address.
    Ce { domain: &'a Domain, ipv4: Ipv4Addr },
    /// Inside no configured 6rd prefix.
    None,
}

/// Several domains served at once. Their 6rd prefixes may not overlap, so
/// an IPv6 address belongs to at most one.
#[derive(Clone, Debug, Default)]
pub struct Domains {
    domains: Vec<Domain>,
}

/// Two domains whose 6rd prefixes overlap.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("6rd prefix {0} of domain {1:?} overlaps 6rd prefix {2} of domain {3:?}")]
pub struct OverlapError(pub Ipv6Net, pub String, pub Ipv6Net, pub String);

impl Domains {
    /// Builds the set, refusing overlapping prefixes.
    pub fn new(domains: Vec<Domain>) -> Result<Self, OverlapError> {
        for (i, a) in domains.iter().enumerate() {
            for b in &domains[i + 1..] {
                if a.prefix.contains(&b.prefix) || b.prefix.contains(&a.prefix) {
                    return Err(OverlapError(
                        a.prefix,
                        a.name.clone(),
                        b.prefix,
                        b.name.clone(),
                    ));
                }
            }
        }
        Ok(Domains { domains })
    }

    /// The domains in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Domain> {
        self.domains.iter()
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The domain whose 6rd prefix holds `addr`.
    #[inline]
    pub fn find(&self, addr: Ipv6Addr) -> Option<&Domain> {
        self.domains.iter().find(|d| d.contains(addr))
    }

    /// IPv6 address → the domain and CE IPv4 it belongs to, or `None`.
    #[inline]
    pub fn map_ipv6(&self, addr: Ipv6Addr) -> Mapping<'_> {
        match self.find(addr) {
            Some(domain) => Mapping::Ce {
                domain,
                ipv4: domain.ce_ipv4(addr).expect("find() checked the prefix"),
            },
            None => Mapping::None,
        }
    }

    /// Whether `addr` is a BR IPv4 address of any domain.
    #[inline]
    pub fn is_br_ipv4(&self, addr: Ipv4Addr) -> bool {
        self.domains.iter().any(|d| d.is_br_ipv4(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Domain {
        let spec = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().unwrap(),
            0,
            "10.255.255.222".parse().unwrap(),
        );
        Domain::new(&spec).unwrap().0
    }

    #[test]
    fn scenario_ce_maps_to_its_96() {
        let d = scenario();
        assert_eq!(
            d.delegated_prefix("10.96.1.100".parse().unwrap()),
            Some("2001:db8:0:f096:a60:164::/96".parse().unwrap())
        );
        assert_eq!(
            d.ce_ipv4("2001:db8:0:f096:a60:164::1".parse().unwrap()),
            Some("10.96.1.100".parse().unwrap())
        );
        assert_eq!(d.ce_ipv4("2001:db8:0:f097::1".parse().unwrap()), None);
    }

    #[test]
    fn scenario_br_own_address_and_null0_prefix() {
        let d = scenario();
        assert_eq!(
            d.br_ipv6(),
            "2001:db8:0:f096:aff:ffde::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            d.br_prefix(),
            Some("2001:db8:0:f096:aff:ffde::/96".parse().unwrap())
        );
    }

    #[test]
    fn scenario_departures_are_warned_not_refused() {
        let spec = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().unwrap(),
            0,
            "10.255.255.222".parse().unwrap(),
        );
        let (_, warnings) = Domain::new(&spec).unwrap();
        let rules: Vec<_> = warnings.iter().map(|w| w.rule).collect();
        assert!(
            rules.iter().any(|r| r.starts_with("RFC 5969 §4")),
            "{rules:?}"
        );
        assert!(
            rules.iter().any(|r| r.starts_with("RFC 5969 §11")),
            "{rules:?}"
        );
        assert!(
            rules.iter().any(|r| r.starts_with("Linux sit")),
            "{rules:?}"
        );
    }

    #[test]
    fn rfc_conforming_domain_has_no_warnings() {
        let spec = DomainSpec::new(
            "strict",
            "2001:db8:100::/40".parse().unwrap(),
            8,
            "10.255.255.222".parse().unwrap(),
        );
        let (d, warnings) = Domain::new(&spec).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(d.delegated_prefix_len(), 64);
        assert_eq!(
            d.delegated_prefix("10.1.2.3".parse().unwrap()),
            Some("2001:db8:101:203::/64".parse().unwrap())
        );
        assert_eq!(d.delegated_prefix("11.1.2.3".parse().unwrap()), None);
        assert_eq!(
            d.br_ipv6(),
            "2001:db8:1ff:ffde::1".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn impossible_domains_are_refused_with_the_reason() {
        let mut spec = DomainSpec::new(
            "x",
            "2001:db8::/100".parse().unwrap(),
            0,
            "10.0.0.1".parse().unwrap(),
        );
        let err = Domain::new(&spec).unwrap_err();
        assert!(matches!(
            err,
            DomainError::DelegatedPrefixTooLong { total: 132, .. }
        ));
        assert!(err.to_string().contains("longer than an IPv6 address"));
        spec.prefix = "2001:db8::1/64".parse().unwrap();
        assert!(matches!(
            Domain::new(&spec),
            Err(DomainError::PrefixHostBits(..))
        ));
        spec.prefix = "fd00:96::/32".parse().unwrap();
        assert!(Domain::new(&spec).is_ok(), "unique local space is allowed");
        for bad in [
            "::/0",
            "fe80::/64",
            "ff00::/8",
            "::ffff:0:0/96",
            "2000::/2",
            "fc00::/6",
        ] {
            spec.prefix = bad.parse().unwrap();
            assert!(
                matches!(
                    Domain::new(&spec),
                    Err(DomainError::PrefixNotGlobalUnicast(..))
                ),
                "{bad}"
            );
        }
        spec.prefix = "2001:db8::/64".parse().unwrap();
        spec.ipv4_mask_len = 33;
        assert_eq!(
            Domain::new(&spec).unwrap_err(),
            DomainError::MaskLenOutOfRange(33)
        );
        spec.ipv4_mask_len = 8;
        spec.br_ipv4 = vec!["192.0.2.1".parse().unwrap()];
        // 192.0.2.1 defines the common prefix 192/8 itself.
        assert!(Domain::new(&spec).is_ok());
        spec.br_ipv4 = vec![];
        assert_eq!(Domain::new(&spec).unwrap_err(), DomainError::NoBrAddress);
        spec.br_ipv4 = vec!["127.0.0.1".parse().unwrap()];
        assert!(matches!(
            Domain::new(&spec),
            Err(DomainError::BrAddressNotUnicast(_))
        ));
        spec.br_ipv4 = vec!["10.0.0.1".parse().unwrap()];
        spec.mtu = 1000;
        assert_eq!(
            Domain::new(&spec).unwrap_err(),
            DomainError::MtuTooSmall(1000)
        );
        spec.mtu = 1280;
        spec.ttl = 0;
        assert_eq!(Domain::new(&spec).unwrap_err(), DomainError::ZeroTtl);
    }

    #[test]
    fn overlapping_domains_are_refused() {
        let a = scenario();
        let spec = DomainSpec::new(
            "b",
            "2001:db8::/32".parse().unwrap(),
            32,
            "10.0.0.1".parse().unwrap(),
        );
        let (b, _) = Domain::new(&spec).unwrap();
        let err = Domains::new(vec![a, b]).unwrap_err();
        assert!(err.to_string().contains("overlaps"));
    }

    #[test]
    fn full_mask_len_embeds_nothing() {
        let spec = DomainSpec::new(
            "one",
            "2001:db8:5::/48".parse().unwrap(),
            32,
            "10.0.0.1".parse().unwrap(),
        );
        let (d, _) = Domain::new(&spec).unwrap();
        assert_eq!(d.delegated_prefix_len(), 48);
        assert_eq!(
            d.ce_ipv4("2001:db8:5:1::1".parse().unwrap()),
            Some("10.0.0.1".parse().unwrap())
        );
    }
}

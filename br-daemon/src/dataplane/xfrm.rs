//! The kernel's IPsec policies (the xfrm SPD, `man 8 ip-xfrm`), read
//! over NETLINK_XFRM (`linux/xfrm.h`) and kept current like the routes.
//!
//! Frames the XDP fast path redirects and frames the AF_XDP forwarder
//! transmits never meet the kernel's xfrm output, so a packet that an
//! outbound policy covers would leave in plaintext (RFC 4301 §5.1: every
//! outbound packet is matched against the SPD). The relay therefore hands
//! every such packet to the kernel, which encrypts it (or drops it, for a
//! `block` policy); the fast path declines it. Likewise protocol 41 that
//! an inbound policy says must arrive protected (RFC 4301 §5.2) goes to
//! the kernel, which checks it and delivers what it decrypted to the
//! daemon's protocol-41 socket.
//!
//! Matching is deliberately wider than the kernel's, never narrower: a
//! policy counts whatever its mark, interface ID (route-based IPsec),
//! ports or priority, and only a bypass (`action allow` with no template)
//! is left out. A packet sent to the kernel needlessly costs speed; one
//! kept from it could cost its encryption.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::relay::Domain;

/// Which traffic a policy covers (`struct xfrm_userpolicy_info.dir`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Fwd,
}

/// One IPsec tunnel end pair a policy's template names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 50 ESP, 51 AH, 108 IPComp.
    pub proto: u8,
    /// 0 transport, 1 tunnel.
    pub mode: u8,
}

/// One xfrm policy, as far as the relay needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub dir: Direction,
    pub src: IpNet,
    pub dst: IpNet,
    /// 0: any protocol.
    pub proto: u8,
    pub block: bool,
    pub templates: Vec<Template>,
    /// XFRMA_IF_ID: route-based IPsec through an xfrm interface.
    pub if_id: u32,
    /// XFRMA_MARK (value, mask): VTI and mark-based setups.
    pub mark: Option<(u32, u32)>,
    pub priority: u32,
}

impl Policy {
    /// Whether the kernel would protect (or block) what this policy
    /// matches: everything but a bypass.
    pub fn protects(&self) -> bool {
        self.block || !self.templates.is_empty()
    }

    fn covers(&self, src: IpAddr, dst: IpAddr, proto: u8) -> bool {
        (self.proto == 0 || self.proto == proto)
            && self.src.contains(&src)
            && self.dst.contains(&dst)
    }

    /// How an operator reads it: `out 10.255.255.222/32 -> 10.96.0.0/16
    /// esp tunnel 192.0.2.1 -> 192.0.2.2 if_id 7`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?} {} -> {}", self.dir, self.src, self.dst).to_lowercase();
        if self.proto != 0 {
            s.push_str(&format!(" proto {}", self.proto));
        }
        if self.block {
            s.push_str(" block");
        }
        for t in &self.templates {
            let proto = match t.proto {
                50 => "esp".to_string(),
                51 => "ah".to_string(),
                108 => "comp".to_string(),
                p => format!("proto {p}"),
            };
            let mode = if t.mode == 1 { "tunnel" } else { "transport" };
            s.push_str(&format!(" {proto} {mode} {} -> {}", t.src, t.dst));
        }
        if self.if_id != 0 {
            s.push_str(&format!(" if_id {}", self.if_id));
        }
        if let Some((v, m)) = self.mark {
            s.push_str(&format!(" mark {v:#x}/{m:#x}"));
        }
        s
    }
}

/// The policies that protect or block traffic, by direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipsec {
    policies: Vec<Policy>,
}

impl Ipsec {
    /// Keeps the policies that protect or block (bypasses are dropped).
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Ipsec {
        let mut policies: Vec<Policy> = policies.into_iter().filter(Policy::protects).collect();
        policies.sort_by_key(|p| p.priority);
        Ipsec { policies }
    }

    /// The policies kept.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The outbound policy that protects a packet `src -> dst` of
    /// protocol `proto`, if any: such a packet must go through the kernel.
    pub fn protecting_out(&self, src: IpAddr, dst: IpAddr, proto: u8) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.dir == Direction::Out && p.covers(src, dst, proto))
    }

    /// Whether an inbound policy requires a packet `src -> dst` of
    /// protocol `proto` to arrive protected: in plaintext it is the
    /// kernel's to check (and drop), never the relay's to forward.
    pub fn requires_in(&self, src: IpAddr, dst: IpAddr, proto: u8) -> bool {
        self.policies
            .iter()
            .any(|p| p.dir == Direction::In && p.covers(src, dst, proto))
    }

    /// For the XDP program's maps: the remote prefixes (`dst` of an
    /// outbound policy, `src` of an inbound one) of the policies of
    /// direction `dir` and family `v4` whose local side (`src` of an
    /// outbound policy, `dst` of an inbound one) holds one of `local`,
    /// for protocol 41 (`v4`) or any protocol (IPv6: the native side,
    /// where the local address is a CE's or anyone's).
    pub fn remote_prefixes(&self, dir: Direction, v4: bool, local: &[IpAddr]) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .policies
            .iter()
            .filter(|p| p.dir == dir && matches!(p.dst, IpNet::V4(_)) == v4)
            .filter(|p| !v4 || p.proto == 0 || p.proto == 41)
            .filter(|p| {
                let here = if dir == Direction::Out { p.src } else { p.dst };
                !v4 || local.iter().any(|a| here.contains(a))
            })
            .map(|p| if dir == Direction::Out { p.dst } else { p.src })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The BR IPv4 addresses of the domains: the local side of the
/// policies that matter to the relay.
pub fn br_addresses<'a>(domains: impl IntoIterator<Item = &'a Domain>) -> Vec<IpAddr> {
    domains
        .into_iter()
        .flat_map(|d| d.br_ipv4_all().iter().copied().map(IpAddr::V4))
        .collect()
}

/// One line per domain for the log: which CEs go through IPsec (and by
/// which policies) and that the others go direct.
pub fn describe_coverage<'a>(
    domains: impl IntoIterator<Item = &'a Domain>,
    ipsec: &Ipsec,
) -> Vec<String> {
    domains
        .into_iter()
        .map(|d| {
            let local = br_addresses([d]);
            let covering: Vec<String> = ipsec
                .policies()
                .iter()
                .filter(|p| p.dir == Direction::Out && (p.proto == 0 || p.proto == 41))
                .filter(|p| local.iter().any(|a| p.src.contains(a)))
                .map(|p| format!("{} ({})", p.dst, p.describe()))
                .collect();
            if covering.is_empty() {
                format!(
                    "domain {:?}: no outbound IPsec policy covers its CEs: all go direct (plaintext protocol 41)",
                    d.name()
                )
            } else {
                format!(
                    "domain {:?}: CEs in {} go through IPsec (the kernel encrypts them; the XDP fast path and AF_XDP leave them alone); all other CEs go direct",
                    d.name(),
                    covering.join(", ")
                )
            }
        })
        .collect()
}

// --- NETLINK_XFRM wire format (linux/xfrm.h) ---

pub(super) const XFRM_MSG_NEWPOLICY: u16 = 0x13;
pub(super) const XFRM_MSG_GETPOLICY: u16 = 0x15;
pub(super) const XFRM_MSG_UPDPOLICY: u16 = 0x19;
/// Multicast groups XFRMNLGRP_SA and XFRMNLGRP_POLICY (legacy bitmask).
pub(super) const XFRM_GROUPS: u32 = 0x4 | 0x8;
const XFRMA_TMPL: u16 = 5;
const XFRMA_POLICY_TYPE: u16 = 16;
const XFRMA_MARK: u16 = 21;
const XFRMA_IF_ID: u16 = 31;
const XFRM_POLICY_TYPE_MAIN: u8 = 0;
/// sizeof(struct xfrm_userpolicy_info).
const POLICY_INFO_LEN: usize = 168;
/// sizeof(struct xfrm_user_tmpl).
const TEMPLATE_LEN: usize = 64;

fn address(family: u16, b: &[u8]) -> Option<IpAddr> {
    match i32::from(family) {
        libc::AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?)),
        libc::AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?)),
        _ => None,
    }
}

fn net(family: u16, b: &[u8], len: u8) -> Option<IpNet> {
    IpNet::new(address(family, b)?, len).ok().map(|n| n.trunc())
}

/// Parses one XFRM_MSG_NEWPOLICY body: `struct xfrm_userpolicy_info`
/// (selector at 0: daddr, saddr, ports, family at 40, prefix lengths at
/// 42 and 43, proto at 44; priority at 152, dir at 160, action at 161),
/// then attributes. None for what the relay cannot use (sub policies,
/// socket policies, other families, a short message).
pub fn parse_policy(body: &[u8]) -> Option<Policy> {
    if body.len() < POLICY_INFO_LEN {
        return None;
    }
    let family = u16::from_ne_bytes([body[40], body[41]]);
    let dir = match body[160] {
        0 => Direction::In,
        1 => Direction::Out,
        2 => Direction::Fwd,
        _ => return None, // per-socket policies
    };
    let mut p = Policy {
        dir,
        dst: net(family, &body[0..16], body[42])?,
        src: net(family, &body[16..32], body[43])?,
        proto: body[44],
        block: body[161] == 1,
        templates: Vec::new(),
        if_id: 0,
        mark: None,
        priority: u32::from_ne_bytes(body[152..156].try_into().ok()?),
    };
    for (kind, payload) in super::fib::attrs(&body[POLICY_INFO_LEN..]) {
        match kind {
            XFRMA_TMPL => p.templates = parse_templates(payload),
            XFRMA_IF_ID if payload.len() >= 4 => {
                p.if_id = u32::from_ne_bytes(payload[..4].try_into().ok()?)
            }
            XFRMA_MARK if payload.len() >= 8 => {
                p.mark = Some((
                    u32::from_ne_bytes(payload[..4].try_into().ok()?),
                    u32::from_ne_bytes(payload[4..8].try_into().ok()?),
                ))
            }
            XFRMA_POLICY_TYPE if payload.first() != Some(&XFRM_POLICY_TYPE_MAIN) => return None,
            _ => {}
        }
    }
    Some(p)
}

/// `struct xfrm_user_tmpl` entries: id.daddr at 0, id.proto at 20, family
/// at 24, saddr at 28, mode at 48.
fn parse_templates(mut b: &[u8]) -> Vec<Template> {
    let mut out = Vec::new();
    while b.len() >= TEMPLATE_LEN {
        let family = u16::from_ne_bytes([b[24], b[25]]);
        if let (Some(dst), Some(src)) = (address(family, &b[0..16]), address(family, &b[28..44])) {
            out.push(Template {
                src,
                dst,
                proto: b[20],
                mode: b[48],
            });
        }
        b = &b[TEMPLATE_LEN..];
    }
    out
}

/// Reads the kernel's policies. Fails where the kernel has no
/// NETLINK_XFRM (no `xfrm_user`): then no `ip xfrm` policy can exist.
pub fn snapshot() -> std::io::Result<Ipsec> {
    let mut nl = super::fib::Netlink::open_protocol(libc::NETLINK_XFRM, 0)?;
    let mut policies = Vec::new();
    nl.dump_body(XFRM_MSG_GETPOLICY, &[], |kind, body| {
        if kind == XFRM_MSG_NEWPOLICY || kind == XFRM_MSG_UPDPOLICY {
            policies.extend(parse_policy(body));
        }
    })?;
    Ok(Ipsec::new(policies))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An XFRM_MSG_NEWPOLICY body as `ip xfrm policy add` makes it.
    pub(crate) fn policy_body(
        dir: u8,
        src: [u8; 4],
        src_len: u8,
        dst: [u8; 4],
        dst_len: u8,
        tmpl: Option<([u8; 4], [u8; 4])>,
        if_id: Option<u32>,
    ) -> Vec<u8> {
        let mut b = vec![0u8; POLICY_INFO_LEN];
        b[0..4].copy_from_slice(&dst);
        b[16..20].copy_from_slice(&src);
        b[40..42].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[42] = dst_len;
        b[43] = src_len;
        b[152..156].copy_from_slice(&1000u32.to_ne_bytes());
        b[160] = dir;
        let mut attr = |kind: u16, payload: &[u8]| {
            b.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(payload);
            b.resize(b.len().next_multiple_of(4), 0);
        };
        if let Some((t_src, t_dst)) = tmpl {
            let mut t = vec![0u8; TEMPLATE_LEN];
            t[0..4].copy_from_slice(&t_dst);
            t[20] = 50;
            t[24..26].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            t[28..32].copy_from_slice(&t_src);
            t[48] = 1;
            attr(XFRMA_TMPL, &t);
        }
        if let Some(id) = if_id {
            attr(XFRMA_IF_ID, &id.to_ne_bytes());
        }
        b
    }

    const BR: [u8; 4] = [10, 255, 255, 222];
    const VPC: [u8; 4] = [10, 96, 0, 0];
    const TUNNEL: Option<([u8; 4], [u8; 4])> = Some(([192, 0, 2, 1], [192, 0, 2, 2]));

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_what_ip_xfrm_policy_add_sends() {
        let p = parse_policy(&policy_body(1, BR, 32, VPC, 16, TUNNEL, Some(7))).unwrap();
        assert_eq!(p.dir, Direction::Out);
        assert_eq!(p.src, "10.255.255.222/32".parse::<IpNet>().unwrap());
        assert_eq!(p.dst, "10.96.0.0/16".parse::<IpNet>().unwrap());
        assert_eq!(p.if_id, 7);
        assert_eq!(
            p.describe(),
            "out 10.255.255.222/32 -> 10.96.0.0/16 esp tunnel 192.0.2.1 -> 192.0.2.2 if_id 7"
        );
    }

    #[test]
    fn outbound_protocol_41_to_a_protected_ce_goes_to_the_kernel() {
        let ipsec = Ipsec::new([
            parse_policy(&policy_body(1, BR, 32, VPC, 16, TUNNEL, None)).unwrap(),
            parse_policy(&policy_body(0, VPC, 16, BR, 32, TUNNEL, None)).unwrap(),
            // A bypass for another subnet: not protection.
            parse_policy(&policy_body(1, [0; 4], 0, [10, 97, 0, 0], 16, None, None)).unwrap(),
        ]);
        let (br, ce) = (ip("10.255.255.222"), ip("10.96.1.100"));
        assert!(ipsec.protecting_out(br, ce, 41).is_some());
        assert!(ipsec.protecting_out(br, ip("10.97.0.5"), 41).is_none());
        assert!(ipsec.protecting_out(ip("192.0.2.1"), ce, 41).is_none());
        assert!(ipsec.requires_in(ce, br, 41));
        assert!(!ipsec.requires_in(br, ce, 41));
        assert_eq!(
            ipsec.remote_prefixes(Direction::Out, true, &[br]),
            vec!["10.96.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            ipsec.remote_prefixes(Direction::In, true, &[br]),
            vec!["10.96.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert!(ipsec
            .remote_prefixes(Direction::Out, true, &[ip("10.1.1.1")])
            .is_empty());
    }

    #[test]
    fn malformed_messages_do_not_panic() {
        let good = policy_body(1, BR, 32, VPC, 16, TUNNEL, Some(7));
        for cut in 0..good.len() {
            let _ = parse_policy(&good[..cut]);
        }
        let mut bad = good.clone();
        bad[42] = 200; // prefix length beyond the family
        assert!(parse_policy(&bad).is_none());
    }
}

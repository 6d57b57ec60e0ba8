//! The kernel's routing policy rules (`ip rule`, RTM_GETRULE; `man 8
//! ip-rule`): which tables a lookup consults, in which order. strongSwan,
//! for one, installs its routes in table 220 behind `220: from all lookup
//! 220`; a destination a rule sends there is looked up there.
//!
//! What a rule can select on and the relay can tell for a relayed packet
//! is evaluated: source and destination prefixes, the firewall mark (a
//! relayed packet has none) and `not`. A rule that selects on anything
//! else (input or output interface, uid, protocol, ports, l3mdev) cannot
//! be judged here and is passed over, as if it did not match; such
//! setups are listed in docs/kernel-features.md.

use std::net::IpAddr;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Look the destination up in this table.
    Table(u32),
    /// Continue at the first rule with this priority or more.
    Goto(u32),
    Nop,
    /// blackhole, unreachable, prohibit.
    Reject,
}

/// One rule, as far as the relay can evaluate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    /// 32 (IPv4) or 128 (IPv6).
    pub width: u8,
    pub src: Option<(u128, u8)>,
    pub dst: Option<(u128, u8)>,
    /// (mark, mask): matches a relayed packet (mark 0) when mark & mask is 0 ... == mark.
    pub fwmark: Option<(u32, u32)>,
    pub invert: bool,
    /// Selects on something the relay cannot tell (interface, uid, ...).
    pub opaque: bool,
    pub action: RuleAction,
    /// Routes of this prefix length or shorter are ignored (`suppress_prefixlength`).
    pub suppress_prefixlen: Option<u8>,
}

const TABLE_LOCAL: u32 = 255;
const TABLE_MAIN: u32 = 254;
const TABLE_DEFAULT: u32 = 253;

impl Rule {
    const fn to_table(priority: u32, width: u8, table: u32) -> Rule {
        Rule {
            priority,
            width,
            src: None,
            dst: None,
            fwmark: None,
            invert: false,
            opaque: false,
            action: RuleAction::Table(table),
            suppress_prefixlen: None,
        }
    }

    /// Whether the rule applies to a relayed packet `src -> dst` (of the
    /// rule's family, no mark).
    pub fn matches(&self, src: Option<u128>, dst: u128) -> bool {
        if self.opaque {
            return false;
        }
        let within = |sel: Option<(u128, u8)>, addr: Option<u128>| match (sel, addr) {
            (None, _) => true,
            (Some((_, 0)), _) => true,
            (Some(_), None) => false,
            (Some((net, len)), Some(a)) => super::fib::prefix_match(a, net, len, self.width),
        };
        let mark_ok = self.fwmark.is_none_or(|(mark, mask)| mark & mask == 0);
        let all = within(self.src, src) && within(self.dst, Some(dst)) && mark_ok;
        all != self.invert
    }
}

/// The kernel's default rules: local, main, default (an array: the
/// lookup uses them per packet when no rules were read, e.g. in tests).
pub fn default_rules(width: u8) -> [Rule; 3] {
    [
        Rule::to_table(0, width, TABLE_LOCAL),
        Rule::to_table(32766, width, TABLE_MAIN),
        Rule::to_table(32767, width, TABLE_DEFAULT),
    ]
}

pub(super) const RTM_NEWRULE: u16 = 32;
pub(super) const RTM_DELRULE: u16 = 33;
pub(super) const RTM_GETRULE: u16 = 34;
const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_IIFNAME: u16 = 3;
const FRA_GOTO: u16 = 4;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FRA_OIFNAME: u16 = 17;
const FRA_L3MDEV: u16 = 19;
const FRA_UID_RANGE: u16 = 20;
const FRA_IP_PROTO: u16 = 22;
const FRA_SPORT_RANGE: u16 = 23;
const FRA_DPORT_RANGE: u16 = 24;
const FR_ACT_TO_TBL: u8 = 1;
const FR_ACT_GOTO: u8 = 2;
const FR_ACT_NOP: u8 = 3;
const FIB_RULE_INVERT: u32 = 2;

fn word(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

/// Parses one RTM_NEWRULE body: `struct fib_rule_hdr` (family, dst_len,
/// src_len, tos, table, res1, res2, action, flags), then attributes.
pub fn parse_rule(body: &[u8]) -> Option<Rule> {
    if body.len() < 12 {
        return None;
    }
    let width = match i32::from(body[0]) {
        libc::AF_INET => 32,
        libc::AF_INET6 => 128,
        _ => return None,
    };
    let (dst_len, src_len) = (body[1], body[2]);
    let mut table = u32::from(body[4]);
    let action = body[7];
    let flags = word(&body[8..12])?;
    let mut rule = Rule::to_table(0, width, 0);
    rule.invert = flags & FIB_RULE_INVERT != 0;
    // A TOS selector: relayed packets mostly carry TOS 0; be exact only there.
    rule.opaque = body[3] != 0;
    let mut goto = None;
    let mut mark = None;
    let mut mask = u32::MAX;
    for (kind, p) in super::fib::attrs(&body[12..]) {
        let addr = || super::fib::ip_from(body[0], p).map(to_bits);
        match kind {
            FRA_DST => rule.dst = Some((addr()?, dst_len)),
            FRA_SRC => rule.src = Some((addr()?, src_len)),
            FRA_PRIORITY => rule.priority = word(p)?,
            FRA_TABLE => table = word(p)?,
            FRA_GOTO => goto = word(p),
            FRA_FWMARK => mark = word(p),
            FRA_FWMASK => mask = word(p)?,
            FRA_SUPPRESS_PREFIXLEN => {
                // -1 (all ones) means unset.
                rule.suppress_prefixlen = word(p).and_then(|v| u8::try_from(v).ok())
            }
            FRA_IIFNAME | FRA_OIFNAME | FRA_L3MDEV | FRA_UID_RANGE | FRA_IP_PROTO
            | FRA_SPORT_RANGE | FRA_DPORT_RANGE => rule.opaque = true,
            _ => {}
        }
    }
    rule.fwmark = mark.map(|m| (m, mask));
    rule.action = match action {
        FR_ACT_TO_TBL => RuleAction::Table(table),
        FR_ACT_GOTO => RuleAction::Goto(goto?),
        FR_ACT_NOP => RuleAction::Nop,
        _ => RuleAction::Reject,
    };
    Some(rule)
}

fn to_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fib::attr;
    use super::*;

    /// `ip rule add pref 220 lookup 220`, as the kernel dumps it.
    fn strongswan_rule() -> Vec<u8> {
        let mut b = vec![
            libc::AF_INET as u8,
            0,
            0,
            0,
            220,
            0,
            0,
            FR_ACT_TO_TBL,
            0,
            0,
            0,
            0,
        ];
        b.extend(attr(FRA_TABLE, &220u32.to_ne_bytes()));
        b.extend(attr(FRA_PRIORITY, &220u32.to_ne_bytes()));
        b
    }

    #[test]
    fn parses_strongswans_rule_and_matches_everything() {
        let r = parse_rule(&strongswan_rule()).unwrap();
        assert_eq!(r.priority, 220);
        assert_eq!(r.action, RuleAction::Table(220));
        assert!(r.matches(Some(0x0aff_ffde), 0x0a60_0164));
    }

    #[test]
    fn selectors_marks_and_inversion() {
        let mut b = vec![
            libc::AF_INET as u8,
            16,
            0,
            0,
            0,
            0,
            0,
            FR_ACT_TO_TBL,
            0,
            0,
            0,
            0,
        ];
        b.extend(attr(FRA_DST, &[10, 96, 0, 0]));
        b.extend(attr(FRA_TABLE, &100u32.to_ne_bytes()));
        let r = parse_rule(&b).unwrap();
        assert!(r.matches(None, 0x0a60_0164));
        assert!(!r.matches(None, 0x0a61_0001));
        let mut inverted = b.clone();
        inverted[8..12].copy_from_slice(&FIB_RULE_INVERT.to_ne_bytes());
        assert!(!parse_rule(&inverted).unwrap().matches(None, 0x0a60_0164));
        // fwmark 0x1: a relayed packet carries no mark.
        let mut marked = b.clone();
        marked.extend(attr(FRA_FWMARK, &1u32.to_ne_bytes()));
        assert!(!parse_rule(&marked).unwrap().matches(None, 0x0a60_0164));
        // iif eth0: cannot be judged, passed over.
        let mut iif = b.clone();
        iif.extend(attr(FRA_IIFNAME, b"eth0\0"));
        assert!(!parse_rule(&iif).unwrap().matches(None, 0x0a60_0164));
        for cut in 0..b.len() {
            let _ = parse_rule(&b[..cut]);
        }
    }
}

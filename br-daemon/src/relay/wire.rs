//! Header layouts, checksums and ECN arithmetic used by the relay.
//!
//! IPv4 header: RFC 791 §3.1; IPv6 header: RFC 8200 §3; Internet checksum:
//! RFC 1071; ECN codepoints: RFC 3168 §5; ECN across tunnels: RFC 6040.

use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol number of IPv6-in-IPv4 (RFC 4213 §3.5).
pub const PROTO_IPV6_IN_IPV4: u8 = 41;
/// IP protocol number of ICMPv4.
pub const PROTO_ICMPV4: u8 = 1;
/// Next-header value of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// Fixed IPv6 header length.
pub const IPV6_HEADER_LEN: usize = 40;
/// IPv4 header length without options (the only kind we write).
pub const IPV4_HEADER_LEN: usize = 20;
/// ICMP header length (type, code, checksum, 4 bytes of parameter).
pub const ICMP_HEADER_LEN: usize = 8;

/// IPv4 flag: more fragments.
pub const IPV4_MF: u16 = 0x2000;
/// IPv4 fragment offset mask.
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// Reads a big-endian u16.
#[inline]
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes a big-endian u16.
#[inline]
pub fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Reads an IPv4 address.
#[inline]
pub fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Reads an IPv6 address.
#[inline]
pub fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// Adds bytes into a one's-complement running sum (RFC 1071).
#[inline]
pub fn sum_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    // Fold often enough that a 64 KiB input cannot overflow.
    fold_partial(sum)
}

#[inline]
fn fold_partial(sum: u32) -> u32 {
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a running sum into the 16-bit checksum field value.
#[inline]
pub fn finish(sum: u32) -> u16 {
    let mut s = sum;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The Internet checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    finish(sum_bytes(0, bytes))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1) for upper-layer checksums.
pub fn ipv6_pseudo_sum(src: &Ipv6Addr, dst: &Ipv6Addr, len: u32, next_header: u8) -> u32 {
    let mut sum = sum_bytes(0, &src.octets());
    sum = sum_bytes(sum, &dst.octets());
    sum += len >> 16;
    sum += len & 0xffff;
    sum += u32::from(next_header);
    fold_partial(sum)
}

/// An ECN codepoint (RFC 3168 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecn {
    NotEct = 0,
    Ect1 = 1,
    Ect0 = 2,
    Ce = 3,
}

impl Ecn {
    /// The codepoint in the low two bits of a TOS / traffic-class byte.
    pub fn from_tos(tos: u8) -> Ecn {
        match tos & 3 {
            0 => Ecn::NotEct,
            1 => Ecn::Ect1,
            2 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }
}

/// RFC 6040 §4.2, Figure 4: the inner ECN after decapsulation, or `None`
/// when the packet must be dropped (CE outside, Not-ECT inside).
pub fn ecn_decapsulate(inner: Ecn, outer: Ecn) -> Option<Ecn> {
    match (inner, outer) {
        (Ecn::NotEct, Ecn::Ce) => None,
        (Ecn::NotEct, _) => Some(Ecn::NotEct),
        (_, Ecn::Ce) => Some(Ecn::Ce),
        (Ecn::Ect0, Ecn::Ect1) => Some(Ecn::Ect1),
        (inner, _) => Some(inner),
    }
}

/// Traffic class byte of an IPv6 header.
#[inline]
pub fn ipv6_traffic_class(h: &[u8]) -> u8 {
    (h[0] << 4) | (h[1] >> 4)
}

/// Replaces the traffic class byte of an IPv6 header.
#[inline]
pub fn set_ipv6_traffic_class(h: &mut [u8], tc: u8) {
    h[0] = 0x60 | (tc >> 4);
    h[1] = (h[1] & 0x0f) | (tc << 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2, complement 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn rfc6040_decapsulation_table() {
        use Ecn::*;
        // Rows: arriving inner; columns: arriving outer Not-ECT, ECT(0), ECT(1), CE.
        let table = [
            (NotEct, [Some(NotEct), Some(NotEct), Some(NotEct), None]),
            (Ect0, [Some(Ect0), Some(Ect0), Some(Ect1), Some(Ce)]),
            (Ect1, [Some(Ect1), Some(Ect1), Some(Ect1), Some(Ce)]),
            (Ce, [Some(Ce), Some(Ce), Some(Ce), Some(Ce)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [NotEct, Ect0, Ect1, Ce].into_iter().zip(row) {
                assert_eq!(
                    ecn_decapsulate(inner, outer),
                    want,
                    "{inner:?} in {outer:?}"
                );
            }
        }
    }

    #[test]
    fn traffic_class_round_trips() {
        let mut h = [0x6a, 0xb1, 0x23, 0x45];
        assert_eq!(ipv6_traffic_class(&h), 0xab);
        set_ipv6_traffic_class(&mut h, 0x5c);
        assert_eq!(h, [0x65, 0xc1, 0x23, 0x45]);
    }
}

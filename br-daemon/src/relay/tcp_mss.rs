//! TCP MSS clamping, what Cisco's `ipv6 tcp adjust-mss` does on a 6rd
//! tunnel: the MSS option of a segment with SYN set (SYN and SYN-ACK,
//! either direction) is lowered to the domain's `tcp-mss`, so that neither
//! end sends segments the tunnel cannot carry and path MTU discovery is
//! not needed (RFC 4459 §3.2). The option is RFC 9293 §3.2 kind 2; the
//! checksum is updated incrementally (RFC 1624 §3, eqn. 3).
//!
//! The option walk is bounded by the TCP header; anything malformed
//! leaves the packet as it was (and is counted by the caller): a broken
//! header is the receiver's to reject, not ours to guess at.

use super::verdict::named_enum;
use super::wire::{be16, put_be16, IPV6_HEADER_LEN};

named_enum! {
    /// What MSS clamping did, counted (`br6rd_tcp_mss_total`).
    MssEvent {
        /// A TCP SYN's MSS option lowered to the domain's tcp-mss.
        Clamped => "clamped",
        /// A TCP SYN of a domain with tcp-mss whose options or extension headers could not be walked: forwarded unchanged.
        MalformedOptions => "malformed-options",
    }
}

/// What [`clamp`] did to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MssClamp {
    /// Not a TCP segment with SYN set, or a fragment: untouched.
    NotSyn,
    /// A SYN whose MSS was at most the clamp, or that has none: untouched.
    Unchanged,
    /// The MSS option was lowered to the clamp.
    Clamped,
    /// A SYN whose options (or extension headers) cannot be walked: untouched.
    Malformed,
}

const PROTO_TCP: u8 = 6;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;
/// Extension headers walked before giving up (a legitimate SYN has few).
const MAX_EXTENSION_HEADERS: usize = 4;
const TCP_SYN: u8 = 0x02;
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_MSS: u8 = 2;

/// Lowers the MSS option of the IPv6 packet `ipv6` (which starts at its
/// IPv6 header) to `max` if it is a TCP SYN carrying a larger one.
pub fn clamp(ipv6: &mut [u8], max: u16) -> MssClamp {
    let Some(tcp) = tcp_offset(ipv6) else {
        return MssClamp::NotSyn;
    };
    let Ok(tcp) = tcp else {
        return MssClamp::Malformed;
    };
    let Some(header) = ipv6.get_mut(tcp..) else {
        return MssClamp::Malformed;
    };
    if header.len() < 20 {
        return MssClamp::Malformed;
    }
    if header[13] & TCP_SYN == 0 {
        return MssClamp::NotSyn;
    }
    let header_len = usize::from(header[12] >> 4) * 4;
    if header_len < 20 || header_len > header.len() {
        return MssClamp::Malformed;
    }
    match find_mss(&header[20..header_len]) {
        Err(()) => MssClamp::Malformed,
        Ok(None) => MssClamp::Unchanged,
        Ok(Some(at)) => {
            let at = 20 + at;
            let old = be16(header, at);
            if old <= max {
                return MssClamp::Unchanged;
            }
            put_be16(header, at, max);
            let sum = be16(header, 16);
            // A 16-bit field at an odd offset straddles two checksum words:
            // its contribution is byte-swapped (RFC 1071 §2 (B)).
            let (old, new) = if at % 2 == 1 {
                (old.swap_bytes(), max.swap_bytes())
            } else {
                (old, max)
            };
            put_be16(header, 16, checksum_update(sum, old, new));
            MssClamp::Clamped
        }
    }
}

/// Where the TCP header starts: `None` if the packet is not TCP (or is a
/// fragment, whose TCP header, if any, we leave alone), `Some(Err)` if the
/// extension headers cannot be walked.
fn tcp_offset(ipv6: &[u8]) -> Option<Result<usize, ()>> {
    if ipv6.len() < IPV6_HEADER_LEN {
        return Some(Err(()));
    }
    let (mut next, mut at) = (ipv6[6], IPV6_HEADER_LEN);
    for _ in 0..=MAX_EXTENSION_HEADERS {
        match next {
            PROTO_TCP => return Some(Ok(at)),
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => {
                let Some(ext) = ipv6.get(at..at + 2) else {
                    return Some(Err(()));
                };
                next = ext[0];
                at += (usize::from(ext[1]) + 1) * 8;
            }
            FRAGMENT => return None,
            _ => return None,
        }
    }
    Some(Err(()))
}

/// The offset of the MSS value in `options`, if there is a well-formed
/// MSS option; `Err` if the options are malformed.
fn find_mss(options: &[u8]) -> Result<Option<usize>, ()> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            OPTION_END => return Ok(None),
            OPTION_NOP => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1).ok_or(())?);
                if len < 2 || i + len > options.len() {
                    return Err(());
                }
                if kind == OPTION_MSS {
                    return if len == 4 { Ok(Some(i + 2)) } else { Err(()) };
                }
                i += len;
            }
        }
    }
    Ok(None)
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), in one's complement.
fn checksum_update(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_update_matches_rfc_1624_example() {
        // RFC 1624 §4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285: HC' = 0x0000.
        assert_eq!(checksum_update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn options_walk_finds_mss_after_nops_and_rejects_bad_lengths() {
        assert_eq!(find_mss(&[1, 1, 2, 4, 5, 0xb4]), Ok(Some(4)));
        assert_eq!(find_mss(&[4, 2, 2, 4, 5, 0xb4]), Ok(Some(4)));
        assert_eq!(find_mss(&[0, 2, 4, 5, 0xb4]), Ok(None));
        assert_eq!(find_mss(&[8, 1]), Err(()));
        assert_eq!(find_mss(&[8, 9, 0, 0]), Err(()));
        assert_eq!(find_mss(&[2, 3, 5]), Err(()));
        assert_eq!(find_mss(&[3]), Err(()));
        assert_eq!(find_mss(&[]), Ok(None));
    }
}

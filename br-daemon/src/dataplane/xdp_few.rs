//! `struct few_sets` of steer_abi.h: the BR addresses and 6rd prefixes the
//! XDP program compares one by one when there are at most `MAX_FEW` of
//! each (the usual deployment: one domain, one BR address). A compare
//! costs a few cycles where a hash lookup (`br_addrs`) or a trie walk
//! (`sixrd_prefixes`) costs a helper call; above `MAX_FEW` the program
//! uses those maps, which stay filled either way.

use crate::relay::Domain;

const FEW: usize = br_ebpf::MAX_FEW as usize;

/// `struct few_prefix`: matches when `addr & mask == net`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FewPrefix {
    pub net: [u8; 16],
    pub mask: [u8; 16],
    /// The domain's slot (what `sixrd_prefixes` gives for it).
    pub index: u32,
    pub pad: u32,
}

/// `struct few_sets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FewSets {
    /// Above `MAX_FEW`: the program looks BR addresses up in `br_addrs`.
    pub br_count: u32,
    /// Above `MAX_FEW`: the program looks prefixes up in `sixrd_prefixes`.
    pub prefix_count: u32,
    /// Network byte order.
    pub br: [u32; FEW],
    /// Longest first, so the first match is the longest (as the trie).
    pub prefixes: [FewPrefix; FEW],
}

// SAFETY: repr(C), integer fields only and no padding (4 + 4 + 4 * 4 +
// 4 * 40 = 184 bytes, 4-aligned): every bit pattern is valid.
unsafe impl aya::Pod for FewSets {}

impl FewSets {
    /// The sets of `domains`, domain `i` in slot `slot(i)`.
    pub fn of(domains: &[Domain], slot: impl Fn(usize) -> u32) -> FewSets {
        let mut brs: Vec<u32> = domains
            .iter()
            .flat_map(|d| d.br_ipv4_all().iter().map(|a| u32::from(*a).to_be()))
            .collect();
        brs.sort_unstable();
        brs.dedup();
        let mut prefixes: Vec<(u8, FewPrefix)> = domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let p = d.prefix();
                let prefix = FewPrefix {
                    net: p.network().octets(),
                    mask: p.netmask().octets(),
                    index: slot(i),
                    pad: 0,
                };
                (p.prefix_len(), prefix)
            })
            .collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0));
        let mut sets = FewSets {
            br_count: brs.len() as u32,
            prefix_count: prefixes.len() as u32,
            ..FewSets::default()
        };
        if brs.len() <= FEW {
            sets.br[..brs.len()].copy_from_slice(&brs);
        }
        if prefixes.len() <= FEW {
            for (to, (_, p)) in sets.prefixes.iter_mut().zip(prefixes) {
                *to = p;
            }
        }
        sets
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

    #[test]
    fn prefixes_go_longest_first_with_their_slots_and_brs_once() {
        let domains = [
            domain("2001:db8::/32", "10.0.0.1"),
            domain("2001:db8:0:f096::/64", "10.0.0.1"),
        ];
        let sets = FewSets::of(&domains, |i| 64 + i as u32);
        assert_eq!((sets.br_count, sets.prefix_count), (1, 2));
        assert_eq!(sets.br[0], u32::from_ne_bytes([10, 0, 0, 1]));
        assert_eq!(sets.prefixes[0].index, 65, "the /64 first");
        assert_eq!(sets.prefixes[0].mask[7..9], [0xff, 0]);
        assert_eq!(sets.prefixes[1].index, 64);
        assert_eq!(sets.prefixes[1].net[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(sets.prefixes[1].mask[3..5], [0xff, 0]);
    }

    #[test]
    fn more_than_few_leaves_the_lists_empty_for_the_maps() {
        let domains: Vec<Domain> = (0..=FEW)
            .map(|i| domain(&format!("2001:db8:{i}::/48"), &format!("10.0.0.{}", i + 1)))
            .collect();
        let sets = FewSets::of(&domains, |i| i as u32);
        assert_eq!(sets.prefix_count as usize, FEW + 1);
        assert_eq!(sets.br_count as usize, FEW + 1);
        assert_eq!(sets.prefixes, [FewPrefix::default(); FEW]);
        assert_eq!(sets.br, [0; FEW]);
    }
}

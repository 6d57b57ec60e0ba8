//! Longest-prefix match over a FIB snapshot's routes: for each (table,
//! address width), one hash map per prefix length present, longest first,
//! so a lookup costs a probe per distinct length instead of a scan of
//! every route (the scan was three quarters of the AF_XDP worker's
//! instructions per packet with a hundred routes: docs/benchmarks.md).
//! Built once per snapshot, before the snapshot is published.

use std::collections::HashMap;

/// The maps' hasher: several times faster than std's SipHash on these
/// small keys, still seeded at random per map (routes may come from BGP).
pub type FastHash = foldhash::fast::RandomState;

/// What the index needs of a route.
pub trait Prefix {
    fn table(&self) -> u32;
    /// Address width in bits: 32 or 128.
    fn width(&self) -> u8;
    fn prefix_len(&self) -> u8;
    /// The network's bits, right-aligned in a u128.
    fn bits(&self) -> u128;
}

/// The routes of one prefix length in one (table, width).
#[derive(Clone, Debug)]
struct Level {
    len: u8,
    /// Network bits shifted right by (width - len): route indexes.
    routes: HashMap<u128, Vec<usize>, FastHash>,
}

/// The index of a slice of routes.
#[derive(Clone, Debug, Default)]
pub struct RouteIndex {
    /// (table, width) and its levels, longest prefix first.
    tables: Vec<((u32, u8), Vec<Level>)>,
}

fn key(bits: u128, len: u8, width: u8) -> u128 {
    let shift = u32::from(width - len.min(width));
    bits.checked_shr(shift).unwrap_or(0)
}

impl RouteIndex {
    pub fn new<R: Prefix>(routes: &[R]) -> RouteIndex {
        let mut index = RouteIndex::default();
        for (i, r) in routes.iter().enumerate() {
            let at = match index
                .tables
                .iter()
                .position(|(t, _)| *t == (r.table(), r.width()))
            {
                Some(at) => at,
                None => {
                    index.tables.push(((r.table(), r.width()), Vec::new()));
                    index.tables.len() - 1
                }
            };
            let levels = &mut index.tables[at].1;
            let level = match levels.iter().position(|l| l.len == r.prefix_len()) {
                Some(l) => l,
                None => {
                    levels.push(Level {
                        len: r.prefix_len(),
                        routes: HashMap::default(),
                    });
                    levels.len() - 1
                }
            };
            levels[level]
                .routes
                .entry(key(r.bits(), r.prefix_len(), r.width()))
                .or_default()
                .push(i);
        }
        for (_, levels) in &mut index.tables {
            levels.sort_by_key(|l| std::cmp::Reverse(l.len));
        }
        index
    }

    /// The index of the route of `table` that `bits` (of `width`) falls
    /// in with the longest prefix, among those `usable` admits, the
    /// lowest `priority` among equals: what a scan for
    /// min (Reverse(len), priority) over the matching routes finds.
    pub fn best<R>(
        &self,
        table: u32,
        width: u8,
        bits: u128,
        routes: &[R],
        usable: impl Fn(&R) -> bool,
        priority: impl Fn(&R) -> u32,
    ) -> Option<usize> {
        let (_, levels) = self.tables.iter().find(|(t, _)| *t == (table, width))?;
        levels.iter().find_map(|level| {
            level
                .routes
                .get(&key(bits, level.len, width))?
                .iter()
                .copied()
                .filter(|&i| usable(&routes[i]))
                .min_by_key(|&i| priority(&routes[i]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(u32, u8, u8, u128, u32, bool);
    impl Prefix for R {
        fn table(&self) -> u32 {
            self.0
        }
        fn width(&self) -> u8 {
            self.1
        }
        fn prefix_len(&self) -> u8 {
            self.2
        }
        fn bits(&self) -> u128 {
            self.3
        }
    }

    fn v4(a: [u8; 4]) -> u128 {
        u128::from(u32::from_be_bytes(a))
    }

    #[test]
    fn longest_prefix_then_lowest_priority_of_the_usable_ones() {
        let routes = [
            R(254, 32, 0, 0, 0, true),
            R(254, 32, 16, v4([10, 96, 0, 0]), 5, true),
            R(254, 32, 16, v4([10, 96, 0, 0]), 1, true),
            R(254, 32, 24, v4([10, 96, 1, 0]), 0, false),
            R(255, 32, 32, v4([10, 96, 1, 1]), 0, true),
            R(254, 128, 0, 0, 0, true),
        ];
        let index = RouteIndex::new(&routes);
        let best = |table, width, bits| index.best(table, width, bits, &routes, |r| r.5, |r| r.4);
        // The /24 is unusable (no live hop): the /16 of priority 1.
        assert_eq!(best(254, 32, v4([10, 96, 1, 7])), Some(2));
        assert_eq!(best(254, 32, v4([192, 0, 2, 1])), Some(0), "the default");
        assert_eq!(best(255, 32, v4([10, 96, 1, 1])), Some(4));
        assert_eq!(best(255, 32, v4([10, 96, 1, 2])), None, "other table");
        assert_eq!(best(254, 128, 1), Some(5), "other width");
        assert_eq!(best(7, 32, 1), None, "no such table");
    }
}

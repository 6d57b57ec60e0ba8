//! Keeps the XDP program's next-hop cache honest (steer.bpf.c,
//! `next_hop_remembered`, `next_hop_ask`). The program remembers
//! `bpf_fib_lookup`'s answer per destination and ingress; every
//! rtnetlink notification (a route, neighbour, link, address, rule or
//! forwarding switch changed) starts a new generation at once, which
//! forgets them all. A thread of its own does it, on its own netlink
//! socket, without the 20 ms batching of the
//! snapshot the AF_XDP workers use: a change reaches the fast path within
//! the notification's delivery.
//!
//! The destination is the whole key only while the kernel's routing rules
//! are its defaults (a rule on the source or TOS would pick another route
//! for another CE): per family, the cache is on only while the latest
//! snapshot's rules are the defaults, and off from the moment a rule
//! notification arrives until a snapshot taken after it says so.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::fib::{self, Changes, Fib};
use super::publish::Published;
use super::xdp::Steering;

/// When the cache may be used, from what the notifications said.
#[derive(Debug, Default)]
pub struct CacheSwitch {
    /// The snapshot generation when a rule last changed, until a snapshot
    /// surely taken after it is published.
    rules_changed_at: Option<u64>,
    /// What the program was told last: (IPv4, IPv6).
    written: Option<(bool, bool)>,
}

impl CacheSwitch {
    /// After a batch of `changes`, with the snapshots' `generation` and
    /// whether the latest one has default rules (IPv4, IPv6): the switches
    /// to write with a new generation, or None when nothing needs one.
    pub fn after(
        &mut self,
        changes: Changes,
        generation: u64,
        default_rules: (bool, bool),
    ) -> Option<(bool, bool)> {
        if changes.rules {
            self.rules_changed_at = Some(generation);
        }
        // Two publications later: the dump of the second began after the
        // monitor drained the rule's notification.
        if self.rules_changed_at.is_some_and(|at| generation >= at + 2) {
            self.rules_changed_at = None;
        }
        let wanted = match self.rules_changed_at {
            Some(_) => (false, false),
            None => default_rules,
        };
        if changes.any || self.written != Some(wanted) {
            self.written = Some(wanted);
            return Some(wanted);
        }
        None
    }
}

/// Runs until `stop`: renews the program's next hops after every change.
pub fn keep(steering: Arc<Mutex<Steering>>, snapshots: Arc<Published<Fib>>, stop: Arc<AtomicBool>) {
    let mut switch = CacheSwitch::default();
    let result = fib::watch_changes(stop, |changes| {
        let latest = snapshots.get();
        let defaults = (latest.default_rules(32), latest.default_rules(128));
        if let Some((v4, v6)) = switch.after(changes, snapshots.generation(), defaults) {
            let mut steering = steering.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = steering.renew_next_hops(v4, v6) {
                tracing::error!("XDP next-hop cache: {e:#}");
            }
        }
    });
    if let Err(e) = result {
        // Without notifications the cache could go stale: switch it off.
        tracing::error!("XDP next-hop cache off: cannot watch rtnetlink ({e})");
        let mut steering = steering.lock().unwrap_or_else(|e| e.into_inner());
        let _ = steering.renew_next_hops(false, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Changes = Changes {
        any: false,
        rules: false,
    };
    const ROUTE: Changes = Changes {
        any: true,
        rules: false,
    };
    const RULE: Changes = Changes {
        any: true,
        rules: true,
    };

    #[test]
    fn every_change_renews_and_quiet_turns_write_nothing() {
        let mut s = CacheSwitch::default();
        assert_eq!(
            s.after(QUIET, 1, (true, true)),
            Some((true, true)),
            "the first"
        );
        assert_eq!(s.after(QUIET, 1, (true, true)), None);
        assert_eq!(s.after(ROUTE, 1, (true, true)), Some((true, true)));
        assert_eq!(
            s.after(QUIET, 2, (true, false)),
            Some((true, false)),
            "rules of the snapshot"
        );
    }

    #[test]
    fn a_rule_change_turns_the_cache_off_until_a_later_snapshot() {
        let mut s = CacheSwitch::default();
        s.after(QUIET, 5, (true, true));
        assert_eq!(s.after(RULE, 5, (true, true)), Some((false, false)));
        // A snapshot whose dump may have begun before the rule: still off.
        assert_eq!(s.after(QUIET, 6, (true, true)), None);
        assert_eq!(s.after(QUIET, 7, (true, true)), Some((true, true)));
        // A rule that stays: the snapshot says so.
        assert_eq!(s.after(RULE, 7, (false, true)), Some((false, false)));
        assert_eq!(s.after(QUIET, 9, (false, true)), Some((false, true)));
    }
}

//! Keeps the anycast announcements (`anycast.rs`) in step with the BR's
//! health: checked every half second by the daemon's main loop, applied
//! with `ip`, logged when they change.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::anycast::{self, Health};
use super::selfcheck;
use super::slowpath::ip;
use crate::relay::Domain;

/// What the daemon announces now, and what it saw at the last check.
pub struct Announcer {
    table: u32,
    tun: String,
    announced: BTreeSet<IpNet>,
    last_turns: Vec<u64>,
    health: Option<Health>,
}

impl Announcer {
    /// Nothing announced yet; the first check with every thread turning
    /// announces.
    pub fn new(table: u32, tun: &str) -> Announcer {
        // A table left by a daemon killed with its TUN still up (IPv4
        // routes of a removed device are not always reported): start clean.
        flush(table);
        Announcer {
            table,
            tun: tun.to_string(),
            announced: BTreeSet::new(),
            last_turns: Vec::new(),
            health: None,
        }
    }

    /// One check: `turns` of every thread's loop, whether XDP is attached,
    /// what the self-check says, whether the operator drains, and the
    /// domains now configured.
    pub fn check(
        &mut self,
        turns: Vec<u64>,
        xdp_attached: bool,
        probe: selfcheck::Verdict,
        draining: bool,
        domains: &[Domain],
    ) -> Health {
        let health = Health {
            workers_alive: anycast::all_moved(&self.last_turns, &turns),
            xdp_attached,
            probes_relayed: probe != selfcheck::Verdict::Failing,
            draining,
        };
        // The first check only takes the workers' pulse.
        let first = self.last_turns.is_empty();
        self.last_turns = turns;
        if first {
            return health;
        }
        let wanted = if health.announce() {
            anycast::announced(domains)
        } else {
            BTreeSet::new()
        };
        if self
            .health
            .is_some_and(|h| h.announce() != health.announce())
            || self.health.is_none()
        {
            match health.announce() {
                true => tracing::info!(
                    "anycast: announcing {} prefix(es) in table {}",
                    wanted.len(),
                    self.table
                ),
                false => tracing::warn!(
                    "anycast: withdrawing the announcements in table {}: {}",
                    self.table,
                    health.reason()
                ),
            }
        }
        self.health = Some(health);
        self.apply(wanted);
        health
    }

    fn apply(&mut self, wanted: BTreeSet<IpNet>) {
        for change in anycast::changes(&self.announced, &wanted, &self.tun, self.table) {
            let args: Vec<&str> = change.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                tracing::error!("anycast: {e:#}");
                // Unknown now: retried from nothing at the next check.
                flush(self.table);
                self.announced.clear();
                return;
            }
        }
        self.announced = wanted;
    }

    /// Withdraws everything (the daemon is stopping).
    pub fn withdraw(&mut self) {
        if !self.announced.is_empty() {
            tracing::info!("anycast: withdrawing the announcements (stopping)");
        }
        self.apply(BTreeSet::new());
    }

    /// The prefixes announced now.
    pub fn announced(&self) -> usize {
        self.announced.len()
    }
}

/// Removes every announcement route of ours from `table`.
fn flush(table: u32) {
    let table = table.to_string();
    let proto = anycast::RTPROTO_BR6RD.to_string();
    for family in ["-4", "-6"] {
        let _ = ip(&[family, "route", "flush", "table", &table, "proto", &proto]);
    }
}

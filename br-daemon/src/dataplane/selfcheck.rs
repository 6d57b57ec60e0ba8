//! The anycast health check's data-path self-check (docs/anycast.md).
//!
//! At every check the daemon runs one probe ([`crate::relay::probe`]) through
//! the XDP program with BPF_PROG_RUN in live-frame mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`, kernel 5.18+), as if it had arrived on a
//! CE-facing attached interface: the program redirects it to the AF_XDP
//! socket of queue 0 (live mode runs frames on the kernel's queue 0), that
//! queue's worker decapsulates it, writes it into the TUN interface and
//! counts it `self-check`. The next check looks whether that count moved.
//! The other queues' workers are checked by their loops turning.
//!
//! One lost probe (a full ring under load) must not withdraw a BR that
//! relays: the data path fails after [`MISSES_TO_FAIL`] probes in a row.

use std::net::IpAddr;

use anyhow::{anyhow, Context, Result};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};

use super::fib::Fib;
use super::interfaces::Interfaces;
use super::xdp::Steering;
use super::xfrm::{self, Direction};
use crate::relay::{probe, Relay};

/// Probes in a row not relayed before the data path counts as failed.
pub const MISSES_TO_FAIL: u32 = 3;

/// What the self-check knows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The last probe was relayed (or too few were missed to say).
    Passing,
    /// [`MISSES_TO_FAIL`] probes in a row were not relayed.
    Failing,
    /// No probe can be made here (the reason is logged once).
    Unavailable,
}

/// Probes sent and relayed.
#[derive(Debug, Default)]
pub struct SelfCheck {
    /// The `self-check` count when the last probe was sent.
    sent_at: Option<u64>,
    misses: u32,
    unavailable: Option<String>,
}

impl SelfCheck {
    /// Judges the probe sent at the last check from `relayed` (the
    /// `self-check` count summed over the workers now), then sends the
    /// next with `send`.
    pub fn check(&mut self, relayed: u64, send: impl FnOnce() -> Result<()>) -> Verdict {
        if let Some(at) = self.sent_at.take() {
            self.misses = if relayed > at { 0 } else { self.misses + 1 };
        }
        match send() {
            Ok(()) => {
                self.sent_at = Some(relayed);
                if self.unavailable.take().is_some() {
                    tracing::info!("anycast: the data-path self-check runs again");
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                if self.unavailable.as_deref() != Some(&why) {
                    tracing::warn!(
                        "anycast: no data-path self-check ({why}): health is the workers' \
                         loops and XDP alone"
                    );
                }
                self.unavailable = Some(why);
                self.misses = 0;
                return Verdict::Unavailable;
            }
        }
        if self.misses >= MISSES_TO_FAIL {
            Verdict::Failing
        } else {
            Verdict::Passing
        }
    }
}

/// Runs one probe through the XDP program as if it had arrived on the
/// first CE-facing attached interface.
pub fn send_probe(
    steering: &Steering,
    interfaces: &Interfaces,
    fib: &Fib,
    relay: &Relay,
) -> Result<()> {
    let (name, ifindex) = interfaces
        .ports()
        .iter()
        .find(|(_, i)| interfaces.faces_ces(fib, *i))
        .ok_or_else(|| anyhow!("no attached interface is in ce-interfaces"))?;
    let mac = fib
        .link_mac(*ifindex)
        .ok_or_else(|| anyhow!("{name} has no MAC address"))?;
    let br_addrs = xfrm::br_addresses(relay.domains().iter());
    let encrypted = fib.ipsec().remote_prefixes(Direction::In, true, &br_addrs);
    let under_ipsec = |ce| encrypted.iter().any(|n| n.contains(&IpAddr::V4(ce)));
    let frame = relay
        .domains()
        .iter()
        .find_map(|d| probe::probe_frame(d, probe::probe_source(d, under_ipsec)?, mac))
        .ok_or_else(|| {
            anyhow!("every CE address tried is under an inbound IPsec policy or refused")
        })?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    opts.ctx_in = Some(&md);
    opts.attrs = TestRunAttrs::new().xdp_live_frames(1);
    steering
        .program()
        .test_run(opts)
        .with_context(|| format!("BPF_PROG_RUN of a probe on {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_only_after_misses_in_a_row_and_recovers_at_once() {
        let mut c = SelfCheck::default();
        let ok = || Ok(());
        assert_eq!(c.check(0, ok), Verdict::Passing, "nothing judged yet");
        assert_eq!(c.check(1, ok), Verdict::Passing, "relayed");
        for _ in 1..MISSES_TO_FAIL {
            assert_eq!(c.check(1, ok), Verdict::Passing, "missed, not yet failing");
        }
        assert_eq!(c.check(1, ok), Verdict::Failing);
        assert_eq!(c.check(2, ok), Verdict::Passing, "relayed again");
    }

    #[test]
    fn a_probe_that_cannot_be_sent_is_unavailable_not_failing() {
        let mut c = SelfCheck::default();
        for _ in 0..=MISSES_TO_FAIL {
            assert_eq!(
                c.check(0, || Err(anyhow!("no interface"))),
                Verdict::Unavailable
            );
        }
        assert_eq!(c.check(0, || Ok(())), Verdict::Passing);
    }
}

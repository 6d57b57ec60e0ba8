//! Counters: one block per thread, written by that thread only (relaxed
//! load + store, no locked instruction), summed when read. They reconcile:
//! every packet that enters the forwarder leaves it or is a counted drop.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::relay::verdict::named_enum;
use crate::relay::{DropReason, MssEvent, Path};

named_enum! {
    /// Packets in and out of the forwarder.
    Io {
        /// Frames taken from the AF_XDP receive rings (the AF_XDP path).
        ReceivedAfxdp => "rx-afxdp",
        /// Packets read from the TUN interface or the protocol-41 raw socket (the slow path).
        ReceivedKernel => "rx-kernel",
        /// Frames sent on an AF_XDP transmit ring.
        SentAfxdp => "tx-afxdp",
        /// Packets handed to the kernel to route (raw sockets): unresolved neighbour, or an egress without XDP.
        SentKernel => "tx-kernel",
        /// Packets for the host itself, written into the TUN interface.
        SentHost => "tx-host",
        /// Packets an outbound IPsec policy covers, handed to the kernel to encrypt (raw sockets): never sent by AF_XDP or the XDP fast path.
        SentKernelIpsec => "tx-kernel-ipsec",
    }
}

/// One thread's counters.
#[repr(align(64))]
pub struct Counters {
    io: [AtomicU64; Io::COUNT],
    paths: [AtomicU64; Path::COUNT],
    drops: [AtomicU64; DropReason::COUNT],
    tcp_mss: [AtomicU64; MssEvent::COUNT],
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer: a plain load and store is enough and avoids a lock prefix.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            io: std::array::from_fn(|_| AtomicU64::new(0)),
            paths: std::array::from_fn(|_| AtomicU64::new(0)),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            tcp_mss: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    #[inline]
    pub fn io(&self, which: Io, n: u64) {
        bump(&self.io[which.index()], n);
    }
    #[inline]
    pub fn path(&self, which: Path) {
        bump(&self.paths[which.index()], 1);
    }
    #[inline]
    pub fn dropped(&self, why: DropReason) {
        bump(&self.drops[why.index()], 1);
    }
    /// Adds what MSS clamping did ([`crate::relay::WorkerState::take_mss_events`]).
    #[inline]
    pub fn tcp_mss(&self, events: [u64; MssEvent::COUNT]) {
        for (c, n) in self.tcp_mss.iter().zip(events) {
            if n > 0 {
                bump(c, n);
            }
        }
    }
}

/// Counters summed over threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub io: Vec<u64>,
    pub paths: Vec<u64>,
    pub drops: Vec<u64>,
    pub tcp_mss: Vec<u64>,
}

impl Totals {
    /// Sums the blocks.
    pub fn sum<'a>(blocks: impl IntoIterator<Item = &'a Counters>) -> Totals {
        let mut t = Totals {
            io: vec![0; Io::COUNT],
            paths: vec![0; Path::COUNT],
            drops: vec![0; DropReason::COUNT],
            tcp_mss: vec![0; MssEvent::COUNT],
        };
        fn add(sums: &mut [u64], counters: &[AtomicU64]) {
            for (s, c) in sums.iter_mut().zip(counters) {
                *s += c.load(Ordering::Relaxed);
            }
        }
        for b in blocks {
            add(&mut t.io, &b.io);
            add(&mut t.paths, &b.paths);
            add(&mut t.drops, &b.drops);
            add(&mut t.tcp_mss, &b.tcp_mss);
        }
        t
    }

    pub fn get_io(&self, which: Io) -> u64 {
        self.io[which.index()]
    }
    pub fn get_path(&self, which: Path) -> u64 {
        self.paths[which.index()]
    }
    pub fn get_drop(&self, why: DropReason) -> u64 {
        self.drops[why.index()]
    }

    /// Packets in, packets out, packets dropped.
    pub fn balance(&self) -> (u64, u64, u64) {
        let inputs = self.get_io(Io::ReceivedAfxdp) + self.get_io(Io::ReceivedKernel);
        let outputs = self.get_io(Io::SentAfxdp)
            + self.get_io(Io::SentKernel)
            + self.get_io(Io::SentKernelIpsec)
            + self.get_io(Io::SentHost);
        (inputs, outputs, self.drops.iter().sum())
    }
}

/// Appends one Prometheus counter family: its HELP and TYPE lines, then
/// one `metric{labels} value` line per sample.
fn family(
    s: &mut String,
    metric: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(s, "# HELP {metric} {help}");
    let _ = writeln!(s, "# TYPE {metric} counter");
    for (labels, v) in samples {
        let _ = writeln!(s, "{metric}{{{labels}}} {v}");
    }
}

/// Counters labelled `label="name"` with the names in index order
/// ("unknown" past the last name).
fn labelled<'a>(
    label: &'a str,
    names: impl IntoIterator<Item = &'a str> + 'a,
    values: &'a [u64],
) -> impl Iterator<Item = (String, u64)> + 'a {
    names
        .into_iter()
        .chain(std::iter::repeat("unknown"))
        .zip(values)
        .map(move |(name, v)| (format!("{label}=\"{name}\""), *v))
}

/// Renders counters as Prometheus text (`/metrics`), also what the
/// daemon prints when it stops.
pub fn render(totals: &Totals, xdp: &[u64], declines: &[u64], afxdp: &[(String, u64)]) -> String {
    let mut s = String::new();
    family(
        &mut s,
        "br6rd_io_packets_total",
        "Packets in and out of the forwarder.",
        labelled("io", Io::ALL.iter().map(|io| io.name()), &totals.io),
    );
    family(
        &mut s,
        "br6rd_forwarded_packets_total",
        "Packets the relay forwarded, by path.",
        labelled("path", Path::ALL.iter().map(|p| p.name()), &totals.paths),
    );
    family(
        &mut s,
        "br6rd_dropped_packets_total",
        "Packets dropped, by reason (docs/counters.md).",
        labelled(
            "reason",
            DropReason::ALL.iter().map(|r| r.name()),
            &totals.drops,
        ),
    );
    family(
        &mut s,
        "br6rd_tcp_mss_total",
        "TCP SYNs whose MSS the relay clamped (tcp-mss), or could not parse.",
        labelled(
            "event",
            MssEvent::ALL.iter().map(|e| e.name()),
            &totals.tcp_mss,
        ),
    );
    family(
        &mut s,
        "br6rd_xdp_packets_total",
        "What the XDP program did, by action.",
        labelled("action", br_ebpf::STAT_NAMES.iter().map(|n| n.0), xdp),
    );
    family(
        &mut s,
        "br6rd_xdp_fast_path_declined_total",
        "Packets the XDP fast path left to the forwarder, by reason.",
        labelled(
            "reason",
            br_ebpf::DECLINE_NAMES.iter().map(|n| n.0),
            declines,
        ),
    );
    family(
        &mut s,
        "br6rd_afxdp_kernel_drops_total",
        "Drops the kernel counted on the AF_XDP sockets.",
        afxdp.iter().cloned(),
    );
    s
}

/// Reads one sample back from Prometheus text: `metric{label="value"}`.
pub fn sample(text: &str, metric: &str, label: &str, value: &str) -> Option<u64> {
    let key = format!("{metric}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_balance_and_render() {
        let a = Counters::default();
        let b = Counters::default();
        a.io(Io::ReceivedAfxdp, 3);
        a.path(Path::Encapsulated);
        a.io(Io::SentAfxdp, 1);
        a.dropped(DropReason::SpoofedSource);
        a.dropped(DropReason::NotIp);
        b.io(Io::ReceivedKernel, 1);
        b.path(Path::Decapsulated);
        b.io(Io::SentKernel, 1);
        let t = Totals::sum([&a, &b]);
        assert_eq!(t.balance(), (4, 2, 2));
        let text = render(
            &t,
            &[5; 10],
            &[2; 4],
            &[("socket=\"lan0/0\",kind=\"rx-ring-full\"".into(), 7)],
        );
        assert_eq!(
            sample(
                &text,
                "br6rd_dropped_packets_total",
                "reason",
                "spoofed-source"
            ),
            Some(1)
        );
        assert_eq!(
            sample(
                &text,
                "br6rd_forwarded_packets_total",
                "path",
                "encapsulated"
            ),
            Some(1)
        );
        assert_eq!(
            sample(&text, "br6rd_xdp_packets_total", "action", "redirect-ipv6"),
            Some(5)
        );
        assert_eq!(
            sample(
                &text,
                "br6rd_xdp_fast_path_declined_total",
                "reason",
                "no-next-hop"
            ),
            Some(2)
        );
        assert!(text
            .contains("br6rd_afxdp_kernel_drops_total{socket=\"lan0/0\",kind=\"rx-ring-full\"} 7"));
    }
}

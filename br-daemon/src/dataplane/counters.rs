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
    /// Turns of the owning thread's loop: the health check's heartbeat.
    loops: AtomicU64,
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
            loops: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// One more turn of the owning thread's loop.
    #[inline]
    pub fn turn(&self) {
        bump(&self.loops, 1);
    }
    /// How many turns so far.
    pub fn turns(&self) -> u64 {
        self.loops.load(Ordering::Relaxed)
    }
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

/// Every counter at one moment: what `/metrics` and `/metrics.json` show.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub totals: Totals,
    /// The XDP program's actions, by `br_ebpf::STAT_*`.
    pub xdp: Vec<u64>,
    /// The fast path's declines, by `br_ebpf::DECLINE_*`.
    pub declines: Vec<u64>,
    /// (socket, kind, count): drops the kernel counted on AF_XDP sockets.
    pub afxdp: Vec<(String, &'static str, u64)>,
}

/// A Prometheus label value, escaped (exposition format: `\`, `"`, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A counter family: (metric, help, label, names, values).
type Family<'a> = (
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
    &'a [u64],
);

/// The counter families, in the order they are rendered.
fn families(s: &Snapshot) -> Vec<Family<'_>> {
    vec![
        (
            "br6rd_io_packets_total",
            "Packets in and out of the forwarder.",
            "io",
            Io::ALL.iter().map(|x| x.name()).collect(),
            &s.totals.io[..],
        ),
        (
            "br6rd_forwarded_packets_total",
            "Packets the relay forwarded, by path.",
            "path",
            Path::ALL.iter().map(|x| x.name()).collect(),
            &s.totals.paths[..],
        ),
        (
            "br6rd_dropped_packets_total",
            "Packets dropped, by reason (docs/counters.md).",
            "reason",
            DropReason::ALL.iter().map(|x| x.name()).collect(),
            &s.totals.drops[..],
        ),
        (
            "br6rd_tcp_mss_total",
            "TCP SYNs whose MSS the relay clamped (tcp-mss), or could not parse.",
            "event",
            MssEvent::ALL.iter().map(|x| x.name()).collect(),
            &s.totals.tcp_mss[..],
        ),
        (
            "br6rd_xdp_packets_total",
            "What the XDP program did, by action.",
            "action",
            br_ebpf::STAT_NAMES.iter().map(|n| n.0).collect(),
            &s.xdp[..],
        ),
        (
            "br6rd_xdp_fast_path_declined_total",
            "Packets the XDP fast path left to the forwarder, by reason.",
            "reason",
            br_ebpf::DECLINE_NAMES.iter().map(|n| n.0).collect(),
            &s.declines[..],
        ),
    ]
}

/// Renders counters as Prometheus text (`/metrics`), also what the
/// daemon prints when it stops.
pub fn render(s: &Snapshot) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (metric, help, label, names, values) in families(s) {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        let names = names.into_iter().chain(std::iter::repeat("unknown"));
        for (name, v) in names.zip(values) {
            let _ = writeln!(out, "{metric}{{{label}=\"{}\"}} {v}", escape(name));
        }
    }
    let metric = "br6rd_afxdp_kernel_drops_total";
    let _ = writeln!(
        out,
        "# HELP {metric} Drops the kernel counted on the AF_XDP sockets."
    );
    let _ = writeln!(out, "# TYPE {metric} counter");
    for (socket, kind, v) in &s.afxdp {
        let _ = writeln!(
            out,
            "{metric}{{socket=\"{}\",kind=\"{kind}\"}} {v}",
            escape(socket)
        );
    }
    out
}

/// The same counters as JSON (`/metrics.json`): `{metric: {name: value}}`,
/// the AF_XDP drops as `{socket: {kind: value}}`.
pub fn render_json(s: &Snapshot) -> String {
    use serde_json::{Map, Value};
    let mut root = Map::new();
    for (metric, _, _, names, values) in families(s) {
        let family: Map<String, Value> = names
            .into_iter()
            .zip(values)
            .map(|(n, v)| (n.to_string(), Value::from(*v)))
            .collect();
        root.insert(metric.to_string(), Value::Object(family));
    }
    let mut sockets: Map<String, Value> = Map::new();
    for (socket, kind, v) in &s.afxdp {
        let entry = sockets
            .entry(socket.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(kind.to_string(), Value::from(*v));
        }
    }
    root.insert(
        "br6rd_afxdp_kernel_drops_total".into(),
        Value::Object(sockets),
    );
    Value::Object(root).to_string()
}

/// What the counter `name` of family `metric` means.
pub fn meaning(metric: &str, name: &str) -> Option<&'static str> {
    let pairs: Vec<(&'static str, &'static str)> = match metric {
        "br6rd_io_packets_total" => Io::ALL.iter().map(|x| (x.name(), x.meaning())).collect(),
        "br6rd_forwarded_packets_total" => {
            Path::ALL.iter().map(|x| (x.name(), x.meaning())).collect()
        }
        "br6rd_dropped_packets_total" => DropReason::ALL
            .iter()
            .map(|x| (x.name(), x.meaning()))
            .collect(),
        "br6rd_tcp_mss_total" => MssEvent::ALL
            .iter()
            .map(|x| (x.name(), x.meaning()))
            .collect(),
        "br6rd_xdp_packets_total" => br_ebpf::STAT_NAMES.to_vec(),
        "br6rd_xdp_fast_path_declined_total" => br_ebpf::DECLINE_NAMES.to_vec(),
        _ => return None,
    };
    pairs.into_iter().find(|(n, _)| *n == name).map(|(_, m)| m)
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
        let snapshot = Snapshot {
            totals: t,
            xdp: vec![5; 10],
            declines: vec![2; 4],
            afxdp: vec![
                ("lan0/0".into(), "rx-ring-full", 7),
                ("a\"b".into(), "rx-dropped", 1),
            ],
        };
        let text = render(&snapshot);
        assert!(text.contains("socket=\"a\\\"b\""), "escaped: {text}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&snapshot)).unwrap();
        assert_eq!(json["br6rd_dropped_packets_total"]["spoofed-source"], 1);
        assert_eq!(
            json["br6rd_afxdp_kernel_drops_total"]["lan0/0"]["rx-ring-full"],
            7
        );
        assert_eq!(
            meaning("br6rd_dropped_packets_total", "spoofed-source"),
            Some(DropReason::SpoofedSource.meaning())
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

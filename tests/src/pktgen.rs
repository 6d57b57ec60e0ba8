//! The kernel's packet generator (`/proc/net/pktgen`, the kernel's
//! Documentation/networking/pktgen.rst) driving the bench's IPv6 streams
//! (`br-bench --generator pktgen`), where the kernel has it (a real
//! gateway: `modprobe pktgen`; this host's kernel has none, the Debian
//! guests' have it and `tests/tests/pktgen.rs` checks it there).
//!
//! pktgen builds UDP over IPv4 or IPv6 only, and refuses devices that are
//! not Ethernet or loopback (`pktgen_setup_dev`), so a `sit` device cannot
//! carry it: the protocol-41 streams (decap, hairpin) stay with the
//! AF_XDP generator. Its IPv6 frames are at least 78 bytes (Ethernet,
//! IPv6, UDP and its own 16-byte header). With a destination range,
//! each 32-bit word of the address is `(random | min) & max`: a range
//! over the embedded CE bits gives random CEs.

use std::io;
use std::net::Ipv6Addr;
use std::time::Duration;

/// One IPv6 stream of one pktgen thread.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The Ethernet device it leaves by.
    pub dev: String,
    /// The kernel thread (`kpktgend_N`, one per CPU) that sends it.
    pub thread: usize,
    pub dst_mac: [u8; 6],
    pub src: Ipv6Addr,
    /// One destination, or (min, max) for random ones between.
    pub dst: (Ipv6Addr, Option<Ipv6Addr>),
    /// Frame size without the FCS (pktgen raises it to its minimum).
    pub frame_len: usize,
    /// Packets to send; 0: until stopped.
    pub count: u64,
    /// Packets per second; None: as fast as it goes.
    pub rate: Option<u64>,
}

const PROC: &str = "/proc/net/pktgen";

/// The writes that set `s` up: (file under /proc/net/pktgen, command).
/// Writing `start` to `pgctrl` then sends it (the write returns when
/// every thread is done, or after `stop`).
pub fn commands(s: &Stream) -> Vec<(String, String)> {
    let thread = format!("kpktgend_{}", s.thread);
    let mac = s
        .dst_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut c = vec![
        (thread.clone(), "rem_device_all".to_string()),
        (thread, format!("add_device {}", s.dev)),
    ];
    let dev = |cmd: String| (s.dev.clone(), cmd);
    c.push(dev(format!("count {}", s.count)));
    c.push(dev(format!("pkt_size {}", s.frame_len)));
    c.push(dev(format!("dst_mac {mac}")));
    c.push(dev(format!("src6 {}", s.src)));
    c.push(dev(format!("dst6 {}", s.dst.0)));
    if let Some(max) = s.dst.1 {
        c.push(dev(format!("dst6_min {}", s.dst.0)));
        c.push(dev(format!("dst6_max {max}")));
    }
    c.push(dev(match s.rate {
        Some(pps) => format!("ratep {pps}"),
        None => "delay 0".to_string(),
    }));
    c
}

/// The commands as a shell script (for a guest without this program).
pub fn script(s: &Stream) -> String {
    commands(s)
        .iter()
        .map(|(file, cmd)| format!("echo '{cmd}' > {PROC}/{file}\n"))
        .collect()
}

/// Packets a device sent so far, from its /proc/net/pktgen file
/// (`pkts-sofar: N`).
pub fn sent(status: &str) -> Option<u64> {
    let at = status.find("pkts-sofar:")? + "pkts-sofar:".len();
    status[at..].split_whitespace().next()?.parse().ok()
}

/// Whether this network namespace has pktgen.
pub fn available() -> bool {
    std::path::Path::new(PROC).join("pgctrl").exists()
}

/// Sets the streams up, sends them (for `limit` when they have no count),
/// and returns the packets each sent. Run in the generator's namespace.
pub fn run(streams: &[Stream], limit: Duration) -> io::Result<Vec<u64>> {
    for s in streams {
        for (file, cmd) in commands(s) {
            // pktgen drops a write's last byte (the shell's newline).
            std::fs::write(format!("{PROC}/{file}"), format!("{cmd}\n"))
                .map_err(|e| io::Error::new(e.kind(), format!("pktgen {file}: {e}")))?;
        }
    }
    let start = std::thread::spawn(|| std::fs::write(format!("{PROC}/pgctrl"), "start\n"));
    if streams.iter().any(|s| s.count == 0) {
        std::thread::sleep(limit);
        std::fs::write(format!("{PROC}/pgctrl"), "stop\n")?;
    }
    start
        .join()
        .map_err(|_| io::Error::other("pktgen start thread panicked"))??;
    streams
        .iter()
        .map(|s| {
            let status = std::fs::read_to_string(format!("{PROC}/{}", s.dev))?;
            sent(&status).ok_or_else(|| io::Error::other(format!("no pkts-sofar in {status}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Stream {
        Stream {
            dev: "gen0".into(),
            thread: 1,
            dst_mac: [2, 0, 0, 0, 0, 0xab],
            src: "2001:db8:ee::2".parse().unwrap(),
            dst: (
                "2001:db8:0:f096:a60::1".parse().unwrap(),
                Some("2001:db8:0:f096:a60:ffff:0:1".parse().unwrap()),
            ),
            frame_len: 64,
            count: 1000,
            rate: Some(20_000),
        }
    }

    #[test]
    fn a_ranged_paced_stream_of_one_thread() {
        let c = commands(&stream());
        let text: Vec<String> = c.iter().map(|(f, c)| format!("{f}: {c}")).collect();
        assert_eq!(
            text,
            [
                "kpktgend_1: rem_device_all",
                "kpktgend_1: add_device gen0",
                "gen0: count 1000",
                "gen0: pkt_size 64",
                "gen0: dst_mac 02:00:00:00:00:ab",
                "gen0: src6 2001:db8:ee::2",
                "gen0: dst6 2001:db8:0:f096:a60::1",
                "gen0: dst6_min 2001:db8:0:f096:a60::1",
                "gen0: dst6_max 2001:db8:0:f096:a60:ffff:0:1",
                "gen0: ratep 20000",
            ]
        );
        let one = Stream {
            dst: (stream().dst.0, None),
            rate: None,
            ..stream()
        };
        let script = script(&one);
        assert!(
            script.ends_with("echo 'delay 0' > /proc/net/pktgen/gen0\n"),
            "{script}"
        );
        assert!(!script.contains("dst6_min"), "{script}");
    }

    #[test]
    fn the_count_sent_is_read_from_the_device_file() {
        let status = "Params: count 1000  min_pkt_size: 64\n...\nCurrent:\n     pkts-sofar: 1000  errors: 0\n";
        assert_eq!(sent(status), Some(1000));
        assert_eq!(sent("Current:\n"), None);
    }
}

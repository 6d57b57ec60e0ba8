//! The benchmark of `cargo xtask bench` (which installs what it needs and
//! builds this and br-daemon first): `br-bench [--quick] [--only NAME]`.
//!
//! Throughput of the BR against two baselines measured
//! in the same run, on the same topology:
//!
//! ```text
//!  ns gen                  ns gw                         ns sink
//!  gen0 ──────────────── in0 [XDP]   out0 [XDP] ──────── sink0 [XDP: count, drop]
//!  AF_XDP generator       br-daemon | kernel forwarding | XDP redirect
//! ```
//!
//! This kernel has no pktgen; the generator is an AF_XDP transmitter here
//! (the BR's own ring code, copy mode), pinned to its own CPU. (The XDP
//! live-frames test run that xdp-trafficgen uses was tried: each call costs
//! about 20 ms, so it sends in bursts that overflow veth's 256-frame ring;
//! see docs/benchmarks.md.)
//! Every scenario reports the offered and forwarded rate at full speed and
//! the zero-loss rate found by binary search (RFC 2544 §26.1 / RFC 8219).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::{DevMap, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use br_daemon::dataplane::xsk::{RingSizes, Umem, XskSocket, FRAME_SIZE};
use br_daemon::relay::wire::checksum;
use br_tests::{spawn, Netns, Proc};

#[path = "br-bench/bare.rs"]
mod bare;
#[path = "br-bench/xdp_cost.rs"]
mod xdp_cost;

const BR_V4: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 222);
const LAN_SERVER: &str = "2001:db8:0:100:5054:1cff:fe93:3ea8";
const LAN_HOST: &str = "2001:db8:ee::2";
const GEN_CPU: usize = 1;
const BR_CPU: usize = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// LAN IPv6 to CEs: encapsulation.
    Encap,
    /// CE protocol 41 to the LAN: decapsulation.
    Decap,
    /// CE to CE: decapsulation and encapsulation.
    Hairpin,
    /// Encap and decap alternating.
    Mix,
    /// Plain IPv6 to the LAN prefix, for the baselines.
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarder {
    /// br-daemon as configured by default: XDP fast path and AF_XDP forwarder.
    Br,
    /// br-daemon with `xdp-fast-path = false`: every packet through AF_XDP.
    BrAfxdp,
    /// br-daemon with XDP on an unused interface only: the kernel carries
    /// every packet to and from it (TUN, raw sockets): the slow path.
    BrSlow,
    Kernel,
    XdpRedirect,
    /// The bare AF_XDP forwarder (`bare.rs`): the br-afxdp rows' ceiling.
    AfxdpBare,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    Min,
    Imix,
    Large,
}

#[derive(Clone, Debug)]
struct Scenario {
    name: String,
    forwarder: Forwarder,
    stream: Stream,
    size: Size,
    flows: u32,
    queues: u16,
}

#[derive(Clone, Debug, Default)]
struct Outcome {
    offered_pps: f64,
    forwarded_pps: f64,
    loss_pct: f64,
    zero_loss_pps: f64,
    /// The gateway's CPU per packet in the zero-loss trial: its cost at
    /// a load it keeps up with (flat out, the receive threads also spend
    /// CPU on frames that are then dropped).
    zero_loss_gateway_cpu_ns_per_packet: f64,
    /// One-way latency percentiles (50, 99, 99.9) in microseconds at
    /// LATENCY_RATE, generator to sink.
    latency_us: [u32; 3],
    /// CPU time the gateway spent per forwarded packet in the median
    /// flat-out trial (its veth receive threads and br-daemon's threads).
    gateway_cpu_ns_per_packet: f64,
    /// CPUs the gateway kept busy in that trial (1.0 = one whole CPU).
    gateway_cpus_busy: f64,
    /// CPU time of the sink's receive threads per packet, same trial.
    sink_cpu_ns_per_packet: f64,
    /// Run time of the gateway's XDP program per run (kernel BPF stats),
    /// same trial; 0 when no XDP program forwards (kernel forwarding).
    xdp_ns_per_run: f64,
    /// br-daemon's resident set (VmRSS) after the trials, in KiB; 0
    /// for the baselines.
    daemon_rss_kib: u64,
    /// afxdp-bare and br-afxdp rows: a trial paced at the load the bare
    /// forwarder was offered flat out (Testbed::equal_load_pps).
    equal_load: Option<EqualLoad>,
}

/// The equal load: this share of the bare forwarder's flat-out rate.
const EQUAL_LOAD: f64 = 0.8;

/// A trial at a given paced load: what was offered, forwarded, and the
/// gateway's CPU per forwarded packet.
#[derive(Clone, Copy, Debug, Default)]
struct EqualLoad {
    offered_pps: f64,
    forwarded_pps: f64,
    gateway_cpu_ns_per_packet: f64,
}

/// What one trial measured.
#[derive(Clone, Copy, Debug)]
struct Trial {
    offered_pps: f64,
    forwarded_pps: f64,
    /// CPU time of the gateway's threads during the trial.
    gateway_cpu_ns: u64,
    /// CPU time of the sink's receive threads during the trial.
    sink_cpu_ns: u64,
    /// Run time and runs of the gateway's XDP program during the trial.
    xdp_runs: (u64, u64),
    seconds: f64,
}

/// A thread of any process: (pid, tid, comm, its /proc/PID/task/TID).
fn threads() -> Vec<(u32, u32, String, PathBuf)> {
    let mut all = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return all;
    };
    for proc_dir in procs.flatten() {
        let Some(pid) = proc_dir.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(proc_dir.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            all.push((pid, tid, comm.trim_end().to_string(), task.path()));
        }
    }
    all
}

/// CPU time so far (ns, from /proc/PID/task/TID/schedstat) of (a) the
/// threads that forward on the gateway: veth's receive (NAPI) threads of
/// in0 and out0, where XDP, the fast path and kernel forwarding run, and
/// every thread of `daemon` (the AF_XDP forwarder); (b) the sink's
/// receive threads: what a forwarded frame costs the sink depends on how
/// it arrives (an xdp_frame from a redirect, or an skb from kernel
/// forwarding that veth converts for the sink's XDP). Threads that ended
/// meanwhile count nothing.
fn gateway_and_sink_cpu_ns(daemon: Option<u32>) -> (u64, u64) {
    let (mut gateway, mut sink) = (0, 0);
    for (is_gateway, _, ns) in forwarding_threads_cpu_ns(daemon) {
        *if is_gateway { &mut gateway } else { &mut sink } += ns;
    }
    (gateway, sink)
}

/// The threads [`gateway_and_sink_cpu_ns`] counts, one by one: (on the
/// gateway, "comm/tid", CPU ns so far).
fn forwarding_threads_cpu_ns(daemon: Option<u32>) -> Vec<(bool, String, u64)> {
    let mut out = Vec::new();
    for (pid, tid, comm, path) in threads() {
        let is_gateway = if Some(pid) == daemon
            || comm == bare::THREAD
            || comm.starts_with("napi/in0-")
            || comm.starts_with("napi/out0-")
        {
            true
        } else if comm.starts_with("napi/sink0-") {
            false
        } else {
            continue;
        };
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        out.push((is_gateway, format!("{comm}/{tid}"), ns));
    }
    out
}

/// BR_BENCH_VERBOSE: the CPU each forwarding thread spent between
/// `before` and `after`, per packet forwarded.
fn print_thread_cpu(before: &[(bool, String, u64)], after: &[(bool, String, u64)], packets: u64) {
    let mut parts = Vec::new();
    for (_, name, ns) in after {
        let was = before.iter().find(|b| &b.1 == name).map_or(0, |b| b.2);
        if *ns > was {
            parts.push(format!(
                "{name} {:.0}",
                (ns - was) as f64 / packets.max(1) as f64
            ));
        }
    }
    eprint!("[ns/packet by thread: {}] ", parts.join(", "));
}

/// Total run time (ns) and runs of the gateway's XDP programs so far
/// (the BR's `br_steer`, the baseline's `bench_redirect`), from the
/// kernel's BPF statistics (counted only while enabled: see `measure`).
fn gateway_xdp_runs() -> (u64, u64) {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| {
            matches!(
                p.name_as_str(),
                Some("br_steer" | "bench_redirect" | "bench_xsk")
            )
        })
        .fold((0, 0), |(t, n), p| {
            (t + p.run_time().as_nanos() as u64, n + p.run_count())
        })
}

/// What the Cisco 1921 forwards: its vendor's RFC 2544 figure (64-byte
/// frames, no services), for context in the report.
const CISCO_1921_PPS: u64 = 290_000;

/// Offered rate of the latency trials: light load, frames sent one by one.
const LATENCY_RATE: f64 = 10_000.0;
/// Must match LATENCY_MARK of bench.bpf.c: the IPv6 flow label of stamped frames.
const LATENCY_MARK: u32 = 0x5ca1e;

/// IMIX 7:4:1 of 64, 594 and 1518-byte frames (Simple IMIX, RFC 6985 §4).
const IMIX: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 594, 594, 594, 594, 1518];

fn frame_len(stream: Stream, size: Size, i: usize) -> usize {
    // The smallest frame of each stream: Ethernet + headers + 8 bytes of UDP.
    let min = match stream {
        Stream::Encap | Stream::Plain => 14 + 40 + 8,
        Stream::Decap | Stream::Hairpin | Stream::Mix => 14 + 20 + 40 + 8,
    };
    let want = match size {
        Size::Min => 64,
        Size::Imix => IMIX[i % IMIX.len()],
        // IPv6 packets of 1480 bytes, the largest that fits a 1500-byte IPv4 path.
        Size::Large => {
            14 + 1480
                + if matches!(stream, Stream::Encap | Stream::Plain) {
                    0
                } else {
                    20
                }
        }
    };
    // Native IPv6 must fit the tunnel MTU (1480 here) once encapsulated;
    // protocol 41 must fit a 1500-byte IPv4 path.
    let max = match stream {
        Stream::Encap | Stream::Plain => 14 + 1480,
        _ => 14 + 1500,
    };
    want.max(min).min(max)
}

fn ce_ipv4(flow: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + (flow & 0xffff))
}

fn ce_ipv6(ce: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8_0000_f096u128 << 64) | (u128::from(u32::from(ce)) << 32) | 1)
}

/// Writes frame number `i` of a stream (flow `flow`) at the start of `buf`;
/// returns its length.
fn write_frame(
    buf: &mut [u8],
    dst_mac: [u8; 6],
    stream: Stream,
    size: Size,
    i: usize,
    flow: u32,
) -> usize {
    let stream = match stream {
        Stream::Mix if i.is_multiple_of(2) => Stream::Encap,
        Stream::Mix => Stream::Decap,
        s => s,
    };
    let len = frame_len(stream, size, i);
    buf[..len].fill(0);
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0xbe, 0x01]);
    let ce = ce_ipv4(flow);
    let ipv6_at = match stream {
        Stream::Encap | Stream::Plain => {
            buf[12..14].copy_from_slice(&[0x86, 0xdd]);
            14
        }
        _ => {
            buf[12..14].copy_from_slice(&[0x08, 0x00]);
            let h = &mut buf[14..34];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            // The generator keeps ID + the low half of the source constant.
            h[4..6].copy_from_slice(&(0xffff - (flow & 0xffff) as u16).to_be_bytes());
            h[8] = 64;
            h[9] = 41;
            h[12..16].copy_from_slice(&ce.octets());
            h[16..20].copy_from_slice(&BR_V4.octets());
            h[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            34
        }
    };
    let (src, dst): (Ipv6Addr, Ipv6Addr) = match stream {
        Stream::Encap => (LAN_HOST.parse().unwrap(), ce_ipv6(ce)),
        Stream::Plain => (
            LAN_HOST.parse().unwrap(),
            Ipv6Addr::from(u128::from(LAN_SERVER.parse::<Ipv6Addr>().unwrap()) + u128::from(flow)),
        ),
        Stream::Decap => (ce_ipv6(ce), LAN_SERVER.parse().unwrap()),
        _ => (ce_ipv6(ce), ce_ipv6(ce_ipv4(flow.wrapping_add(1)))),
    };
    let p = &mut buf[ipv6_at..len];
    let payload_len = ((p.len() - 40) as u16).to_be_bytes();
    p[0] = 0x60;
    p[4..6].copy_from_slice(&payload_len);
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&9u16.to_be_bytes());
    p[44..46].copy_from_slice(&payload_len);
    len
}

/// The bench object with `bench_redirect` loaded (not attached), sending
/// every frame to `ifindex`: the XDP-redirect baseline, and the
/// live-frames generator's program.
fn load_bench_redirect(ifindex: u32) -> Result<Ebpf> {
    let mut e = Ebpf::load(br_ebpf::bench_object())?;
    {
        let mut ports: DevMap<&mut MapData> =
            DevMap::try_from(e.map_mut("tx_port").context("tx_port")?)?;
        ports.set(0, ifindex, None, 0)?;
    }
    bench_redirect(&mut e)?.load()?;
    Ok(e)
}

/// The `bench_redirect` program of a bench object.
fn bench_redirect(e: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(e.program_mut("bench_redirect")
        .context("bench_redirect")?
        .try_into()?)
}

/// Flat out with the kernel's XDP live-frames test run (what
/// xdp-trafficgen uses): an XDP program redirects copies of one frame
/// into gen0, so in0 receives XDP frames, as from a NIC, not the skbs of
/// copy-mode AF_XDP. One CE, flat out only. Returns the frames offered.
fn generate_live(ifindex: u32, dst_mac: [u8; 6], sc: &Scenario, duration: Duration) -> Result<u64> {
    use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
    let mut e = load_bench_redirect(ifindex)?;
    let p = bench_redirect(&mut e)?;
    let mut buf = vec![0u8; 2048];
    let len = write_frame(&mut buf, dst_mac, sc.stream, Size::Min, 0, 0);
    let frame = buf[..len].to_vec();
    // struct xdp_md: data_end must be the frame's length.
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    const REPEAT: u32 = 1 << 14;
    let (start, mut sent) = (Instant::now(), 0u64);
    while start.elapsed() < duration {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.ctx_in = Some(&md);
        opts.repeat = REPEAT;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
        p.test_run(opts).context("live frames")?;
        sent += u64::from(REPEAT);
    }
    Ok(sent)
}

/// Sends a stream out of `gen0` for `duration` at `rate` packets per
/// second (None: as fast as it goes) from an AF_XDP socket (the BR's own
/// ring code, copy mode). Returns the frames the kernel transmitted.
fn generate(
    ifindex: u32,
    queue: u32,
    dst_mac: [u8; 6],
    sc: &Scenario,
    rate: Option<f64>,
    duration: Duration,
    stamp: bool,
) -> Result<u64> {
    // Stamped frames go one by one, so that none waits behind its batch.
    let batch_size = if stamp { 1 } else { 64 };
    const FRAMES: u32 = 4096;
    let mut umem = Umem::new(FRAMES)?;
    let mut socket = XskSocket::new(&umem, None, ifindex, queue, RingSizes::default(), false)
        .with_context(|| format!("generator socket on gen0 queue {queue}"))?;
    let mut free: Vec<u64> = (0..FRAMES).map(|i| u64::from(i * FRAME_SIZE)).collect();
    let mut done = Vec::with_capacity(FRAMES as usize);
    let mut batch: Vec<(u64, u32)> = Vec::with_capacity(64);
    let (mut sent, mut n) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < duration {
        done.clear();
        socket.complete(&mut done, usize::MAX);
        sent += done.len() as u64;
        free.extend_from_slice(&done);
        if let Some(r) = rate {
            // Ahead of schedule: wait (in steps of one batch).
            let due = n as f64 / r;
            let now = start.elapsed().as_secs_f64();
            if due >= now {
                // Sleep rather than spin: a spinning generator delays the
                // sink's NAPI thread on the same CPU, whose 256-frame ring
                // then overflows (paced trials lost frames at 60 kpps).
                if stamp || due - now > PACING_SPIN_S {
                    std::thread::sleep(Duration::from_secs_f64(due - now));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
        }
        batch.clear();
        while batch.len() < batch_size {
            let Some(addr) = free.pop() else { break };
            let (chunk, _) = umem.chunk_mut(addr);
            let flow = (n % u64::from(sc.flows)) as u32;
            let len = write_frame(chunk, dst_mac, sc.stream, sc.size, n as usize, flow);
            if stamp {
                stamp_frame(&mut chunk[..len]);
            }
            batch.push((addr, len as u32));
            n += 1;
        }
        let queued = socket.transmit(&batch);
        free.extend(batch[queued..].iter().map(|(a, _)| *a));
        n -= (batch.len() - queued) as u64;
        socket.flush_tx();
    }
    std::thread::sleep(Duration::from_millis(20));
    socket.flush_tx();
    done.clear();
    socket.complete(&mut done, usize::MAX);
    Ok(sent + done.len() as u64)
}

/// Below this wait the paced generator spins (a sleep takes longer here).
const PACING_SPIN_S: f64 = 20e-6;

/// Marks a frame for the sink's latency histogram: the IPv6 flow label
/// LATENCY_MARK, and CLOCK_MONOTONIC (what bpf_ktime_get_ns reads) in
/// place of the UDP header.
fn stamp_frame(frame: &mut [u8]) {
    let ipv6_at = if frame[12..14] == [0x08, 0x00] {
        34
    } else {
        14
    };
    let ip6 = &mut frame[ipv6_at..];
    ip6[1] = (ip6[1] & 0xf0) | (LATENCY_MARK >> 16) as u8;
    ip6[2..4].copy_from_slice(&(LATENCY_MARK as u16).to_be_bytes());
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec clock_gettime writes into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    ip6[40..48].copy_from_slice(&ns.to_ne_bytes());
}

/// Percentiles (fractions) of a histogram of 1-microsecond buckets.
fn percentiles(histogram: &[u64], fractions: [f64; 3]) -> [u32; 3] {
    let total: u64 = histogram.iter().sum();
    let mut out = [0u32; 3];
    for (o, f) in out.iter_mut().zip(fractions) {
        let want = (total as f64 * f).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, n) in histogram.iter().enumerate() {
            seen += n;
            if seen >= want {
                *o = us as u32;
                break;
            }
        }
    }
    out
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    pin_thread(0, cpu);
}

/// Pins thread `tid` (0: the caller) to `cpu`.
fn pin_thread(tid: u32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // take live pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        );
    }
}

struct Testbed {
    gen: Netns,
    gw: Netns,
    sink: Netns,
    dir: PathBuf,
    gen_ifindex: u32,
    in_mac: [u8; 6],
    sink_ebpf: Ebpf,
    redirect_ebpf: Option<Ebpf>,
    bare: Option<bare::Bare>,
    /// The running daemon, its queues and its forwarder.
    daemon: Option<(Proc, u16, Forwarder)>,
    /// `--generator pktgen`: the kernel's pktgen sends what it can.
    pktgen: bool,
    /// EQUAL_LOAD of the first afxdp-bare row's flat-out forwarded rate.
    /// Flat out, the generator (which shares its CPU with the sink)
    /// offers more to a gateway that forwards less, so br-afxdp rows face
    /// more load than the bare forwarder did; at this paced load both
    /// face the same, below the edge where rows flip between keeping up
    /// and receive livelock (seen here at 1.05 Mpps: the same row
    /// forwarded 0.39 or 1.06 Mpps).
    equal_load_pps: Option<f64>,
}

fn veth(a_ns: &Netns, a: &str, b_ns: &Netns, b: &str) {
    br_tests::veth(a_ns, a, b_ns, b, 2);
    a_ns.sh(&format!(
        "ethtool -L {a} rx 2 tx 2 2>/dev/null; ip link set {a} up"
    ));
    b_ns.sh(&format!(
        "ethtool -L {b} rx 2 tx 2 2>/dev/null; ip link set {b} up"
    ));
}

impl Testbed {
    fn new() -> Result<Testbed> {
        let id = std::process::id() % 10000;
        let gen = Netns::new(format!("bench{id}-gen"));
        let gw = Netns::new(format!("bench{id}-gw"));
        let sink = Netns::new(format!("bench{id}-sink"));
        veth(&gen, "gen0", &gw, "in0");
        veth(&gw, "out0", &sink, "sink0");
        // What br-slow attaches to instead of in0 and out0: nothing crosses it.
        br_tests::veth(&gw, "idle0", &gw, "idle1", 1);
        gw.sh("ip link set idle0 up && ip link set idle1 up");
        let sink_mac = sink.mac("sink0");
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        gw.sh(&format!(
            "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1 net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 && \
             ip -4 addr add 10.200.0.1/24 dev out0 && ip -6 addr add 2001:db8:ff::1/64 dev out0 nodad && \
             ip neigh replace 10.200.0.2 lladdr {m} dev out0 nud permanent && \
             ip -6 neigh replace 2001:db8:ff::2 lladdr {m} dev out0 nud permanent && \
             ip -4 route add 10.96.0.0/16 via 10.200.0.2 && ip -6 route add 2001:db8:0:100::/64 via 2001:db8:ff::2",
            m = mac(sink_mac)
        ));
        // Receive work in NAPI threads, pinned: the gateway's on the BR's
        // CPU, the sink's on the generator's.
        for (ns, dev) in [
            (&gw, "in0"),
            (&gw, "out0"),
            (&sink, "sink0"),
            (&gen, "gen0"),
        ] {
            // veth has NAPI only with GRO (or XDP) on.
            ns.sh(&format!(
                "ethtool -K {dev} gro on >/dev/null && echo 1 > /sys/class/net/{dev}/threaded"
            ));
        }
        // Without XDP on in0, veth hands a frame to in0's NAPI thread
        // only if the sender cannot do TSO; otherwise to netif_rx, and
        // the kernel-forwarding baseline would run on the generator's CPU.
        gen.sh("ethtool -K gen0 tso off >/dev/null");

        let gen_ifindex: u32 = gen.sh("cat /sys/class/net/gen0/ifindex").trim().parse()?;
        let in_mac = gw.mac("in0");
        let sink_ebpf = br_tests::attach_bench_program(&sink, "sink0", "bench_sink");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
        std::fs::create_dir_all(&dir)?;
        Ok(Testbed {
            gen,
            gw,
            sink,
            dir,
            gen_ifindex,
            in_mac,
            sink_ebpf,
            redirect_ebpf: None,
            bare: None,
            daemon: None,
            pktgen: false,
            equal_load_pps: None,
        })
    }

    /// Pins the veth NAPI threads: the gateway's on the BR's CPU, the
    /// sink's and the generator's on the generator's. Needed after every
    /// change of queues or XDP programs too: veth then recreates its NAPI
    /// threads, unpinned, and the scheduler may put the gateway's receive
    /// work next to the generator (that made earlier runs vary by ±30%).
    /// With two queues, in0's and out0's second NAPI threads go to the
    /// next CPU (queue i's thread is the i-th by NAPI ID: veth adds them
    /// in queue order).
    fn pin_napi(&self) {
        // BR_BENCH_SINK_CPU moves the sink's receive work (an experiment:
        // where does the latency of XDP redirects come from?).
        let sink_cpu = std::env::var("BR_BENCH_SINK_CPU")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(GEN_CPU);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // (device, NAPI ID, thread) of every thread named napi/DEV-ID.
        let mut napi: Vec<(String, u32, u32)> = threads()
            .into_iter()
            .filter_map(|(_, tid, comm, _)| {
                let (dev, id) = comm.strip_prefix("napi/")?.rsplit_once('-')?;
                Some((dev.to_string(), id.parse().ok()?, tid))
            })
            .collect();
        napi.sort();
        let mut queue = 0;
        for (i, (dev, _, tid)) in napi.iter().enumerate() {
            queue = if i > 0 && napi[i - 1].0 == *dev {
                queue + 1
            } else {
                0
            };
            let cpu = match dev.as_str() {
                "in0" | "out0" => (BR_CPU + queue) % cpus,
                "sink0" => sink_cpu,
                "gen0" => GEN_CPU,
                _ => continue,
            };
            pin_thread(*tid, cpu);
        }
    }

    fn sink_count(&self) -> u64 {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.sink_ebpf.map("sink_count").expect("sink_count"))
                .expect("per-CPU array");
        map.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    fn stop_daemon(&mut self) {
        if let Some((mut d, _, _)) = self.daemon.take() {
            d.signal(libc::SIGTERM);
            d.wait_for_exit(Duration::from_secs(10));
        }
    }

    /// Queues of every veth: XDP on a veth needs at least as many receive
    /// queues as its peer has transmit queues.
    fn set_queues(&self, queues: u16) {
        let devs = [
            (&self.gen, "gen0"),
            (&self.gw, "in0"),
            (&self.gw, "out0"),
            (&self.sink, "sink0"),
        ];
        let current: u16 = self
            .gw
            .sh("ls -d /sys/class/net/in0/queues/rx-* | wc -l")
            .trim()
            .parse()
            .unwrap_or(1);
        // Receivers grow first and transmitters shrink first, so every
        // step keeps rx >= the peer's tx.
        let order: [&str; 2] = if queues >= current {
            ["rx", "tx"]
        } else {
            ["tx", "rx"]
        };
        for kind in order {
            for (ns, dev) in devs {
                ns.sh(&format!(
                    "ethtool -L {dev} {kind} {queues} 2>/dev/null || true"
                ));
            }
        }
    }

    /// Puts the gateway in the mode the scenario needs.
    fn prepare(&mut self, forwarder: Forwarder, queues: u16) -> Result<()> {
        if forwarder != Forwarder::AfxdpBare {
            self.bare = None;
        }
        if forwarder != Forwarder::XdpRedirect {
            self.redirect_ebpf = None;
        }
        match forwarder {
            Forwarder::Br | Forwarder::BrAfxdp | Forwarder::BrSlow => {
                if self
                    .daemon
                    .as_ref()
                    .is_some_and(|(_, q, f)| *q == queues && *f == forwarder)
                {
                    return Ok(());
                }
                self.stop_daemon();
                self.set_queues(queues);
                self.start_daemon(forwarder, queues)?;
            }
            Forwarder::Kernel => {
                self.stop_daemon();
                self.set_queues(queues);
            }
            Forwarder::XdpRedirect => {
                self.stop_daemon();
                self.set_queues(queues);
                if self.redirect_ebpf.is_none() {
                    let out_ifindex: u32 = self
                        .gw
                        .sh("cat /sys/class/net/out0/ifindex")
                        .trim()
                        .parse()?;
                    self.redirect_ebpf = Some(self.gw.enter(move || -> Result<Ebpf> {
                        let mut e = load_bench_redirect(out_ifindex)?;
                        bench_redirect(&mut e)?.attach("in0", XdpMode::Driver)?;
                        Ok(e)
                    })?);
                }
            }
            Forwarder::AfxdpBare => {
                self.stop_daemon();
                self.set_queues(queues);
                if self.bare.is_none() {
                    let macs = (self.sink.mac("sink0"), self.gw.mac("out0"));
                    self.bare = Some(bare::Bare::start(&self.gw, BR_CPU, macs)?);
                }
            }
        }
        self.pin_napi();
        Ok(())
    }

    /// Starts br-daemon as `forwarder` says: the fast path on (`br`), off
    /// (`br-afxdp`), or XDP on the idle veth only (`br-slow`).
    fn start_daemon(&mut self, forwarder: Forwarder, queues: u16) -> Result<()> {
        let fast = forwarder == Forwarder::Br;
        let (mode, interfaces) = match forwarder {
            Forwarder::Br => ("fast", "\"in0\", \"out0\""),
            Forwarder::BrAfxdp => ("afxdp", "\"in0\", \"out0\""),
            _ => ("slow", "\"idle0\""),
        };
        let config = self.dir.join(format!("bench-{queues}q-{mode}.toml"));
        std::fs::write(
            &config,
            format!(
                "[relay]\ninterfaces = [{interfaces}]\nqueues = {queues}\nxdp-fast-path = {fast}\nicmp-errors-per-second = 0\nicmp-burst = 0\n\n\
                 [[domain]]\nname = \"vpc\"\nprefix = \"2001:db8:0:f096::/64\"\nbr-ipv4 = \"{BR_V4}\"\nmtu = 1480\n"
            ),
        )?;
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/br-daemon");
        let mut cmd = self.gw.command(bin.to_str().expect("utf-8"));
        cmd.args(["run", "--config", config.to_str().expect("utf-8")]);
        let d = spawn(cmd, self.dir.join(format!("daemon-{queues}q-{mode}.log")));
        let up = br_tests::eventually(Duration::from_secs(20), || d.output().contains("relaying"));
        if !up {
            bail!("br-daemon did not start:\n{}", d.output());
        }
        // The fast path starts once the daemon has checked that out0 can
        // transmit redirected frames.
        let ready = br_tests::eventually(Duration::from_secs(5), || {
            !fast
                || d.output()
                    .contains("XDP fast path may transmit on ifindex [")
        });
        if !ready {
            bail!("br-daemon did not enable its fast path:\n{}", d.output());
        }
        self.daemon = Some((d, queues, forwarder));
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// br-daemon's VmRSS in KiB (0: not running).
    fn daemon_rss_kib(&self) -> u64 {
        let Some((d, _, _)) = self.daemon.as_ref() else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// One trial. With two queues, one generator per CPU and transmit queue.
    fn trial(&self, sc: &Scenario, rate: Option<f64>, seconds: f64) -> Result<Trial> {
        self.trial_stamped(sc, rate, seconds, false)
    }

    /// The sink's latency histogram (1 us buckets, summed over CPUs).
    fn latency_histogram(&self) -> Vec<u64> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.sink_ebpf.map("latency").expect("latency"))
                .expect("per-CPU array");
        (0..map.len())
            .map(|i| map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }

    /// One-way latency percentiles at LATENCY_RATE, one queue's generator.
    fn latency(&self, sc: &Scenario, seconds: f64) -> Result<[u32; 3]> {
        let before = self.latency_histogram();
        self.trial_stamped(sc, Some(LATENCY_RATE), seconds, true)?;
        let after = self.latency_histogram();
        let diff: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        Ok(percentiles(&diff, [0.5, 0.99, 0.999]))
    }

    fn trial_stamped(
        &self,
        sc: &Scenario,
        rate: Option<f64>,
        seconds: f64,
        stamp: bool,
    ) -> Result<Trial> {
        let daemon = self.daemon.as_ref().map(|(d, _, _)| d.child.id());
        let verbose = std::env::var_os("BR_BENCH_VERBOSE").is_some() && rate.is_none();
        let threads_before = forwarding_threads_cpu_ns(daemon);
        let cpu_before = gateway_and_sink_cpu_ns(daemon);
        let xdp_before = gateway_xdp_runs();
        let before = self.sink_count();
        let d = Duration::from_secs_f64(seconds);
        let cpus: Vec<usize> = if sc.queues == 1 {
            vec![GEN_CPU]
        } else {
            vec![0, 1]
        };
        let share = rate.map(|r| r / cpus.len() as f64);
        let live = std::env::var_os("BR_BENCH_LIVE").is_some();
        let sent = match self.pktgen_streams(sc, share, d).filter(|_| !stamp) {
            Some(streams) => self
                .gen
                .enter(move || br_tests::pktgen::run(&streams, d))?
                .iter()
                .sum(),
            None => self.generate_from(cpus, sc, share, d, stamp, live)?,
        };
        // Let what is in flight arrive: the deepest queue on the way (an
        // AF_XDP ring of 2048 frames) drains in about 12 ms at 170 kpps.
        std::thread::sleep(Duration::from_millis(100));
        let got = self.sink_count() - before;
        let cpu_after = gateway_and_sink_cpu_ns(daemon);
        if verbose {
            print_thread_cpu(&threads_before, &forwarding_threads_cpu_ns(daemon), got);
        }
        Ok(Trial {
            offered_pps: sent as f64 / seconds,
            forwarded_pps: got as f64 / seconds,
            gateway_cpu_ns: cpu_after.0.saturating_sub(cpu_before.0),
            sink_cpu_ns: cpu_after.1.saturating_sub(cpu_before.1),
            xdp_runs: {
                let after = gateway_xdp_runs();
                (
                    after.0.saturating_sub(xdp_before.0),
                    after.1.saturating_sub(xdp_before.1),
                )
            },
            seconds,
        })
    }

    /// Sends a trial's frames with the AF_XDP generator, one thread per
    /// CPU in `cpus`; returns the frames sent.
    fn generate_from(
        &self,
        cpus: Vec<usize>,
        sc: &Scenario,
        share: Option<f64>,
        d: Duration,
        stamp: bool,
        live: bool,
    ) -> Result<u64> {
        let threads: Vec<_> = cpus
            .into_iter()
            .map(|cpu| {
                let (ifindex, mac, scn) = (self.gen_ifindex, self.in_mac, sc.clone());
                // The peer's receive queue follows the sender's transmit queue.
                let queue = if sc.queues == 1 { 0 } else { cpu as u32 };
                self.gen.spawn_in(move || -> Result<u64> {
                    pin(cpu);
                    if live && share.is_none() && !stamp {
                        generate_live(ifindex, mac, &scn, d)
                    } else {
                        generate(ifindex, queue, mac, &scn, share, d, stamp)
                    }
                })
            })
            .collect();
        let mut sent = 0;
        for t in threads {
            sent += t
                .join()
                .map_err(|_| anyhow::anyhow!("generator panicked"))??;
        }
        Ok(sent)
    }

    /// Binary search for the highest rate with no loss (RFC 2544 §26.1,
    /// RFC 8219 §7.3) below `offered`, in `steps` trials of `seconds`.
    /// Zero loss: every frame the generator sent reached the sink, give
    /// or take 0.01% (single drops when the VM loses its CPU). Returns
    /// the rate achieved (not the rate asked for) and the gateway's CPU
    /// per packet in that trial (0, 0 when no rate passed).
    fn zero_loss(
        &self,
        sc: &Scenario,
        offered: f64,
        steps: u32,
        seconds: f64,
    ) -> Result<(f64, f64)> {
        let (mut lo, mut hi, mut best) = (0.0f64, offered, (0.0f64, 0.0f64));
        for _ in 0..steps {
            let mid = (lo + hi) / 2.0;
            let t = self.trial(sc, Some(mid), seconds)?;
            let (o, f) = (t.offered_pps, t.forwarded_pps);
            if std::env::var_os("BR_BENCH_VERBOSE").is_some() {
                eprint!("[at {mid:.0}: {o:.0} -> {f:.0}] ");
            }
            if o > 0.0 && f >= o * 0.9999 {
                lo = mid;
                if o > best.0 {
                    best = (o, t.gateway_cpu_ns as f64 / (f * t.seconds).max(1.0));
                }
            } else {
                hi = mid;
            }
        }
        Ok(best)
    }

    /// The pktgen streams of a trial (one per generator CPU), or None
    /// when pktgen is not in use or cannot send this stream: protocol 41
    /// (pktgen builds UDP only and refuses a sit device) and IMIX
    /// (pktgen draws sizes uniformly) stay with the AF_XDP generator.
    fn pktgen_streams(
        &self,
        sc: &Scenario,
        share: Option<f64>,
        d: Duration,
    ) -> Option<Vec<br_tests::pktgen::Stream>> {
        if !self.pktgen
            || !matches!(sc.stream, Stream::Encap | Stream::Plain)
            || sc.size == Size::Imix
        {
            return None;
        }
        let dst = match sc.stream {
            Stream::Plain => (LAN_SERVER.parse().expect("address"), None),
            _ if sc.flows == 1 => (ce_ipv6(ce_ipv4(0)), None),
            _ => (ce_ipv6(ce_ipv4(0)), Some(ce_ipv6(ce_ipv4(sc.flows - 1)))),
        };
        let cpus: Vec<usize> = if sc.queues == 1 {
            vec![GEN_CPU]
        } else {
            vec![0, 1]
        };
        Some(
            cpus.into_iter()
                .map(|cpu| br_tests::pktgen::Stream {
                    dev: "gen0".into(),
                    thread: cpu,
                    dst_mac: self.in_mac,
                    src: LAN_HOST.parse().expect("address"),
                    dst,
                    frame_len: frame_len(sc.stream, sc.size, 0),
                    count: share.map_or(0, |r| (r * d.as_secs_f64()) as u64),
                    rate: share.map(|r| r as u64),
                })
                .collect(),
        )
    }

    fn measure(&mut self, sc: &Scenario, quick: bool) -> Result<Outcome> {
        self.prepare(sc.forwarder, sc.queues)?;
        // --quick keeps a fresh clone's build plus run under 3 minutes.
        let (full, step) = if quick { (0.5, 0.3) } else { (2.0, 1.0) };
        // Warm up (neighbour and FIB state, caches).
        self.trial(sc, Some(10_000.0), 0.2)?;
        // Flat out three times, keep the median forwarded rate: single
        // trials on a 2-vCPU VM move by tens of percent.
        let mut flat = Vec::new();
        for _ in 0..3 {
            flat.push(self.trial(sc, None, full)?);
        }
        if std::env::var_os("BR_BENCH_VERBOSE").is_some() {
            let rates: Vec<_> = flat
                .iter()
                .map(|t| (t.offered_pps, t.forwarded_pps))
                .collect();
            eprint!("[flat-out trials {rates:.0?}] ");
        }
        flat.sort_by(|a, b| a.forwarded_pps.total_cmp(&b.forwarded_pps));
        let median = flat[1];
        let (offered, forwarded) = (median.offered_pps, median.forwarded_pps);
        // Counted from the sink, the trial's 100 ms drain included.
        let forwarded_frames = forwarded * median.seconds;
        let per_frame = |ns: u64| {
            if forwarded_frames > 0.0 {
                ns as f64 / forwarded_frames
            } else {
                0.0
            }
        };
        // The XDP program's run time, in a trial of its own: the kernel's
        // BPF statistics read the clock twice per run (a paravirtual
        // clock on this VM), which would slow the trials above.
        let xdp_ns_per_run = {
            let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enabling the kernel's BPF run-time statistics")?;
            let t = self.trial(sc, None, step)?;
            if t.xdp_runs.1 > 0 {
                t.xdp_runs.0 as f64 / t.xdp_runs.1 as f64
            } else {
                0.0
            }
        };
        let equal_load = self.equal_load_trial(sc, forwarded, full)?;
        let (zero_loss_pps, zero_loss_cpu) = if forwarded >= offered * 0.9999 {
            (offered, per_frame(median.gateway_cpu_ns))
        } else {
            self.zero_loss(sc, offered, if quick { 4 } else { 8 }, step)?
        };
        Ok(Outcome {
            offered_pps: offered,
            forwarded_pps: forwarded,
            loss_pct: if offered > 0.0 {
                (offered - forwarded).max(0.0) / offered * 100.0
            } else {
                0.0
            },
            zero_loss_pps,
            zero_loss_gateway_cpu_ns_per_packet: zero_loss_cpu,
            latency_us: self.latency(sc, step)?,
            gateway_cpu_ns_per_packet: per_frame(median.gateway_cpu_ns),
            sink_cpu_ns_per_packet: per_frame(median.sink_cpu_ns),
            xdp_ns_per_run,
            gateway_cpus_busy: median.gateway_cpu_ns as f64 / (median.seconds * 1e9),
            daemon_rss_kib: self.daemon_rss_kib(),
            equal_load,
        })
    }

    /// For afxdp-bare and br-afxdp rows: trials paced at the equal load
    /// (set by the first afxdp-bare row from its flat-out `forwarded`).
    fn equal_load_trial(
        &mut self,
        sc: &Scenario,
        forwarded: f64,
        seconds: f64,
    ) -> Result<Option<EqualLoad>> {
        if !matches!(sc.forwarder, Forwarder::AfxdpBare | Forwarder::BrAfxdp) || sc.queues != 1 {
            return Ok(None);
        }
        if sc.forwarder == Forwarder::AfxdpBare && self.equal_load_pps.is_none() {
            self.equal_load_pps = Some(forwarded * EQUAL_LOAD);
        }
        let Some(load) = self.equal_load_pps else {
            return Ok(None);
        };
        // The median of three, as flat out: single trials here flip
        // between keeping up and not.
        let mut trials = Vec::new();
        for _ in 0..3 {
            trials.push(self.trial(sc, Some(load), seconds)?);
        }
        trials.sort_by(|a, b| a.forwarded_pps.total_cmp(&b.forwarded_pps));
        let t = trials[1];
        let frames = t.forwarded_pps * t.seconds;
        Ok(Some(EqualLoad {
            offered_pps: t.offered_pps,
            forwarded_pps: t.forwarded_pps,
            gateway_cpu_ns_per_packet: if frames > 0.0 {
                t.gateway_cpu_ns as f64 / frames
            } else {
                0.0
            },
        }))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_daemon();
        self.redirect_ebpf = None;
        self.bare = None;
        let _ = &self.sink;
    }
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let mut v = Vec::new();
    let mut add = |forwarder, stream, size, flows, queues, suffix: &str| {
        let name = format!(
            "{} {} {} {} {}q{suffix}",
            match forwarder {
                Forwarder::Br => "br",
                Forwarder::BrAfxdp => "br-afxdp",
                Forwarder::BrSlow => "br-slow",
                Forwarder::Kernel => "kernel-forwarding",
                Forwarder::XdpRedirect => "xdp-redirect",
                Forwarder::AfxdpBare => "afxdp-bare",
            },
            match stream {
                Stream::Encap => "encap",
                Stream::Decap => "decap",
                Stream::Hairpin => "hairpin",
                Stream::Mix => "mix",
                Stream::Plain => "ipv6",
            },
            match size {
                Size::Min => "min",
                Size::Imix => "imix",
                Size::Large => "1500",
            },
            if flows == 1 {
                "1-ce".to_string()
            } else {
                format!("{flows}-ces")
            },
            queues
        );
        v.push(Scenario {
            name,
            forwarder,
            stream,
            size,
            flows,
            queues,
        });
    };
    let sizes: &[Size] = if quick {
        &[Size::Min]
    } else {
        &[Size::Min, Size::Imix, Size::Large]
    };
    for &size in sizes {
        add(Forwarder::Kernel, Stream::Plain, size, 1, 1, "");
        add(Forwarder::XdpRedirect, Stream::Plain, size, 1, 1, "");
        add(Forwarder::AfxdpBare, Stream::Plain, size, 1, 1, "");
        for stream in [Stream::Encap, Stream::Decap, Stream::Hairpin, Stream::Mix] {
            add(Forwarder::Br, stream, size, 1, 1, "");
            if !quick || matches!(stream, Stream::Encap | Stream::Decap) {
                add(Forwarder::BrAfxdp, stream, size, 1, 1, "");
                add(Forwarder::BrSlow, stream, size, 1, 1, "");
            }
            if !quick || matches!(stream, Stream::Encap | Stream::Decap) {
                add(Forwarder::Br, stream, size, 65536, 1, "");
            }
            // Two queues cannot scale on a 2-CPU testbed (docs/benchmarks.md):
            // the full run only.
            if !quick {
                add(Forwarder::Br, stream, size, 1, 2, "");
            }
        }
        // The baselines again after the BR: the ratios use the better of
        // the two measurements, so testbed drift cannot flatter the BR.
        add(Forwarder::Kernel, Stream::Plain, size, 1, 1, " (again)");
        for again in [Forwarder::XdpRedirect, Forwarder::AfxdpBare] {
            add(again, Stream::Plain, size, 1, 1, " (again)");
        }
    }
    v
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let started = Instant::now();
    let mut bed = Testbed::new()?;
    let pktgen = args
        .iter()
        .position(|a| a == "--generator")
        .and_then(|i| args.get(i + 1))
        .is_some_and(|g| g == "pktgen");
    if pktgen && !bed.gen.enter(br_tests::pktgen::available) {
        bail!(
            "--generator pktgen: this kernel has no /proc/net/pktgen (`modprobe pktgen`; \
             Debian's kernels have it as a module, this host's has none)"
        );
    }
    bed.pktgen = pktgen;
    let mut results: Vec<(Scenario, Outcome)> = Vec::new();
    for sc in scenarios(quick) {
        if only.as_ref().is_some_and(|o| !sc.name.contains(o.as_str())) {
            continue;
        }
        eprint!("bench: {:<40} ", sc.name);
        let o = bed.measure(&sc, quick)?;
        eprintln!(
            "offered {:>9.0} forwarded {:>9.0} pps, zero-loss {:>9.0} pps, latency p50/p99 {}/{} us, gateway {:.0} ns/packet on {:.2} CPUs (XDP {:.0} ns/run), sink {:.0} ns/packet",
            o.offered_pps, o.forwarded_pps, o.zero_loss_pps, o.latency_us[0], o.latency_us[1],
            o.gateway_cpu_ns_per_packet, o.gateway_cpus_busy, o.xdp_ns_per_run, o.sink_cpu_ns_per_packet
        );
        results.push((sc, o));
    }
    let program = if only
        .as_ref()
        .is_none_or(|o| "xdp-program".contains(o.as_str()))
    {
        let p = xdp_cost::measure(&bed.gw, bed.in_mac)?;
        eprintln!("bench: XDP program alone (BPF_PROG_TEST_RUN): {p:?} ns/run");
        p
    } else {
        Vec::new()
    };
    drop(bed);
    report(&results, &program, quick, pktgen, cpus, started.elapsed())
}

/// The afxdp-bare and br-afxdp rows at the equal load, if measured.
fn equal_load_table(md: &mut String, results: &[(Scenario, Outcome)]) {
    let rows: Vec<_> = results
        .iter()
        .filter(|(_, o)| o.equal_load.is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "\nAt equal load (paced at {:.0}% of the first afxdp-bare row's flat-out rate: flat out, the generator shares its CPU with the sink and offers more to a gateway that forwards less, so rows do not face the same load; targets: br-afxdp ≥ 0.9× bare in rate and CPU per packet):\n", EQUAL_LOAD * 100.0);
    let _ = writeln!(md, "| scenario | offered pps | forwarded pps | gateway CPU ns/packet | ÷ bare AF_XDP (rate / CPU) |\n| --- | ---: | ---: | ---: | ---: |");
    for (s, o) in rows {
        let e = o.equal_load.expect("filtered");
        let r = Ratios::of(results, s, o);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            s.name,
            e.offered_pps,
            e.forwarded_pps,
            e.gateway_cpu_ns_per_packet,
            r.bare_equal_load
                .map_or("–".to_string(), |(a, b)| format!("{a:.2} / {b:.2}")),
        );
    }
}

/// Bar colour of a forwarder in the chart.
fn color(f: Forwarder) -> u32 {
    match f {
        Forwarder::Kernel => 0x888888,
        Forwarder::XdpRedirect => 0x222222,
        Forwarder::Br => 0x1f77b4,
        Forwarder::BrAfxdp => 0xff7f0e,
        Forwarder::BrSlow => 0x2ca02c,
        Forwarder::AfxdpBare => 0x9467bd,
    }
}

/// A row's ratios to the baselines of its frame size: flat out and at
/// zero loss.
#[derive(Default)]
struct Ratios {
    kernel: (f64, f64),
    xdp: f64,
    /// br-afxdp rows only.
    bare: Option<(f64, f64)>,
    /// Kernel forwarding's CPU per packet over the row's (flat out, zero loss).
    kernel_cpu: (f64, f64),
    /// br-afxdp rows at the equal load: forwarded rate over the bare
    /// forwarder's (the better), and the bare forwarder's CPU per packet
    /// (the cheaper) over the row's.
    bare_equal_load: Option<(f64, f64)>,
}

impl Ratios {
    fn of(results: &[(Scenario, Outcome)], s: &Scenario, o: &Outcome) -> Ratios {
        let same = |f: Forwarder| {
            results
                .iter()
                .filter(move |(b, _)| b.forwarder == f && b.size == s.size)
                .map(|(_, o)| o)
        };
        // Each baseline is measured before and after the BR rows: the
        // better rate, the cheaper CPU.
        let best = |f: Forwarder, m: fn(&Outcome) -> f64| same(f).map(m).fold(0.0, f64::max);
        let cheapest = |m: fn(&Outcome) -> f64| {
            same(Forwarder::Kernel)
                .map(m)
                .filter(|c| *c > 0.0)
                .fold(f64::INFINITY, f64::min)
        };
        let ratio = |a: f64, b: f64| if b > 0.0 && b.is_finite() { a / b } else { 0.0 };
        let flat = |o: &Outcome| o.forwarded_pps;
        let zero = |o: &Outcome| o.zero_loss_pps;
        let flat_cpu = |o: &Outcome| o.gateway_cpu_ns_per_packet;
        let zero_cpu = |o: &Outcome| o.zero_loss_gateway_cpu_ns_per_packet;
        let inverse = |base: f64, row: f64| {
            if row > 0.0 && base.is_finite() {
                base / row
            } else {
                0.0
            }
        };
        Ratios {
            kernel: (
                ratio(o.forwarded_pps, best(Forwarder::Kernel, flat)),
                ratio(o.zero_loss_pps, best(Forwarder::Kernel, zero)),
            ),
            xdp: ratio(o.forwarded_pps, best(Forwarder::XdpRedirect, flat)),
            bare: (s.forwarder == Forwarder::BrAfxdp).then(|| {
                (
                    ratio(o.forwarded_pps, best(Forwarder::AfxdpBare, flat)),
                    ratio(o.zero_loss_pps, best(Forwarder::AfxdpBare, zero)),
                )
            }),
            kernel_cpu: (
                inverse(cheapest(flat_cpu), o.gateway_cpu_ns_per_packet),
                inverse(cheapest(zero_cpu), o.zero_loss_gateway_cpu_ns_per_packet),
            ),
            bare_equal_load: o
                .equal_load
                .filter(|_| s.forwarder == Forwarder::BrAfxdp)
                .map(|e| {
                    let bare = same(Forwarder::AfxdpBare).filter_map(|b| b.equal_load);
                    let rate = bare.clone().map(|b| b.forwarded_pps).fold(0.0, f64::max);
                    let cpu = bare
                        .map(|b| b.gateway_cpu_ns_per_packet)
                        .filter(|c| *c > 0.0)
                        .fold(f64::INFINITY, f64::min);
                    (
                        ratio(e.forwarded_pps, rate),
                        inverse(cpu, e.gateway_cpu_ns_per_packet),
                    )
                }),
        }
    }
}

fn report(
    results: &[(Scenario, Outcome)],
    program: &[(String, f64)],
    quick: bool,
    pktgen: bool,
    cpus: usize,
    took: Duration,
) -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let mut md = String::new();
    if pktgen {
        let _ = writeln!(md, "Generator (--generator pktgen): the kernel's pktgen on gen0 (thread of CPU {GEN_CPU}) for the IPv6 streams at minimum and 1500-byte frames (pktgen's IPv6 frames are at least 78 bytes; 65,536 CEs as random destinations in the range); the AF_XDP transmitter for protocol 41 (pktgen builds UDP only and refuses a sit device), IMIX and the latency trials.");
    } else {
        let _ = writeln!(md, "Generator: AF_XDP transmitter (copy mode; this kernel has no pktgen) on gen0, pinned to CPU {GEN_CPU}, sleeping between batches when paced; with 2 queues one generator per CPU and queue.");
    }
    let _ = writeln!(md, "Gateway: br-daemon workers pinned to CPU {BR_CPU} (queue 0) and CPU 1 (queue 1); veth receive in threaded NAPI: in0's and out0's queue 0 on CPU {BR_CPU} (queue 1 on the next CPU), sink0 and gen0 on CPU {GEN_CPU}. {cpus} CPUs in all.");
    let _ = writeln!(
        md,
        "Sink: XDP program counting and dropping on sink0. Mode: {}. Took {:.0} s.\n",
        if quick { "--quick" } else { "full" },
        took.as_secs_f64()
    );
    let _ = writeln!(md, "Rates: flat out (the median of three trials) and zero loss (RFC 2544 throughput: the highest paced rate with at most 0.01% loss, by binary search). Ratios \"a / b\" are flat out / zero loss, to the better of the two measurements of each baseline (before and after the BR rows), same frame size; \"÷ bare AF_XDP\" (br-afxdp rows) is to the bare AF_XDP forwarder (afxdp-bare: the daemon's ring code and loop, no relay, MACs rewritten). br-slow: br-daemon with XDP on an idle interface only, so the kernel carries every packet to and from it (TUN, raw sockets), as behind IPsec.");
    let _ = writeln!(md, "Context: the Cisco 1921 this replaces forwards {CISCO_1921_PPS} pps (its vendor's RFC 2544 figure, 64-byte frames, no services); a row's zero-loss rate divided by it is in the JSON (ratio_cisco_1921). On this testbed the rates are bounded by two vCPUs shared four ways; CPU per packet is what sizes a real gateway.");
    let _ = writeln!(md, "Latency: one way, generator to sink (CLOCK_MONOTONIC stamped at send, read by the sink's XDP program), at {LATENCY_RATE:.0} pps sent one by one; 1 us buckets.\n");
    let _ = writeln!(md, "Gateway CPU: time on CPU of in0's and out0's receive threads and br-daemon's threads (or the bare forwarder's), per forwarded packet, flat out / in the zero-loss trial (flat out, the receive threads also spend CPU on frames that are then dropped: the zero-loss figure is the cost); CPUs busy flat out; \"XDP ns/run\" is the run time of the gateway's XDP program per run (kernel BPF statistics, in a flat-out trial of its own; the program and the helpers it calls, such as the FIB lookup, not the redirect's transmit); \"kernel CPU ÷\" is kernel forwarding's CPU per packet (the cheaper of its two measurements) divided by the row's, flat out / zero loss: how many times less CPU a packet costs than kernel forwarding.\n");
    let _ = writeln!(md, "| scenario | offered pps | forwarded pps | loss % | zero-loss pps | ÷ kernel forwarding | ÷ XDP ceiling | ÷ bare AF_XDP | latency p50 / p99 / p99.9 us | gateway CPU ns/packet | gateway CPUs busy | XDP ns/run | kernel CPU ÷ | daemon RSS MiB |");
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let pair = |(a, b): (f64, f64)| format!("{a:.2} / {b:.2}");
    let dash_or = |v: f64, text: String| if v > 0.0 { text } else { "–".to_string() };
    let mut json = String::from("[\n");
    for (i, (s, o)) in results.iter().enumerate() {
        let r = Ratios::of(results, s, o);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {:.2} | {} | {} / {} / {} | {:.0} / {:.0} | {:.2} | {} | {} | {} |",
            s.name,
            o.offered_pps,
            o.forwarded_pps,
            o.loss_pct,
            o.zero_loss_pps,
            pair(r.kernel),
            r.xdp,
            r.bare.map_or("–".to_string(), pair),
            o.latency_us[0],
            o.latency_us[1],
            o.latency_us[2],
            o.gateway_cpu_ns_per_packet,
            o.zero_loss_gateway_cpu_ns_per_packet,
            o.gateway_cpus_busy,
            dash_or(o.xdp_ns_per_run, format!("{:.0}", o.xdp_ns_per_run)),
            pair(r.kernel_cpu),
            dash_or(o.daemon_rss_kib as f64, format!("{:.1}", o.daemon_rss_kib as f64 / 1024.0)),
        );
        let _ = writeln!(
            json,
            "  {{\"scenario\": \"{}\", \"forwarder\": \"{:?}\", \"stream\": \"{:?}\", \"size\": \"{:?}\", \"ces\": {}, \"queues\": {}, \
             \"offered_pps\": {:.0}, \"forwarded_pps\": {:.0}, \"loss_pct\": {:.3}, \"zero_loss_pps\": {:.0}, \
             \"ratio_kernel_forwarding\": {:.3}, \"zero_loss_ratio_kernel_forwarding\": {:.3}, \"ratio_xdp_ceiling\": {:.3}, \
             \"ratio_afxdp_ceiling\": {}, \"zero_loss_ratio_afxdp_ceiling\": {}, \"ratio_cisco_1921\": {:.3}, \
             \"latency_us_p50\": {}, \"latency_us_p99\": {}, \"latency_us_p999\": {}, \
             \"gateway_cpu_ns_per_packet\": {:.1}, \"zero_loss_gateway_cpu_ns_per_packet\": {:.1}, \"gateway_cpus_busy\": {:.3}, \
             \"sink_cpu_ns_per_packet\": {:.1}, \"cpu_ratio_kernel_forwarding\": {:.3}, \"zero_loss_cpu_ratio_kernel_forwarding\": {:.3}, \
             \"xdp_ns_per_run\": {:.1}, \"daemon_rss_kib\": {}, \"equal_load_offered_pps\": {}, \"equal_load_forwarded_pps\": {}, \
             \"equal_load_ratio_afxdp_ceiling\": {}, \"equal_load_cpu_ratio_afxdp_ceiling\": {}}}{}",
            s.name, s.forwarder, s.stream, s.size, s.flows, s.queues, o.offered_pps, o.forwarded_pps, o.loss_pct,
            o.zero_loss_pps, r.kernel.0, r.kernel.1, r.xdp,
            r.bare.map_or("null".to_string(), |b| format!("{:.3}", b.0)),
            r.bare.map_or("null".to_string(), |b| format!("{:.3}", b.1)),
            o.zero_loss_pps / CISCO_1921_PPS as f64,
            o.latency_us[0], o.latency_us[1], o.latency_us[2],
            o.gateway_cpu_ns_per_packet, o.zero_loss_gateway_cpu_ns_per_packet, o.gateway_cpus_busy,
            o.sink_cpu_ns_per_packet, r.kernel_cpu.0, r.kernel_cpu.1, o.xdp_ns_per_run, o.daemon_rss_kib,
            o.equal_load.map_or("null".to_string(), |e| format!("{:.0}", e.offered_pps)),
            o.equal_load.map_or("null".to_string(), |e| format!("{:.0}", e.forwarded_pps)),
            r.bare_equal_load.map_or("null".to_string(), |b| format!("{:.3}", b.0)),
            r.bare_equal_load.map_or("null".to_string(), |b| format!("{:.3}", b.1)),
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    json.push_str("]\n");
    equal_load_table(&mut md, results);
    if !program.is_empty() {
        let _ = writeln!(md, "\nThe XDP program alone (fast path on, minimum frames on in0, median of {} runs of BPF_PROG_TEST_RUN in the gateway's namespace; targets: encap ≤ 150, decap and hairpin ≤ 200 ns):\n", xdp_cost::RUNS);
        let _ = writeln!(md, "| stream | ns/run (median) |\n| --- | ---: |");
        for (name, ns) in program {
            let _ = writeln!(md, "| {name} | {ns:.0} |");
        }
        let fields: Vec<String> = program
            .iter()
            .map(|(n, ns)| format!("\"{n}\": {ns:.1}"))
            .collect();
        std::fs::write(
            dir.join("xdp-program.json"),
            format!("{{{}}}\n", fields.join(", ")),
        )?;
    }
    std::fs::write(dir.join("results.md"), &md)?;
    std::fs::write(dir.join("results.json"), &json)?;
    println!("{md}");

    if results.is_empty() {
        return Ok(());
    }
    // The chart: forwarded rate by scenario, baselines included.
    let data: String = results
        .iter()
        .map(|(s, o)| {
            format!(
                "\"{}\" {:.0} {}\n",
                s.name,
                o.forwarded_pps,
                color(s.forwarder)
            )
        })
        .collect();
    std::fs::write(dir.join("chart.dat"), data)?;
    let script = format!(
        "set terminal png size 1400,700\nset output '{}'\nset style fill solid\nset boxwidth 0.7\n\
         set xtics rotate by -45\nset ylabel 'forwarded packets/s'\nset title 'br-daemon vs kernel forwarding and XDP redirect (same run)'\n\
         set key outside top center horizontal\nset bmargin 14\nset yrange [0:*]\nset xrange [-0.6:{:.1}]\n\
         plot '{}' using 0:2:3:xtic(1) with boxes lc rgb variable notitle, \\\n\
         NaN with boxes lc rgb '#{:06x}' title 'kernel IPv6 forwarding', \\\n\
         NaN with boxes lc rgb '#{:06x}' title 'XDP redirect (ceiling)', \\\n\
         NaN with boxes lc rgb '#{:06x}' title 'br (XDP fast path)', \\\n\
         NaN with boxes lc rgb '#{:06x}' title 'br-afxdp (fast path off)', \\\n\
         NaN with boxes lc rgb '#{:06x}' title 'br-slow (kernel path)', \\\n\
         NaN with boxes lc rgb '#{:06x}' title 'bare AF_XDP forwarder'\n",
        dir.join("chart.png").display(),
        results.len() as f64 - 0.4,
        dir.join("chart.dat").display(),
        color(Forwarder::Kernel),
        color(Forwarder::XdpRedirect),
        color(Forwarder::Br),
        color(Forwarder::BrAfxdp),
        color(Forwarder::BrSlow),
        color(Forwarder::AfxdpBare),
    );
    std::fs::write(dir.join("chart.gp"), script)?;
    let status = std::process::Command::new("gnuplot")
        .arg(dir.join("chart.gp"))
        .status()?;
    if !status.success() {
        bail!("gnuplot failed: {status}");
    }
    println!("Wrote target/bench/results.md, results.json and chart.png.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_histogram() {
        // 90 frames at 3 us, 9 at 10 us, 1 at 700 us.
        let mut h = vec![0u64; 2048];
        h[3] = 90;
        h[10] = 9;
        h[700] = 1;
        assert_eq!(percentiles(&h, [0.5, 0.99, 0.999]), [3, 10, 700]);
        assert_eq!(percentiles(&h, [0.9, 0.91, 1.0]), [3, 10, 700]);
    }

    #[test]
    fn stamped_frames_carry_the_mark_where_the_sink_reads_it() {
        let sc = Scenario {
            name: String::new(),
            forwarder: Forwarder::Br,
            stream: Stream::Decap,
            size: Size::Min,
            flows: 1,
            queues: 1,
        };
        let mut buf = vec![0u8; 2048];
        let len = write_frame(&mut buf, [2; 6], sc.stream, sc.size, 0, 0);
        stamp_frame(&mut buf[..len]);
        let ip6 = &buf[34..];
        let label = (u32::from(ip6[1] & 0x0f) << 16) | (u32::from(ip6[2]) << 8) | u32::from(ip6[3]);
        assert_eq!(label, LATENCY_MARK);
        assert_eq!(ip6[0] >> 4, 6, "still IPv6");
        assert_ne!(u64::from_ne_bytes(ip6[40..48].try_into().unwrap()), 0);
    }
}

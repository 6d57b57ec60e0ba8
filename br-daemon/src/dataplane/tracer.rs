//! The running side of `br-daemon trace`: one trace at a time, served on
//! the metrics listener (`GET /trace?ce=...&count=N`) as a stream of lines.
//!
//! Three stages report: the XDP program writes its events into a ring
//! buffer only while `trace_on` is set (otherwise one inlined array lookup
//! per frame); the AF_XDP workers and the slow path check one relaxed
//! atomic per batch and, only while a trace runs, summarise the packets
//! the filter matches before relaying them and hand the events over a
//! bounded channel that never blocks them (`try_send`: an event the
//! tracer cannot take is counted as missed, the packet is not delayed).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use crossbeam::channel::{bounded, Receiver, Sender};

use super::publish::Published;
use super::slowpath::Handoff;
use super::worker::{Disposition, Routed};
use super::xdp::Steering;
use crate::relay::{Domains, Path, Relay};
use crate::trace::{ip_of_frame, summary, TraceEvent, TraceFilter, TraceRequest};

/// Events waiting for the tracer; more are missed, not waited for.
const QUEUE: usize = 4096;
/// How long the tracer sleeps in poll(2) between looks at the queue.
const POLL_MS: i32 = 20;

/// What the workers and the session share.
pub struct Tracer {
    active: AtomicBool,
    filter: Mutex<TraceFilter>,
    events: (Sender<TraceEvent>, Receiver<TraceEvent>),
    missed: AtomicU64,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer {
            active: AtomicBool::new(false),
            filter: Mutex::new(TraceFilter::All),
            events: bounded(QUEUE),
            missed: AtomicU64::new(0),
        }
    }
}

impl Tracer {
    /// The filter while a trace runs: checked once per batch.
    #[inline]
    pub fn filter_if_active(&self) -> Option<TraceFilter> {
        if !self.active.load(Ordering::Relaxed) {
            return None;
        }
        Some(*self.filter.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands over an event without ever waiting.
    pub fn offer(&self, event: TraceEvent) {
        if self.events.0.try_send(event).is_err() {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts a trace; false if one is running.
    fn begin(&self, filter: TraceFilter) -> bool {
        let mut f = self.filter.lock().unwrap_or_else(|e| e.into_inner());
        if self.active.load(Ordering::Acquire) {
            return false;
        }
        *f = filter;
        while self.events.1.try_recv().is_ok() {}
        self.missed.store(0, Ordering::Relaxed);
        self.active.store(true, Ordering::Release);
        true
    }

    fn end(&self) {
        self.active.store(false, Ordering::Release);
    }
}

/// CLOCK_MONOTONIC in ns, the clock of the XDP program's events.
pub fn monotonic_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a live timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The name of interface `ifindex` (its number if it has none).
pub fn interface_name(ifindex: u32) -> String {
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: name has IFNAMSIZ bytes, as if_indextoname requires.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The summary of a frame the filter matches (taken before the relay
/// rewrites it), or None.
#[inline]
pub fn matched(filter: Option<TraceFilter>, frame: &[u8], domains: &Domains) -> Option<String> {
    let filter = filter?;
    let ip = ip_of_frame(frame);
    filter.matches(ip, domains).then(|| summary(ip))
}

/// The event of a packet the forwarder or the slow path relayed:
/// `packet` as it arrived, `routed` what became of it; `ports` are the
/// worker's interfaces and `chunk` holds the rewritten frame.
pub fn relay_event(
    stage: &'static str,
    interface: String,
    packet: String,
    routed: &Routed,
    ports: &[u32],
    chunk: &[u8],
) -> TraceEvent {
    let path = |p: &Option<Path>| p.map_or("forwarded", |p| p.name());
    let (kind, name, to) = match routed {
        (Disposition::Drop(reason), _) => ("reason", reason.name(), String::new()),
        (Disposition::Transmit { port, head, .. }, p) => {
            let mac = mac_text(chunk.get(*head..head + 6).unwrap_or(&[]));
            let out = ports
                .get(*port)
                .map_or(String::new(), |i| interface_name(*i));
            ("path", path(p), format!("{out} next hop {mac}"))
        }
        (Disposition::KernelIpv4 { dst, via, .. }, p) => (
            "path",
            path(p),
            format!("kernel ({}) to {dst}", handoff(*via)),
        ),
        (Disposition::KernelIpv6 { dst, via, .. }, p) => (
            "path",
            path(p),
            format!("kernel ({}) to {dst}", handoff(*via)),
        ),
        (Disposition::Host { .. }, p) => ("path", path(p), "the host (TUN)".to_string()),
    };
    TraceEvent {
        ns: monotonic_ns(),
        time: 0.0,
        stage,
        interface,
        packet,
        kind,
        name,
        to,
    }
}

fn mac_text(mac: &[u8]) -> String {
    let bytes: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    bytes.join(":")
}

fn handoff(via: Handoff) -> &'static str {
    match via {
        Handoff::Ipsec => "IPsec policy: encrypted there",
        Handoff::Neighbour => "neighbour not resolved",
        Handoff::Route => "its route",
    }
}

/// What a trace session reads from.
pub struct TraceSources {
    pub tracer: Arc<Tracer>,
    pub steering: Arc<Mutex<Steering>>,
    pub relay: Arc<Published<Relay>>,
    pub stop: Arc<AtomicBool>,
}

/// Serves one `GET /trace?query` until `count` events were shown, the
/// client went away, or the daemon stops.
pub fn serve(request: tiny_http::Request, query: &str, src: &TraceSources) {
    let refuse = |request: tiny_http::Request, status: u16, body: &str| {
        let _ = request.respond(
            tiny_http::Response::from_string(format!("{body}\n")).with_status_code(status),
        );
    };
    let parsed = match TraceRequest::parse(query) {
        Ok(r) => r,
        Err(e) => return refuse(request, 400, &e),
    };
    let Some(mut ring) = src
        .steering
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_trace_ring()
    else {
        return refuse(request, 409, "another trace is running");
    };
    if !src.tracer.begin(parsed.filter) {
        src.steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back_trace_ring(ring);
        return refuse(request, 409, "another trace is running");
    }
    let switched = src
        .steering
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_trace(true);
    let shown = match switched {
        Ok(()) => {
            // The socket itself: the stream ends when the trace does.
            let mut out = request.into_writer();
            stream(&mut *out, &parsed, &mut ring, src)
        }
        Err(e) => {
            refuse(request, 500, &format!("{e:#}"));
            0
        }
    };
    let mut steering = src.steering.lock().unwrap_or_else(|e| e.into_inner());
    let _ = steering.set_trace(false);
    steering.give_back_trace_ring(ring);
    drop(steering);
    src.tracer.end();
    tracing::info!("trace ({}) ended after {shown} events", parsed.to_query());
}

/// Idle this long, the stream carries a keep-alive line (`#.`, which the
/// CLI does not print): a client that went away is noticed when it fails.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Writes events as they come; returns how many were shown.
fn stream(
    out: &mut dyn Write,
    request: &TraceRequest,
    ring: &mut RingBuf<MapData>,
    src: &TraceSources,
) -> u64 {
    let start = monotonic_ns();
    let header = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n# tracing {} (up to {} packets; Ctrl-C stops)\n",
        match request.filter.to_query() {
            q if q.is_empty() => "every packet".to_string(),
            q => q,
        },
        request.count
    );
    if out
        .write_all(header.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return 0;
    }
    let (mut shown, mut quiet_since) = (0, Instant::now());
    while shown < request.count && !src.stop.load(Ordering::Relaxed) {
        wait_for_ring(ring);
        let relay = src.relay.get();
        let mut batch = xdp_events(ring, request.filter, relay.domains());
        batch.extend(src.tracer.events.1.try_iter());
        batch.sort_by_key(|e| e.ns);
        let mut text = String::new();
        for mut e in batch.into_iter().take((request.count - shown) as usize) {
            e.time = e.ns.saturating_sub(start) as f64 / 1e9;
            text.push_str(&if request.json { e.json() } else { e.line() });
            text.push('\n');
            shown += 1;
        }
        if text.is_empty() && quiet_since.elapsed() >= KEEPALIVE {
            text.push_str("#.\n");
        }
        if !text.is_empty() {
            quiet_since = Instant::now();
            if out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return shown;
            }
        }
    }
    let missed = src.tracer.missed.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# {shown} packets shown, {missed} missed (the tracer fell behind)"
    );
    let _ = out.flush();
    shown
}

/// Waits up to POLL_MS for the XDP ring.
fn wait_for_ring(ring: &RingBuf<MapData>) {
    let mut fds = [libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: fds is a live array of the length passed.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
}

/// The XDP program's events in the ring that `filter` matches.
fn xdp_events(
    ring: &mut RingBuf<MapData>,
    filter: TraceFilter,
    domains: &Domains,
) -> Vec<TraceEvent> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(e) = xdp_event(&item, filter, domains) {
            events.push(e);
        }
    }
    events
}

/// Reads one `struct trace_event` of steer_abi.h (the summary takes the
/// lengths from the headers: only the frame's start was captured).
fn xdp_event(raw: &[u8], filter: TraceFilter, domains: &Domains) -> Option<TraceEvent> {
    let u32_at = |at: usize| {
        raw.get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
    };
    let ns = u64::from_ne_bytes(raw.get(0..8)?.try_into().ok()?);
    let (ifindex, out, stat, len) = (u32_at(8)?, u32_at(12)?, u32_at(16)?, u32_at(20)?);
    let captured = (len as usize).min(br_ebpf::MAX_TRACE_BYTES as usize);
    let frame = raw.get(24..24 + captured)?;
    let ip = ip_of_frame(frame);
    if !filter.matches(ip, domains) {
        return None;
    }
    let name = br_ebpf::STAT_NAMES
        .get(stat as usize)
        .map_or("unknown", |n| n.0);
    let packet = summary(ip);
    Some(TraceEvent {
        ns,
        time: 0.0,
        stage: "xdp",
        interface: interface_name(ifindex),
        packet,
        kind: "action",
        name,
        // A fast-path frame as it left: its destination is the next hop.
        to: match (out, frame.get(..6)) {
            (0, _) => String::new(),
            (out, Some(mac)) => format!("{} next hop {}", interface_name(out), mac_text(mac)),
            (out, None) => interface_name(out),
        },
    })
}

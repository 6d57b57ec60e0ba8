//! The slow-path thread: relays what the kernel gives the TUN interface
//! (IPv6 the host routes into a 6rd prefix) and the protocol-41 raw
//! socket (what the kernel delivers locally: reassembled fragments,
//! decrypted IPsec), and hands the results back to the kernel
//! ([`KernelBatch`]: one `sendmmsg` per wakeup and socket). The raw
//! socket is read [`RECV_BATCH`] packets per `recvmmsg`; a TUN has no
//! batch read, so it is read a packet at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::counters::{Counters, Io};
use super::fib::Fib;
use super::interfaces::Interfaces;
use super::publish::Reader;
use super::slow_send::KernelBatch;
use super::slowpath::{SlowPath, RECV_BATCH};
use super::tracer::{self, Tracer};
use super::worker::{route, Context, Disposition, BATCH};
use crate::relay::{DropReason, Frame, Relay, Verdict, WorkerState};
use crate::trace::TraceFilter;

/// Bytes before each packet in its buffer (room for the outer header).
const HEADROOM: usize = 128;

/// What the thread keeps between packets.
struct SlowThread {
    slow: Arc<SlowPath>,
    interfaces: Arc<Interfaces>,
    relay: Reader<Relay>,
    fib: Reader<Fib>,
    counters: Arc<Counters>,
    tracer: Arc<Tracer>,
    state: WorkerState,
    kernel: KernelBatch,
    epoch: Instant,
}

/// Runs until `stop`.
pub fn run_slow_path(
    slow: Arc<SlowPath>,
    interfaces: Arc<Interfaces>,
    relay: Reader<Relay>,
    fib: Reader<Fib>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    tracer: Arc<Tracer>,
) {
    let mut fds = [slow.tun_fd(), slow.raw41_fd()].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let mut t = SlowThread {
        state: relay.get().worker_state(u16::MAX),
        slow,
        interfaces,
        relay,
        fib,
        counters,
        tracer,
        kernel: KernelBatch::default(),
        epoch: Instant::now(),
    };
    // Packets up to 64 KiB (reassembled, or the TUN's MTU).
    let mut bufs = vec![vec![0u8; HEADROOM + 65536]; RECV_BATCH];
    let mut got = [(0usize, 0u32); RECV_BATCH];
    while !stop.load(Ordering::Relaxed) {
        t.counters.turn();
        // SAFETY: fds is a live array of the length passed.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready <= 0 {
            continue;
        }
        t.refresh();
        let trace = t.tracer.filter_if_active();
        // Each source bounded per wakeup so that one cannot starve the other.
        for _ in 0..BATCH {
            let Ok(n) = t.slow.read_tun(&mut bufs[0][HEADROOM..]) else {
                break;
            };
            t.relay_one(&mut bufs[0], n, None, trace);
        }
        let mut left = BATCH;
        while left > 0 {
            let n = t.slow.read_raw41_many(&mut bufs, HEADROOM, &mut got);
            for (buf, &(len, ifindex)) in bufs.iter_mut().zip(&got[..n]) {
                t.relay_one(buf, len, Some(ifindex), trace);
            }
            if n < RECV_BATCH {
                break;
            }
            left = left.saturating_sub(n);
        }
        t.kernel.flush(&t.slow, &t.counters);
        t.counters.tcp_mss(t.state.take_mss_events());
    }
}

impl SlowThread {
    /// Takes a new configuration or FIB snapshot, if one was published.
    fn refresh(&mut self) {
        if self.relay.refresh() {
            self.counters.tcp_mss(self.state.take_mss_events());
            self.state = self.relay.get().worker_state(u16::MAX);
        }
        self.fib.refresh();
    }

    /// Relays the packet `buf[HEADROOM..HEADROOM + n]`, from the TUN
    /// (`ingress` None) or the raw socket (the interface it arrived on).
    fn relay_one(
        &mut self,
        buf: &mut [u8],
        n: usize,
        ingress: Option<u32>,
        trace: Option<TraceFilter>,
    ) {
        self.counters.io(Io::ReceivedKernel, 1);
        let from_tun = ingress.is_none();
        let host_multicast = from_tun && n >= 40 && buf[HEADROOM + 24] == 0xff;
        let fib = self.fib.get();
        let not_from_ces = ingress.is_some_and(|i| !self.interfaces.faces_ces(fib, i));
        let relay = self.relay.get();
        let traced = trace.and_then(|f| {
            let ip = &buf[HEADROOM..HEADROOM + n];
            f.matches(ip, relay.domains())
                .then(|| crate::trace::summary(ip))
        });
        let mut frame = Frame::new(buf, HEADROOM, n).expect("n fits the buffer");
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let verdict = if host_multicast {
            Verdict::Drop(DropReason::HostMulticast)
        } else if not_from_ces {
            Verdict::Drop(DropReason::Proto41WrongInterface)
        } else if from_tun {
            relay.from_host_ipv6(&mut self.state, &mut frame, now_ns)
        } else {
            relay.from_ipv4(&mut self.state, &mut frame, now_ns)
        };
        let routed = match verdict {
            Verdict::Drop(reason) => {
                // The packet as read (a drop leaves the addresses as they were).
                tracing::debug!(
                    "slow path drop ({reason}): {}",
                    crate::relay::describe(&buf[HEADROOM..HEADROOM + n])
                );
                (Disposition::Drop(reason), None)
            }
            // No ports: whatever the route, the kernel sends it.
            Verdict::Forward { path, egress } => {
                let ctx = Context {
                    relay,
                    fib,
                    ports: &[],
                    counters: &self.counters,
                };
                route(
                    &ctx,
                    &mut self.state,
                    &mut frame,
                    now_ns,
                    path,
                    egress,
                    true,
                )
            }
        };
        if let Some(packet) = traced {
            let from = match ingress {
                Some(i) => tracer::interface_name(i),
                None => self.slow.tun_name().to_string(),
            };
            let event = tracer::relay_event("slow-path", from, packet, &routed, &[], buf);
            self.tracer.offer(event);
        }
        self.kernel.deliver(&self.slow, &self.counters, buf, routed);
    }
}

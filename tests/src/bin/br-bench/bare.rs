//! The bare AF_XDP forwarder: the ceiling of copy-mode AF_XDP on this
//! testbed for the `br-afxdp` rows (`ratio_afxdp_ceiling`). It is the
//! daemon's worker without the relay: the same ring code
//! (`br_daemon::dataplane::xsk`), one UMEM shared by a socket on in0 and
//! one on out0 (queue 0), the same batch size, fill and completion
//! handling, need_wakeup and poll when idle; each frame gets the sink's
//! MAC and out0's and goes out of out0 as it came.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use aya::maps::XskMap;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use br_daemon::dataplane::worker::BATCH;
use br_daemon::dataplane::xsk::{RingSizes, Umem, XskSocket, FRAME_SIZE};
use br_tests::Netns;

/// The name of the forwarding thread (its CPU time is the gateway's).
pub const THREAD: &str = "afxdp-bare";

/// A running bare forwarder; stopped when dropped.
pub struct Bare {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Bare {
    /// Attaches `bench_xsk` to in0 of `gw` and forwards on CPU `cpu`
    /// until dropped; `macs` are (sink0's, out0's).
    pub fn start(gw: &Netns, cpu: usize, macs: ([u8; 6], [u8; 6])) -> Result<Bare> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, (ready_tx, ready_rx)) = (Arc::clone(&stop), std::sync::mpsc::channel());
        let thread = gw.spawn_in(move || -> Result<()> {
            super::pin(cpu);
            set_thread_name(THREAD);
            match setup() {
                Ok((ebpf, umem, sockets)) => {
                    let _ = ready_tx.send(Ok(()));
                    forward(umem, sockets, macs, &flag);
                    drop(ebpf);
                    Ok(())
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    Err(e)
                }
            }
        });
        ready_rx
            .recv()
            .context("the bare forwarder's thread ended")?
            .map_err(|e| anyhow::anyhow!("bare AF_XDP forwarder: {e}"))?;
        Ok(Bare {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `dev`'s ifindex in this thread's network namespace (/sys is the
/// host's here).
fn ifindex(dev: &str) -> Result<u32> {
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).with_context(|| format!("no interface {dev}")),
        i => Ok(i),
    }
}

/// The program on in0 and the sockets: in0's (UMEM owner), then out0's.
fn setup() -> Result<(Ebpf, Umem, [XskSocket; 2])> {
    let (in0, out0) = (ifindex("in0")?, ifindex("out0")?);
    // As the daemon sizes it: 4096 frames per port.
    let umem = Umem::new(4096 * 2).context("UMEM")?;
    let rx = XskSocket::new(&umem, None, in0, 0, RingSizes::default(), true)?;
    let tx = XskSocket::new(&umem, Some(&rx), out0, 0, RingSizes::default(), true)?;
    let mut ebpf = Ebpf::load(br_ebpf::bench_object())?;
    {
        let mut xsks = XskMap::try_from(ebpf.map_mut("bench_xsks").context("bench_xsks")?)?;
        xsks.set(0, rx.as_raw_fd(), 0)?;
    }
    let p: &mut Xdp = ebpf
        .program_mut("bench_xsk")
        .context("bench_xsk")?
        .try_into()?;
    p.load()?;
    p.attach("in0", XdpMode::Driver)?;
    Ok((ebpf, umem, [rx, tx]))
}

/// The worker's loop without the relay (the sink counts what it sends).
fn forward(
    mut umem: Umem,
    mut sockets: [XskSocket; 2],
    (sink_mac, out_mac): ([u8; 6], [u8; 6]),
    stop: &AtomicBool,
) {
    let mut free: Vec<u64> = (0..umem.frames())
        .map(|i| u64::from(i * FRAME_SIZE))
        .collect();
    let given = sockets[0].fill(&free[free.len() / 2..]);
    free.truncate(free.len() - given);
    let mut rx = [(0u64, 0u32); BATCH];
    let mut tx: Vec<(u64, u32)> = Vec::with_capacity(BATCH);
    let mut pollfd = libc::pollfd {
        fd: sockets[0].as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        for s in &mut sockets {
            s.complete(&mut free, usize::MAX);
        }
        let n = (sockets[0].fill_free() as usize).min(free.len());
        if n > 0 {
            let given = sockets[0].fill(&free[free.len() - n..]);
            free.truncate(free.len() - given);
        }
        let received = sockets[0].receive(&mut rx);
        for &(addr, len) in &rx[..received] {
            let (chunk, offset) = umem.chunk_mut(addr);
            if let Some(eth) = chunk.get_mut(offset..offset + 12) {
                eth[..6].copy_from_slice(&sink_mac);
                eth[6..].copy_from_slice(&out_mac);
            }
            tx.push((addr, len));
        }
        let sent = sockets[1].transmit(&tx);
        free.extend(
            tx[sent..]
                .iter()
                .map(|(a, _)| a & !u64::from(FRAME_SIZE - 1)),
        );
        tx.clear();
        let mut pending = false;
        if sockets[1].tx_pending() > 0 {
            sockets[1].flush_tx();
            pending = sockets[1].tx_pending() > 0;
        }
        if received == 0 && !pending {
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut pollfd, 1, 50) };
        }
    }
}

fn set_thread_name(name: &str) {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: a NUL-terminated name of at most 15 bytes, for this thread.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
}

//! AF_XDP sockets and their UMEM, written directly against the kernel ABI
//! (`linux/if_xdp.h`, Documentation/networking/af_xdp.rst).
//!
//! Why not xsk-rs (see docs/decisions.md): its frame descriptors have a
//! fixed address, so a header cannot be pushed into the headroom or pulled
//! off in place; every encapsulation would move the packet. Here a
//! descriptor is a plain `(addr, len)` that the forwarder sets.
//!
//! One [`Umem`] per worker; one [`XskSocket`] per (interface, queue) bound to
//! it, the first as owner and the others with `XDP_SHARED_UMEM`, each with
//! its own fill and completion rings. A frame received on one interface is
//! transmitted on another by handing its address to the other socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of one UMEM chunk (one frame).
pub const FRAME_SIZE: u32 = 4096;

/// An anonymous memory area registered as UMEM.
pub struct Umem {
    area: NonNull<u8>,
    len: usize,
    frames: u32,
}

// SAFETY: the area is plain memory owned by this value; the worker that
// owns the Umem is the only thread that touches it (the kernel accesses
// it through the rings' ownership protocol).
unsafe impl Send for Umem {}

impl Umem {
    /// Maps `frames` chunks of [`FRAME_SIZE`] bytes.
    pub fn new(frames: u32) -> io::Result<Umem> {
        let len = frames as usize * FRAME_SIZE as usize;
        // SAFETY: anonymous private mapping, no file, result checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Umem {
            area: NonNull::new(ptr.cast()).expect("mmap succeeded"),
            len,
            frames,
        })
    }

    /// Number of chunks.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The whole chunk that holds `addr`, and `addr`'s offset in it.
    #[inline]
    pub fn chunk_mut(&mut self, addr: u64) -> (&mut [u8], usize) {
        let base = (addr & !(u64::from(FRAME_SIZE) - 1)) as usize;
        let base = base.min(self.len - FRAME_SIZE as usize);
        // SAFETY: base + FRAME_SIZE <= len, and `&mut self` makes this the
        // only live reference into the area.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(self.area.as_ptr().add(base), FRAME_SIZE as usize)
        };
        let offset = (addr as usize - base).min(FRAME_SIZE as usize);
        (chunk, offset)
    }

    /// Bytes `[addr, addr + len)`, clamped to the chunk.
    pub fn bytes(&mut self, addr: u64, len: usize) -> &[u8] {
        let (chunk, offset) = self.chunk_mut(addr);
        let end = (offset + len).min(chunk.len());
        &chunk[offset..end]
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped; sockets using it
        // were dropped first (workers drop sockets before the Umem).
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.len) };
    }
}

/// One mmap'd ring: producer and consumer indices, flags, descriptors.
struct Ring<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    /// Local copies: our side's index, and the last seen other side.
    local: u32,
    map: (NonNull<libc::c_void>, usize),
}

impl<T> Ring<T> {
    /// Maps a ring of `size` entries at `page_offset` of the socket.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        page_offset: u64,
    ) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring, as af_xdp.rst
        // describes; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                page_offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |o: u64| {
            // SAFETY: the kernel's offsets lie inside the mapping.
            NonNull::new(unsafe { ptr.cast::<u8>().add(o as usize) }).expect("inside a mapping")
        };
        Ok(Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: size - 1,
            local: 0,
            map: (NonNull::new(ptr).expect("mmap succeeded"), len),
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the kernel updates it
        // atomically, so it is accessed only as an atomic.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for producer().
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for producer().
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Slot `i` (taken modulo the ring size).
    fn slot(&mut self, i: u32) -> &mut T {
        // SAFETY: (i & mask) < size, inside the mapped descriptor array;
        // the ring protocol gives this side ownership of the slots it
        // reads or writes between the indices.
        unsafe { &mut *self.descs.as_ptr().add((i & self.mask) as usize) }
    }

    // Producer side (fill, tx).

    fn free(&self) -> u32 {
        let size = self.mask + 1;
        size - self
            .local
            .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.producer().store(self.local, Ordering::Release);
    }

    // Consumer side (rx, completion).

    fn available(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.local)
    }

    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.consumer().store(self.local, Ordering::Release);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the ring mapped in map().
        unsafe { libc::munmap(self.map.0.as_ptr(), self.map.1) };
    }
}

/// How the socket ended up bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs into the UMEM.
    ZeroCopy,
    /// The kernel copies (veth, generic XDP).
    Copy,
    /// Bound to another socket's UMEM (the kernel chose the owner's mode).
    Shared,
}

/// Kernel-side drop counters of a socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_ring_empty: u64,
}

/// An AF_XDP socket bound to one (interface, queue).
pub struct XskSocket {
    fd: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    need_wakeup: bool,
    mode: BindMode,
    /// Frames one copy-mode TX kick sends: 32 (TX_BATCH_SIZE in
    /// net/xdp/xsk.c), or the whole TX ring where the kernel takes
    /// XDP_MAX_TX_SKB_BUDGET (Linux 6.17+).
    tx_budget: u32,
}

/// `XDP_MAX_TX_SKB_BUDGET` of linux/if_xdp.h (6.17+; not in libc yet).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// What a copy-mode kick sends without it.
const DEFAULT_TX_BUDGET: u32 = 32;

// SAFETY: the rings are memory shared with the kernel only; the socket is
// moved into its worker thread once and used only there.
unsafe impl Send for XskSocket {}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sizes of the four rings (powers of two).
#[derive(Clone, Copy, Debug)]
pub struct RingSizes {
    pub rx: u32,
    pub tx: u32,
    pub fill: u32,
    pub comp: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            rx: 2048,
            tx: 2048,
            fill: 2048,
            comp: 2048,
        }
    }
}

impl XskSocket {
    /// Creates a socket on (`ifindex`, `queue`). With `owner`, the UMEM is
    /// shared with that socket; otherwise `umem` is registered on this one.
    pub fn new(
        umem: &Umem,
        owner: Option<&XskSocket>,
        ifindex: u32,
        queue: u32,
        sizes: RingSizes,
        try_zero_copy: bool,
    ) -> io::Result<XskSocket> {
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(context(io::Error::last_os_error(), "socket(AF_XDP)"));
        }
        // SAFETY: raw is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if owner.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem.area.as_ptr() as u64,
                len: umem.len as u64,
                chunk_size: FRAME_SIZE,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(|e| context(e, "XDP_UMEM_REG"))?;
        }
        // Every (device, queue) has its own fill and completion rings,
        // shared UMEM or not.
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &sizes.fill)
            .map_err(|e| context(e, "fill ring"))?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &sizes.comp)
            .map_err(|e| context(e, "completion ring"))?;
        setsockopt(raw, libc::XDP_RX_RING, &sizes.rx).map_err(|e| context(e, "rx ring"))?;
        setsockopt(raw, libc::XDP_TX_RING, &sizes.tx).map_err(|e| context(e, "tx ring"))?;
        // One kick for everything queued, where the kernel allows it
        // (ENOPROTOOPT before 6.17: 32 per kick).
        let tx_budget = match setsockopt(raw, XDP_MAX_TX_SKB_BUDGET, &sizes.tx) {
            Ok(()) => sizes.tx,
            Err(_) => DEFAULT_TX_BUDGET,
        };

        // SAFETY: zeroed is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off and optlen are live and sized as passed.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(context(io::Error::last_os_error(), "XDP_MMAP_OFFSETS"));
        }
        let rx = Ring::map(raw, &off.rx, sizes.rx, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(raw, &off.tx, sizes.tx, libc::XDP_PGOFF_TX_RING as u64)?;
        let fill = Ring::map(raw, &off.fr, sizes.fill, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(
            raw,
            &off.cr,
            sizes.comp,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;

        let bind = |flags: u16, shared_fd: u32| {
            let addr = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: shared_fd,
            };
            // SAFETY: addr is a live sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&addr as *const libc::sockaddr_xdp).cast(),
                    std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let (mode, need_wakeup) = match owner {
            // A socket on a shared UMEM binds with no other flag (EINVAL
            // otherwise); it has no need_wakeup, so it is always kicked.
            Some(o) => {
                bind(libc::XDP_SHARED_UMEM, o.fd.as_raw_fd() as u32)
                    .map_err(|e| context(e, "bind (shared UMEM)"))?;
                (BindMode::Shared, false)
            }
            None => {
                let zc = try_zero_copy
                    && bind(libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP, 0).is_ok();
                if zc {
                    (BindMode::ZeroCopy, true)
                } else {
                    bind(libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP, 0)
                        .map_err(|e| context(e, "bind (copy mode)"))?;
                    (BindMode::Copy, true)
                }
            }
        };
        Ok(XskSocket {
            fd,
            rx,
            tx,
            fill,
            comp,
            need_wakeup,
            mode,
            tx_budget,
        })
    }

    /// How the socket is bound.
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Frames one copy-mode TX kick sends.
    pub fn tx_budget(&self) -> u32 {
        self.tx_budget
    }

    /// Gives frames to the kernel to receive into; returns how many fit.
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        let n = (self.fill.free() as usize).min(addrs.len());
        let start = self.fill.local;
        for (i, a) in addrs[..n].iter().enumerate() {
            *self.fill.slot(start.wrapping_add(i as u32)) = *a;
        }
        self.fill.submit(n as u32);
        if n > 0 && self.need_wakeup && self.fill.needs_wakeup() {
            self.kick_rx();
        }
        n
    }

    /// Free slots in the fill ring.
    pub fn fill_free(&self) -> u32 {
        self.fill.free()
    }

    /// Takes up to `out.len()` received descriptors.
    pub fn receive(&mut self, out: &mut [(u64, u32)]) -> usize {
        let n = (self.rx.available() as usize).min(out.len());
        let start = self.rx.local;
        for (i, o) in out[..n].iter_mut().enumerate() {
            let d = self.rx.slot(start.wrapping_add(i as u32));
            *o = (d.addr, d.len);
        }
        self.rx.release(n as u32);
        n
    }

    /// Queues frames for transmission; returns how many fit. Call
    /// [`Self::flush_tx`] after a batch.
    pub fn transmit(&mut self, descs: &[(u64, u32)]) -> usize {
        let n = (self.tx.free() as usize).min(descs.len());
        let start = self.tx.local;
        for (i, (addr, len)) in descs[..n].iter().enumerate() {
            let d = self.tx.slot(start.wrapping_add(i as u32));
            d.addr = *addr;
            d.len = *len;
            d.options = 0;
        }
        self.tx.submit(n as u32);
        n
    }

    /// Tells the kernel to send what is queued. Copy mode sends at most
    /// `tx_budget` frames per call (32 unless XDP_MAX_TX_SKB_BUDGET was
    /// taken), so this kicks once per budget of frames still in the ring,
    /// including frames an earlier kick left there, and stops when the
    /// device pushes back.
    pub fn flush_tx(&mut self) {
        if self.need_wakeup && !self.tx.needs_wakeup() {
            return;
        }
        for _ in 0..self.tx_pending().div_ceil(self.tx_budget) {
            // SAFETY: a zero-length sendto is the documented TX kick.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                // EAGAIN/EBUSY/ENOBUFS: the device is full; the frames
                // stay in the ring for the next kick.
                break;
            }
        }
    }

    fn kick_rx(&self) {
        // SAFETY: a zero-length recvfrom is the documented fill-ring wakeup.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Takes back frames whose transmission completed.
    pub fn complete(&mut self, out: &mut Vec<u64>, max: usize) -> usize {
        let n = (self.comp.available() as usize).min(max);
        let start = self.comp.local;
        for i in 0..n {
            out.push(*self.comp.slot(start.wrapping_add(i as u32)));
        }
        self.comp.release(n as u32);
        n
    }

    /// Frames queued for TX that the kernel has not consumed yet.
    pub fn tx_pending(&self) -> u32 {
        self.tx
            .local
            .wrapping_sub(self.tx.consumer().load(Ordering::Acquire))
    }
}

/// The kernel's drop counters of an AF_XDP socket (zeros when `fd` is not one).
pub fn stats_of(fd: RawFd) -> XskStats {
    // SAFETY: zeroed is valid for this plain struct.
    let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: s and len are live and sized as passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut s as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return XskStats::default();
    }
    XskStats {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
        tx_ring_empty: s.tx_ring_empty_descs,
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

//! The kernel slow path: what the Cisco `Tunnel0` did for packets that do
//! not cross the XDP fast path.
//!
//! - A TUN interface carries the BR's own 6rd addresses and its IPv4
//!   addresses (the Cisco loopback), and the 6rd prefixes are routed into
//!   it: packets the host sends, or receives on interfaces without XDP
//!   (after IPsec decryption, say), come out of the TUN and are relayed.
//! - A raw protocol-41 socket receives what the kernel delivers locally:
//!   reassembled fragments, and traffic from interfaces without XDP.
//! - Raw IPv4 and IPv6 sockets (header included) hand packets to the
//!   kernel to route when the AF_XDP forwarder cannot send them itself: the
//!   neighbour is not resolved yet, or the egress interface has no XDP.
//!   Writing into the TUN delivers packets for the host's own addresses.
//!
//! The TUN interface lives as long as the daemon: when it dies, the kernel
//! removes it with its addresses and routes.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use anyhow::{bail, Context, Result};

use std::sync::Mutex;

use super::slow_send;
use super::tun_addresses::TunAddresses;
use crate::relay::Domain;

fn cvt(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

fn raw_socket(
    family: libc::c_int,
    flags: libc::c_int,
    protocol: libc::c_int,
    what: &str,
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            protocol,
        )
    };
    cvt(fd, what).map(owned)
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Turns on an integer socket option.
fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    option: libc::c_int,
    what: &str,
) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a live int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(r, what).map(drop)
}

/// The raw IPv4 socket encapsulated packets leave by: protocol 41 with
/// the header included, so that the kernel's route and IPsec policy
/// lookups see protocol 41 (an IPPROTO_RAW socket's flows carry protocol
/// 255, which an xfrm selector `proto 41` does not match). A filter that
/// accepts nothing keeps every received protocol-41 packet off its queue.
fn send_only_protocol41_socket() -> io::Result<OwnedFd> {
    let fd = raw_socket(
        libc::AF_INET,
        libc::SOCK_NONBLOCK,
        41,
        "raw IPv4 socket for protocol 41",
    )?;
    set_int_option(&fd, libc::IPPROTO_IP, libc::IP_HDRINCL, "IP_HDRINCL")?;
    // Classic BPF "ret #0": accept no bytes of any packet.
    let mut reject = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: reject.as_mut_ptr(),
    };
    // SAFETY: setsockopt with a live sock_fprog whose filter outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&program as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    cvt(r, "SO_ATTACH_FILTER")?;
    Ok(fd)
}

/// Runs `ip` with arguments; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Protocol-41 packets read per `recvmmsg` (SlowPath::read_raw41_many).
pub const RECV_BATCH: usize = 16;

/// Why a relayed packet is handed to the kernel. Each reason has its own
/// send socket: a packet to a neighbour that is not resolved yet waits in
/// the kernel (up to the ARP/ND timeout) charged to its socket's send
/// buffer, so a flood towards CEs that do not exist fills that buffer;
/// with sockets of their own, IPsec and routed packets still leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// An outbound IPsec policy covers it: the kernel encrypts it.
    Ipsec,
    /// The next hop's neighbour entry is not resolved yet.
    Neighbour,
    /// An egress without XDP, or a destination of the host.
    Route,
}

impl Handoff {
    /// The index of this reason's send socket.
    pub(super) fn socket(self) -> usize {
        match self {
            Handoff::Ipsec | Handoff::Route => 0,
            Handoff::Neighbour => 1,
        }
    }
}

/// The sockets and the TUN device of the slow path.
pub struct SlowPath {
    tun: OwnedFd,
    tun_name: String,
    raw41: OwnedFd,
    /// Send sockets, indexed by [`Handoff::socket`]; non-blocking, so a
    /// full send buffer is a counted drop, never a stalled worker.
    out4: [OwnedFd; 2],
    out6: [OwnedFd; 2],
    /// What the TUN carries now, for the next set_domains to change.
    installed: Mutex<Option<TunAddresses>>,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

impl SlowPath {
    /// Creates the TUN interface and the raw sockets, and gives the TUN
    /// interface the BR's addresses and the 6rd routes.
    pub fn open(tun_name: &str, domains: &[Domain]) -> Result<SlowPath> {
        // SAFETY: open(2) of a fixed path; the result is checked and owned.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        let tun = owned(cvt(raw, "open /dev/net/tun")?);
        // SAFETY: zeroed ifreq is valid; the name fits (checked by config).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req
            .ifr_name
            .iter_mut()
            .zip(tun_name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF takes a pointer to a live ifreq.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut req) };
        cvt(r, "TUNSETIFF").with_context(|| format!("creating TUN interface {tun_name}"))?;

        let raw41 = raw_socket(
            libc::AF_INET,
            libc::SOCK_NONBLOCK,
            41,
            "raw socket for protocol 41",
        )?;
        set_int_option(&raw41, libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO")?;
        let out4 = [
            send_only_protocol41_socket()?,
            send_only_protocol41_socket()?,
        ];
        // IPPROTO_RAW on IPv6 implies IPV6_HDRINCL. IPV6_FREEBIND: each
        // packet names its own source (a CE's) in IPV6_PKTINFO.
        let raw6 = || {
            let fd = raw_socket(
                libc::AF_INET6,
                libc::SOCK_NONBLOCK,
                libc::IPPROTO_RAW,
                "raw IPv6 socket",
            )?;
            set_int_option(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_FREEBIND,
                "IPV6_FREEBIND",
            )?;
            Ok::<_, io::Error>(fd)
        };
        let out6 = [raw6()?, raw6()?];
        let slow = SlowPath {
            tun,
            tun_name: tun_name.to_string(),
            raw41,
            out4,
            out6,
            installed: Mutex::new(None),
        };
        slow.configure(domains)?;
        Ok(slow)
    }

    fn configure(&self, domains: &[Domain]) -> Result<()> {
        let name = self.tun_name.as_str();
        let mtu = domains
            .iter()
            .map(|d| d.mtu())
            .min()
            .unwrap_or(1280)
            .to_string();
        // No link-local address and no multicast: the host sends no MLD or
        // router solicitations into the tunnel.
        ip(&[
            "link",
            "set",
            "dev",
            name,
            "addrgenmode",
            "none",
            "multicast",
            "off",
        ])?;
        ip(&["link", "set", "dev", name, "mtu", &mtu, "up"])?;
        self.set_domains(domains)
    }

    /// Gives the TUN the domains' addresses and routes (on reload too):
    /// adds what is new, then removes what is gone, and leaves what both
    /// configurations hold alone (`tun_addresses.rs`).
    pub fn set_domains(&self, domains: &[Domain]) -> Result<()> {
        let name = self.tun_name.as_str();
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        // Unknown (a fresh TUN, or a change that failed half way): start
        // from nothing.
        let from = match installed.take() {
            Some(known) => known,
            None => {
                ip(&["-6", "addr", "flush", "dev", name, "scope", "global"])?;
                ip(&["-4", "addr", "flush", "dev", name])?;
                ip(&["-6", "route", "flush", "dev", name])?;
                TunAddresses::default()
            }
        };
        let wanted = TunAddresses::of(domains);
        for change in from.changes_to(&wanted, name) {
            let args: Vec<&str> = change.iter().map(String::as_str).collect();
            ip(&args)?;
        }
        *installed = Some(wanted);
        Ok(())
    }

    /// The TUN interface's name.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// Descriptors the slow-path thread waits on.
    pub fn tun_fd(&self) -> RawFd {
        self.tun.as_raw_fd()
    }
    pub fn raw41_fd(&self) -> RawFd {
        self.raw41.as_raw_fd()
    }

    /// Reads one packet from the TUN (an IPv6 packet the host routed into it).
    pub fn read_tun(&self, buf: &mut [u8]) -> io::Result<usize> {
        read(self.tun.as_raw_fd(), buf)
    }

    /// Reads up to [`RECV_BATCH`] protocol-41 packets (with their IPv4
    /// headers) the host received, with one `recvmmsg`: packet `i` into
    /// `bufs[i][offset..]`, and `got[i]` its length and the interface it
    /// arrived on (IP_PKTINFO; for IPsec, the one the kernel decrypted it
    /// on). Returns how many (0: none waiting, or an error).
    pub fn read_raw41_many(
        &self,
        bufs: &mut [Vec<u8>],
        offset: usize,
        got: &mut [(usize, u32)],
    ) -> usize {
        let n = bufs.len().min(got.len()).min(RECV_BATCH);
        // SAFETY: an all-zero iovec is valid (null base, zero length).
        let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let mut controls = [[0u64; 8]; RECV_BATCH];
        for (i, buf) in bufs.iter_mut().take(n).enumerate() {
            let room = &mut buf[offset..];
            iovs[i] = libc::iovec {
                iov_base: room.as_mut_ptr().cast(),
                iov_len: room.len(),
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&controls[i]);
        }
        // SAFETY: msgs[..n] are initialised mmsghdrs whose buffers
        // (bufs, iovs, controls) are live and writable for the call.
        let r = unsafe {
            libc::recvmmsg(
                self.raw41.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let r = usize::try_from(r).unwrap_or(0);
        for (slot, msg) in got.iter_mut().zip(&msgs[..r]) {
            *slot = (msg.msg_len as usize, pktinfo_ifindex(&msg.msg_hdr));
        }
        r
    }

    /// Delivers an IPv6 packet to the host's own stack.
    pub fn to_host(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: packet is a live buffer of the length passed.
        let n = unsafe { libc::write(self.tun.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        cvt(n as libc::c_int, "write to TUN").map(drop)
    }

    /// Hands complete packets to the kernel to route, in order, on
    /// `via`'s IPv4 socket (`ipv4`) or IPv6 one; `done(i, result)` for
    /// packet `i` (see [`slow_send::send_many`]).
    pub fn send_many<'a>(
        &self,
        ipv4: bool,
        via: Handoff,
        packets: impl IntoIterator<Item = (&'a [u8], IpAddr)>,
        done: impl FnMut(usize, io::Result<()>),
    ) {
        let sockets = if ipv4 { &self.out4 } else { &self.out6 };
        slow_send::send_many(sockets[via.socket()].as_raw_fd(), packets, done);
    }
}

/// The interface of a received message's IP_PKTINFO (0: none).
fn pktinfo_ifindex(msg: &libc::msghdr) -> u32 {
    let mut ifindex = 0;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them and an IP_PKTINFO
    // cmsg's data is an in_pktinfo (read unaligned).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                ifindex = info.ipi_ifindex as u32;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    ifindex
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is live and writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

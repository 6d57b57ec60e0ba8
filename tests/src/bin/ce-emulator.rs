//! A user-space 6rd CE for tests on kernels without `sit`: it behaves like
//! SCENARIO.md's Linux CE (`6rd-relay_prefix <own address>/32`, default
//! route via the BR), so everything it sends goes to the BR in protocol 41.
//!
//! `ce-emulator <tun> <ce-ipv4> <br-ipv4> <ipv6-address/len> [mtu]`
//!
//! It creates the TUN interface, gives it the address and a default route,
//! then encapsulates what the kernel routes into it and decapsulates the
//! protocol-41 packets the kernel receives. It exits on SIGTERM (the
//! kernel removes the TUN interface).

use std::net::Ipv4Addr;
use std::process::Command;

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "ip {}", args.join(" "));
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() >= 5,
        "usage: ce-emulator <tun> <ce-ipv4> <br-ipv4> <ipv6/len> [mtu]"
    );
    let (dev, local, br, addr) = (&args[1], &args[2], &args[3], &args[4]);
    let mtu = args.get(5).map(String::as_str).unwrap_or("1280");
    let local: Ipv4Addr = local.parse().expect("CE IPv4");
    let br: Ipv4Addr = br.parse().expect("BR IPv4");

    // SAFETY: open(2) of a fixed path, checked below.
    let tun = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(tun >= 0, "open /dev/net/tun");
    // SAFETY: zeroed ifreq is valid; the name is short.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF with a live ifreq.
    let r = unsafe { libc::ioctl(tun, 0x4004_54ca, &mut req) };
    assert!(r == 0, "TUNSETIFF");
    ip(&["link", "set", "dev", dev, "mtu", mtu, "up"]);
    ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"]);
    ip(&["-6", "route", "add", "default", "dev", dev, "metric", "1"]);

    // SAFETY: plain socket(2) calls, checked below.
    let raw41 = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 41) };
    // SAFETY: as above.
    let out = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    assert!(raw41 >= 0 && out >= 0, "raw sockets");
    println!("ce-emulator {dev} {local} -> BR {br} ready");

    let mut fds = [
        libc::pollfd {
            fd: tun,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: raw41,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut buf = vec![0u8; 65536];
    let mut id: u16 = 1;
    loop {
        // SAFETY: live pollfd array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) } <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: buf is live and writable past offset 20.
            let n = unsafe { libc::read(tun, buf[20..].as_mut_ptr().cast(), buf.len() - 20) };
            // Like sit, send nothing to multicast or link-local
            // destinations (the kernel's MLD reports, for one).
            let link_only = n >= 40
                && (buf[20 + 24] == 0xff || (buf[20 + 24] == 0xfe && buf[20 + 25] & 0xc0 == 0x80));
            if n > 0 && !link_only {
                let total = 20 + n as usize;
                let h = &mut buf[..20];
                h.copy_from_slice(&[
                    0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ]);
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                h[4..6].copy_from_slice(&id.to_be_bytes());
                id = id.wrapping_add(1);
                h[12..16].copy_from_slice(&local.octets());
                h[16..20].copy_from_slice(&br.octets());
                let c = checksum(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                // SAFETY: zeroed sockaddr_in is valid.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_addr.s_addr = u32::from(br).to_be();
                // SAFETY: live buffer and address of the sizes passed.
                unsafe {
                    libc::sendto(
                        out,
                        buf.as_ptr().cast(),
                        total,
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                };
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: buf is live and writable.
            let n = unsafe { libc::read(raw41, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 20 {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if (n as usize) > ihl {
                    // SAFETY: the inner packet lies inside buf.
                    unsafe { libc::write(tun, buf[ihl..].as_ptr().cast(), n as usize - ihl) };
                }
            }
        }
    }
}

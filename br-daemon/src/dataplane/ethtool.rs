//! What the `SIOCETHTOOL` ioctl tells of a device: its driver, and
//! whether it strips VLAN tags into metadata (where XDP cannot see them
//! unless the kernel has `bpf_xdp_metadata_rx_vlan_tag`).

use std::io;

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GFLAGS: u32 = 0x25;
/// `ETH_FLAG_RXVLAN`: receive VLAN offload (the tag leaves the frame).
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// The driver of a device (`ETHTOOL_GDRVINFO`).
pub fn driver(ifindex: u32) -> io::Result<String> {
    // struct ethtool_drvinfo: cmd, then driver[32], version[32], ...
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    ethtool(ifindex, &mut info)?;
    let driver = &info[4..36];
    let end = driver.iter().position(|&b| b == 0).unwrap_or(driver.len());
    Ok(String::from_utf8_lossy(&driver[..end]).into_owned())
}

/// Whether the device takes VLAN tags off received frames (`ethtool -k`
/// `rx-vlan-offload`, `ETHTOOL_GFLAGS`).
pub fn strips_vlan_tags(ifindex: u32) -> io::Result<bool> {
    // struct ethtool_value: cmd, data.
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&ETHTOOL_GFLAGS.to_ne_bytes());
    ethtool(ifindex, &mut value)?;
    let flags = u32::from_ne_bytes(value[4..8].try_into().expect("4 bytes"));
    Ok(flags & ETH_FLAG_RXVLAN != 0)
}

/// One `SIOCETHTOOL` request; `data` starts with its command and is large
/// enough for the structure the command fills.
fn ethtool(ifindex: u32, data: &mut [u8]) -> io::Result<()> {
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: name has IFNAMSIZ bytes, as if_indextoname requires.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed ifreq is valid; the name and data pointer are set below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = name;
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCETHTOOL with a live ifreq whose data points at `data`,
    // which the caller sized for its command's structure.
    let r = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

//! Which interfaces can transmit the frames the XDP fast path redirects
//! to them, on every kernel the product runs on.
//!
//! - Linux 6.3 and later: the device's own `xdp-features`
//!   ([`super::xdp_features`]), bit `NETDEV_XDP_ACT_NDO_XMIT`.
//! - Older kernels (Debian 12's and Amazon Linux 2023's 6.1) have no
//!   `netdev` generic netlink family. There the answer comes from the
//!   driver (`ETHTOOL_GDRVINFO`): drivers whose `ndo_xdp_xmit` needs no
//!   condition are listed below; a veth transmits only while its peer
//!   runs NAPI, which the daemon can see when the peer has an XDP
//!   program (`IFLA_XDP` of the peer, asked in the peer's namespace with
//!   `IFLA_TARGET_NETNSID`). A peer with only GRO on also works but is
//!   not visible from here, so it is taken as unable (the forwarder
//!   carries those packets: slower, never lost).
//!
//! A redirect to a device that cannot transmit is dropped by the kernel
//! where no counter of ours sees it, so "unknown" always means "no".

use std::io;

use super::ethtool::driver;
use super::fib::{attrs, Netlink};
use super::xdp_features::XdpFeatures;

/// Drivers that implement ndo_xdp_xmit unconditionally in 6.1 (their
/// own XDP support may still need the program attached, which the daemon
/// does on every interface it uses).
const DRIVERS_WITH_XDP_XMIT: &[&str] = &[
    "mlx5_core",
    "mlx4_en",
    "i40e",
    "ice",
    "ixgbe",
    "igb",
    "igc",
    "bnxt_en",
    "ena",
    "virtio_net",
    "tun",
    "qede",
    "stmmac",
    "dpaa2-eth",
    "sfc",
    "enetc",
    "fec",
    "mvneta",
    "mvpp2",
];

/// How the daemon knows an egress can take redirected frames.
pub(super) enum EgressProbe {
    /// The kernel says so per device (6.3+).
    XdpFeatures(XdpFeatures),
    /// Known drivers, and veths whose peer has an XDP program (older kernels).
    Drivers(Netlink),
}

impl EgressProbe {
    /// The best method this kernel offers.
    pub fn open() -> io::Result<EgressProbe> {
        match XdpFeatures::open() {
            Ok(f) => Ok(EgressProbe::XdpFeatures(f)),
            Err(_) => Ok(EgressProbe::Drivers(Netlink::open_protocol(
                libc::NETLINK_ROUTE,
                0,
            )?)),
        }
    }

    /// For the log.
    pub fn method(&self) -> &'static str {
        match self {
            EgressProbe::XdpFeatures(_) => "the devices' xdp-features (netdev netlink, Linux 6.3+)",
            EgressProbe::Drivers(_) => {
                "the drivers (this kernel has no xdp-features): known ndo_xdp_xmit drivers, \
                 and veths whose peer has an XDP program"
            }
        }
    }

    /// Whether device `ifindex` accepts redirected XDP frames now.
    pub fn can_transmit(&mut self, ifindex: u32) -> bool {
        match self {
            EgressProbe::XdpFeatures(f) => f.can_transmit(ifindex),
            EgressProbe::Drivers(nl) => match driver(ifindex).as_deref() {
                Ok("veth") => veth_peer_has_xdp(nl, ifindex).unwrap_or(false),
                Ok(name) => DRIVERS_WITH_XDP_XMIT.contains(&name),
                Err(_) => false,
            },
        }
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_LINK: u16 = 5;
const IFLA_XDP: u16 = 43;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_TARGET_NETNSID: u16 = 46;
const IFLA_XDP_ATTACHED: u16 = 2;

/// The attributes of one link: (IFLA_LINK, IFLA_LINK_NETNSID, XDP attached).
fn link_info(nl: &mut Netlink, ifindex: u32, netnsid: Option<i32>) -> io::Result<LinkInfo> {
    // struct ifinfomsg (16 bytes), then IFLA_TARGET_NETNSID.
    let mut body = vec![0u8; 16];
    body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    if let Some(id) = netnsid {
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&IFLA_TARGET_NETNSID.to_ne_bytes());
        body.extend_from_slice(&id.to_ne_bytes());
    }
    let mut info = LinkInfo::default();
    nl.request(RTM_GETLINK, &body, |kind, answer| {
        if kind == RTM_NEWLINK {
            info = parse_link_info(answer);
        }
    })?;
    Ok(info)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct LinkInfo {
    link: Option<u32>,
    link_netnsid: Option<i32>,
    xdp_attached: bool,
}

fn parse_link_info(body: &[u8]) -> LinkInfo {
    let mut info = LinkInfo::default();
    let word = |p: &[u8]| p.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
    for (kind, payload) in attrs(body.get(16..).unwrap_or(&[])) {
        match kind {
            IFLA_LINK => info.link = word(payload).map(u32::from_ne_bytes),
            IFLA_LINK_NETNSID => info.link_netnsid = word(payload).map(i32::from_ne_bytes),
            IFLA_XDP => {
                info.xdp_attached = attrs(payload)
                    .any(|(k, p)| k == IFLA_XDP_ATTACHED && p.first().is_some_and(|&m| m != 0))
            }
            _ => {}
        }
    }
    info
}

/// Whether a veth's peer has an XDP program (so its NAPI runs and the
/// veth can transmit redirected frames).
fn veth_peer_has_xdp(nl: &mut Netlink, ifindex: u32) -> io::Result<bool> {
    let own = link_info(nl, ifindex, None)?;
    let Some(peer) = own.link else {
        return Ok(false);
    };
    Ok(link_info(nl, peer, own.link_netnsid)?.xdp_attached)
}

#[cfg(test)]
mod tests {
    use super::super::fib::attr;
    use super::*;

    #[test]
    fn reads_the_peer_and_its_xdp_state() {
        let mut body = vec![0u8; 16];
        body.extend(attr(IFLA_LINK, &7u32.to_ne_bytes()));
        body.extend(attr(IFLA_LINK_NETNSID, &2i32.to_ne_bytes()));
        body.extend(attr(IFLA_XDP, &attr(IFLA_XDP_ATTACHED, &[1])));
        assert_eq!(
            parse_link_info(&body),
            LinkInfo {
                link: Some(7),
                link_netnsid: Some(2),
                xdp_attached: true
            }
        );
        let mut none = vec![0u8; 16];
        none.extend(attr(IFLA_XDP, &attr(IFLA_XDP_ATTACHED, &[0])));
        assert!(!parse_link_info(&none).xdp_attached);
        for cut in 0..body.len() {
            let _ = parse_link_info(&body[..cut]);
        }
    }
}

//! Which interfaces can transmit frames the XDP fast path redirects to
//! them: the kernel's `xdp-features` of a device (generic netlink family
//! "netdev", `Documentation/netlink/specs/netdev.yaml`), bit
//! `NETDEV_XDP_ACT_NDO_XMIT`.
//!
//! A redirect to a device without it is dropped by the kernel where no
//! counter of ours sees it, so the fast path only redirects to devices
//! that have it. veth sets it only while its peer has an XDP program or
//! GRO enabled, which is why the daemon asks again every second.

use std::io;

use super::fib::{attrs, Netlink};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// The device implements ndo_xdp_xmit: it accepts redirected frames.
pub const NETDEV_XDP_ACT_NDO_XMIT: u64 = 4;
const GENL_HEADER_LEN: usize = 4;

/// A generic netlink socket resolved to the "netdev" family.
pub struct XdpFeatures {
    nl: Netlink,
    family: u16,
}

fn genl_body(cmd: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![cmd, 1, 0, 0];
    for (kind, payload) in attributes {
        let len = 4 + payload.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(payload);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    body
}

impl XdpFeatures {
    /// Opens the socket; fails on kernels without the netdev family (< 6.3).
    pub fn open() -> io::Result<XdpFeatures> {
        let mut nl = Netlink::open_protocol(libc::NETLINK_GENERIC, 0)?;
        let body = genl_body(CTRL_CMD_GETFAMILY, &[(CTRL_ATTR_FAMILY_NAME, b"netdev\0")]);
        let mut family = None;
        nl.request(GENL_ID_CTRL, &body, |_, answer| {
            for (kind, payload) in attrs(answer.get(GENL_HEADER_LEN..).unwrap_or(&[])) {
                if kind == CTRL_ATTR_FAMILY_ID && payload.len() >= 2 {
                    family = Some(u16::from_ne_bytes([payload[0], payload[1]]));
                }
            }
        })?;
        let family = family.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no generic netlink family netdev")
        })?;
        Ok(XdpFeatures { nl, family })
    }

    /// The `NETDEV_XDP_ACT_*` bits of device `ifindex`.
    pub fn of(&mut self, ifindex: u32) -> io::Result<u64> {
        let index = ifindex.to_ne_bytes();
        let body = genl_body(NETDEV_CMD_DEV_GET, &[(NETDEV_A_DEV_IFINDEX, &index)]);
        let mut features = None;
        self.nl.request(self.family, &body, |_, answer| {
            for (kind, payload) in attrs(answer.get(GENL_HEADER_LEN..).unwrap_or(&[])) {
                if kind == NETDEV_A_DEV_XDP_FEATURES && payload.len() >= 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&payload[..8]);
                    features = Some(u64::from_ne_bytes(b));
                }
            }
        })?;
        features.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no xdp-features for ifindex {ifindex}"),
            )
        })
    }

    /// Whether device `ifindex` accepts redirected XDP frames now.
    pub fn can_transmit(&mut self, ifindex: u32) -> bool {
        self.of(ifindex)
            .is_ok_and(|f| f & NETDEV_XDP_ACT_NDO_XMIT != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_is_padded_attributes_after_the_genl_header() {
        let b = genl_body(3, &[(2, b"netdev\0")]);
        assert_eq!(&b[..4], &[3, 1, 0, 0]);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 11);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 2);
        assert_eq!(&b[8..15], b"netdev\0");
        assert_eq!(b.len(), 16);
    }
}

//! The interfaces the BR serves, as both paths must see them: which one
//! each packet arrived on, its own MAC, and whether CEs are behind it.
//!
//! - Only frames sent to the interface's own MAC are relayed: a router
//!   forwards no frame addressed to another host or to a link-layer
//!   broadcast (RFC 1122 §3.3.6, RFC 1812 §5.3.4). The XDP program checks
//!   it for both paths, from the `if_info` map this module keeps in step
//!   with the kernel's link table (a MAC may change while running).
//! - Protocol 41 is accepted only on the interfaces that face the CEs
//!   (`ce-interfaces`; RFC 4213 §3.6 asks a decapsulator to filter by
//!   ingress interface): the XDP program drops it elsewhere, and the slow
//!   path checks the interface the kernel received it on.

use std::sync::Mutex;

use anyhow::Result;

use super::fib::Fib;
use super::xdp::{IfInfo, Steering};

/// The attached interfaces and the ones CEs are behind.
pub struct Interfaces {
    /// Attached interfaces (name, ifindex), in socket-slot order.
    ports: Vec<(String, u32)>,
    /// None: CEs may be behind any interface.
    ce_interfaces: Mutex<Option<Vec<String>>>,
    /// What the XDP map holds now, by slot.
    written: Mutex<Vec<Option<IfInfo>>>,
}

impl Interfaces {
    pub fn new(ports: Vec<(String, u32)>, ce_interfaces: Option<Vec<String>>) -> Interfaces {
        let written = Mutex::new(vec![None; ports.len()]);
        Interfaces {
            ports,
            ce_interfaces: Mutex::new(ce_interfaces),
            written,
        }
    }

    /// The attached interfaces (name, ifindex), in socket-slot order.
    pub fn ports(&self) -> &[(String, u32)] {
        &self.ports
    }

    /// A reload's new `ce-interfaces`; [`Interfaces::sync`] writes it.
    pub fn set_ce_interfaces(&self, ce_interfaces: Option<Vec<String>>) {
        *self.ce_interfaces.lock().unwrap_or_else(|e| e.into_inner()) = ce_interfaces;
    }

    /// Whether protocol 41 that arrived on `ifindex` may come from a CE.
    pub fn faces_ces(&self, fib: &Fib, ifindex: u32) -> bool {
        let ce = self.ce_interfaces.lock().unwrap_or_else(|e| e.into_inner());
        match ce.as_ref() {
            None => true,
            Some(names) => fib
                .link_name(ifindex)
                .is_some_and(|n| names.iter().any(|c| c == n)),
        }
    }

    /// Writes into the XDP map each attached interface whose entry
    /// changed (first call: all of them). Each write is atomic.
    pub fn sync(&self, steering: &mut Steering, fib: &Fib) -> Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, (name, ifindex)) in self.ports.iter().enumerate() {
            let info = IfInfo {
                ifindex: *ifindex,
                slot: slot as u32,
                mac: fib.link_mac(*ifindex).unwrap_or_default(),
                ce_facing: u8::from(self.faces_ces(fib, *ifindex)),
                fast: 0,
            };
            if written[slot] == Some(info) {
                continue;
            }
            if written[slot].is_some() {
                tracing::info!(
                    "{name}: MAC {} and ce-facing {} now in the XDP program",
                    mac_text(&info.mac),
                    info.ce_facing == 1
                );
            }
            steering.set_interface(*ifindex, info)?;
            written[slot] = Some(info);
        }
        Ok(())
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_41_is_accepted_only_where_the_ces_are() {
        let mut fib = Fib::default();
        fib.add_link(2, "lan0", [2, 0, 0, 0, 0, 2]);
        fib.add_link(3, "wan0", [2, 0, 0, 0, 0, 3]);
        fib.add_link(7, "ipsec0", [0; 6]);
        let ports = vec![("lan0".to_string(), 2), ("wan0".to_string(), 3)];
        let every = Interfaces::new(ports.clone(), None);
        assert!(every.faces_ces(&fib, 2) && every.faces_ces(&fib, 3));
        let only = Interfaces::new(ports, Some(vec!["wan0".into(), "ipsec0".into()]));
        assert!(!only.faces_ces(&fib, 2));
        assert!(only.faces_ces(&fib, 3));
        // An xfrm interface without XDP: what the kernel decrypted on it.
        assert!(only.faces_ces(&fib, 7));
        // An interface the FIB does not know (gone): refused.
        assert!(!only.faces_ces(&fib, 99));
        only.set_ce_interfaces(None);
        assert!(only.faces_ces(&fib, 2));
    }
}

//! Loading the XDP steering program (built from C by br-ebpf), filling its
//! maps from the configuration, attaching it, and reading its counters.
//!
//! Attachment goes through a bpf_link where the kernel has one, so the
//! program disappears with the daemon: a crash never leaves packets
//! steered to a socket nobody reads.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

use crate::config::XdpMode as ConfigMode;
use crate::relay::Domain;

/// The loaded program and its maps.
pub struct Steering {
    ebpf: Ebpf,
    links: Vec<XdpLinkId>,
    xsks: XskMap<MapData>,
    stats: PerCpuArray<MapData, u64>,
}

impl Steering {
    /// Loads the program and fills the BR-address and 6rd-prefix maps.
    pub fn load(domains: &[Domain]) -> Result<Steering> {
        let mut ebpf = Ebpf::load(br_ebpf::object()).context("loading the XDP object")?;
        {
            let program: &mut Xdp = ebpf
                .program_mut(br_ebpf::PROGRAM)
                .ok_or_else(|| anyhow!("no program {} in the object", br_ebpf::PROGRAM))?
                .try_into()?;
            program
                .load()
                .context("the kernel refused the XDP program")?;
        }
        let xsks = XskMap::try_from(take(&mut ebpf, br_ebpf::MAP_XSKS)?)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, br_ebpf::MAP_STATS)?)?;
        let mut steering = Steering {
            ebpf,
            links: Vec::new(),
            xsks,
            stats,
        };
        steering.set_domains(domains)?;
        Ok(steering)
    }

    /// Replaces what the program matches (on reload too).
    pub fn set_domains(&mut self, domains: &[Domain]) -> Result<()> {
        let mut brs: HashMap<&mut MapData, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(br_ebpf::MAP_BR_ADDRS)
                .ok_or_else(|| anyhow!("no map {}", br_ebpf::MAP_BR_ADDRS))?,
        )?;
        let old: Vec<u32> = brs.keys().filter_map(|k| k.ok()).collect();
        let wanted: Vec<Ipv4Addr> = domains
            .iter()
            .flat_map(|d| d.br_ipv4_all().to_vec())
            .collect();
        for k in old {
            if !wanted.iter().any(|a| u32::from(*a).to_be() == k) {
                brs.remove(&k)?;
            }
        }
        for a in &wanted {
            brs.insert(u32::from(*a).to_be(), 1, 0)?;
        }
        let mut prefixes: LpmTrie<&mut MapData, [u8; 16], u32> = LpmTrie::try_from(
            self.ebpf
                .map_mut(br_ebpf::MAP_SIXRD_PREFIXES)
                .ok_or_else(|| anyhow!("no map {}", br_ebpf::MAP_SIXRD_PREFIXES))?,
        )?;
        let old: Vec<Key<[u8; 16]>> = prefixes.keys().filter_map(|k| k.ok()).collect();
        for k in old {
            prefixes.remove(&k)?;
        }
        for (i, d) in domains.iter().enumerate() {
            let p = d.prefix();
            let key = Key::new(u32::from(p.prefix_len()), p.network().octets());
            prefixes.insert(&key, i as u32, 0)?;
        }
        Ok(())
    }

    /// Attaches to an interface; the link lives as long as `self`.
    pub fn attach(&mut self, interface: &str, mode: ConfigMode) -> Result<()> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(br_ebpf::PROGRAM)
            .expect("checked at load")
            .try_into()?;
        let mode = match mode {
            ConfigMode::Native => XdpMode::Driver,
            ConfigMode::Generic => XdpMode::Skb,
        };
        let link = program
            .attach(interface, mode)
            .with_context(|| format!("attaching XDP ({mode:?} mode) to {interface}"))?;
        self.links.push(link);
        Ok(())
    }

    /// Detaches from every interface: all their traffic goes to the kernel.
    pub fn detach_all(&mut self) {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(br_ebpf::PROGRAM)
            .expect("checked at load")
            .try_into()
            .expect("an XDP program");
        for link in self.links.drain(..) {
            if let Err(e) = program.detach(link) {
                tracing::warn!("detaching XDP: {e}");
            }
        }
    }

    /// Gives interface `ifindex` the socket slot number `slot`.
    pub fn add_interface(&mut self, ifindex: u32, slot: u32) -> Result<()> {
        anyhow::ensure!(
            slot < br_ebpf::MAX_INTERFACES,
            "at most {} interfaces",
            br_ebpf::MAX_INTERFACES
        );
        let mut slots: HashMap<&mut MapData, u32, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(br_ebpf::MAP_IF_SLOTS)
                .ok_or_else(|| anyhow!("no map {}", br_ebpf::MAP_IF_SLOTS))?,
        )?;
        slots.insert(ifindex, slot, 0)?;
        Ok(())
    }

    /// Points (interface slot, queue) at an AF_XDP socket.
    pub fn bind_socket(&mut self, slot: u32, queue: u32, socket: &impl AsRawFd) -> Result<()> {
        anyhow::ensure!(
            queue < br_ebpf::MAX_QUEUES,
            "at most {} queues",
            br_ebpf::MAX_QUEUES
        );
        self.xsks
            .set(slot * br_ebpf::MAX_QUEUES + queue, socket.as_raw_fd(), 0)
            .with_context(|| format!("XSKMAP entry for slot {slot} queue {queue}"))
    }

    /// Empties an entry: that queue's traffic goes to the kernel again.
    pub fn unbind_socket(&mut self, slot: u32, queue: u32) {
        let _ = self.xsks.unset(slot * br_ebpf::MAX_QUEUES + queue);
    }

    /// The program's counters, summed over CPUs, by `br_ebpf::STAT_*` index.
    pub fn stats(&self) -> Vec<u64> {
        (0..br_ebpf::STAT_COUNT)
            .map(|i| self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }

    /// The program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(br_ebpf::PROGRAM)
            .expect("checked at load")
            .try_into()
            .expect("an XDP program")
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("no map {name} in the XDP object"))
}

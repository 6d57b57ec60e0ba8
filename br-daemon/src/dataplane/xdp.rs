//! Loading the XDP steering program (built from C by br-ebpf), filling its
//! maps from the configuration, attaching it, and reading its counters.
//! The program's fast path reads each domain's parameters from the
//! `domains` map ([`DomainInfo`]) and redirects only to the interfaces in
//! `fast_egress`.
//!
//! Attachment goes through a bpf_link where the kernel has one, so the
//! program disappears with the daemon: a crash never leaves packets
//! steered to a socket nobody reads.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use ipnet::IpNet;

use super::ethtool;
use super::xdp_dev_bound::{self, DevBound};
use super::xdp_few::FewSets;
use super::xfrm::{Direction, Ipsec};
use crate::config::XdpMode as ConfigMode;
use crate::relay::Domain;

/// `struct domain_info` of steer_abi.h. aya checks its size against the
/// map's value size when the map is opened, so a drift fails loudly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainInfo {
    pub br_ipv6: [u8; 16],
    /// Network byte order.
    pub br_ipv4: u32,
    /// Host byte order.
    pub ipv4_common: u32,
    pub prefix_len: u32,
    pub embedded_bits: u32,
    pub mtu: u16,
    pub ttl: u8,
    pub fast: u8,
    pub ce_allow_count: u32,
    /// (network, mask), host byte order.
    pub ce_allow: [[u32; 2]; br_ebpf::MAX_CE_ALLOW as usize],
    /// 0: no clamp; else the fast path leaves TCP SYNs to the forwarder.
    pub tcp_mss: u16,
    pub pad: u16,
}

// SAFETY: repr(C), only integer fields and no padding (16 + 4 * 4 + 2 + 1 + 1
// + 4 + 8 * 8 + 2 + 2 = 108 bytes, 4-aligned), so every bit pattern is valid.
unsafe impl aya::Pod for DomainInfo {}

impl DomainInfo {
    /// What the fast path needs of `domain`.
    pub fn of(domain: &Domain, fast: bool) -> DomainInfo {
        DomainInfo {
            br_ipv6: domain.br_ipv6().octets(),
            br_ipv4: u32::from(domain.br_ipv4()).to_be(),
            ipv4_common: u32::from(domain.common_ipv4_prefix().network()),
            prefix_len: u32::from(domain.prefix().prefix_len()),
            embedded_bits: 32 - u32::from(domain.ipv4_mask_len()),
            mtu: domain.mtu(),
            ttl: domain.ttl(),
            fast: u8::from(fast),
            ce_allow_count: domain.ce_ipv4_allow().len() as u32,
            ce_allow: std::array::from_fn(|i| {
                domain
                    .ce_ipv4_allow()
                    .get(i)
                    .map_or([0, 0], |n| [u32::from(n.network()), u32::from(n.netmask())])
            }),
            tcp_mss: domain.tcp_mss().unwrap_or(0),
            pad: 0,
        }
    }
}

/// `struct if_info` of steer_abi.h: an attached interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfInfo {
    /// The interface; set by [`Steering::set_interface`].
    pub ifindex: u32,
    pub slot: u32,
    /// Its own MAC: only frames sent to it are relayed.
    pub mac: [u8; 6],
    /// 1: protocol 41 from CEs is accepted on it.
    pub ce_facing: u8,
    /// 1: the fast path is on; set by [`Steering::set_interface`] (and
    /// [`Steering::set_domains`]), so that with it off a frame skips the
    /// fast path's checks at once.
    pub fast: u8,
}

// SAFETY: repr(C), only integer fields and no padding (4 + 4 + 6 + 1 + 1 =
// 16 bytes, 4-aligned), so every bit pattern is valid.
unsafe impl aya::Pod for IfInfo {}

/// `struct fib_state` of steer_abi.h: the next-hop cache's generation and
/// whether each family may remember next hops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FibState {
    generation: u64,
    cache_ipv4: u32,
    cache_ipv6: u32,
}

// SAFETY: repr(C), integer fields only, no padding (8 + 4 + 4 = 16 bytes,
// 8-aligned): every bit pattern is valid.
unsafe impl aya::Pod for FibState {}

/// The loaded program and its maps.
pub struct Steering {
    ebpf: Ebpf,
    links: Vec<XdpLinkId>,
    /// The program's maps (name, fd), shared with the device-bound copies.
    maps: Vec<(String, OwnedFd)>,
    /// The interfaces where a device-bound copy runs instead.
    dev_bound: Vec<DevBound>,
    xsks: XskMap<MapData>,
    stats: PerCpuArray<MapData, u64>,
    declines: PerCpuArray<MapData, u64>,
    fast_egress: HashMap<MapData, u32, u8>,
    /// The XDP program's trace events; taken by the trace session.
    trace_ring: Option<RingBuf<MapData>>,
    /// Which half of the domain slots the trie points at now.
    generation: u32,
    /// What the next-hop cache was last told (IPv4, IPv6).
    next_hop_switches: (bool, bool),
    /// Whether the fast path is on (every domain's and interface's `fast`).
    fast: bool,
}

impl Steering {
    /// Loads the program and fills the BR-address, 6rd-prefix and domain
    /// maps; `fast` enables the XDP fast path.
    pub fn load(domains: &[Domain], fast: bool) -> Result<Steering> {
        let mut ebpf = Ebpf::load(br_ebpf::object()).context("loading the XDP object")?;
        let program: &mut Xdp = ebpf
            .program_mut(br_ebpf::PROGRAM)
            .ok_or_else(|| anyhow!("no program {} in the object", br_ebpf::PROGRAM))?
            .try_into()?;
        program
            .load()
            .context("the kernel refused the XDP program")?;
        let maps = maps_of(&ebpf)?;
        let xsks = XskMap::try_from(take(&mut ebpf, br_ebpf::MAP_XSKS)?)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, br_ebpf::MAP_STATS)?)?;
        let declines = PerCpuArray::try_from(take(&mut ebpf, br_ebpf::MAP_DECLINES)?)?;
        let fast_egress = HashMap::try_from(take(&mut ebpf, br_ebpf::MAP_FAST_EGRESS)?)?;
        let trace_ring = RingBuf::try_from(take(&mut ebpf, br_ebpf::MAP_TRACE_RING)?)?;
        let mut steering = Steering {
            ebpf,
            links: Vec::new(),
            maps,
            dev_bound: Vec::new(),
            xsks,
            stats,
            declines,
            fast_egress,
            trace_ring: Some(trace_ring),
            generation: 0,
            next_hop_switches: (false, false),
            fast,
        };
        steering.set_domains(domains, fast)?;
        steering.seed_ipv4_ids()?;
        Ok(steering)
    }

    /// Starts each CPU's IPv4 ID counter far from the others (and from the
    /// AF_XDP workers', which start at worker × 0x9e37) so that IDs of one
    /// CE's packets rarely collide.
    fn seed_ipv4_ids(&mut self) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut ids: PerCpuArray<&mut MapData, u32> =
            PerCpuArray::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_IPV4_IDS)?)?;
        let seeds: Vec<u32> = (0..cpus as u32)
            .map(|cpu| (cpu.wrapping_mul(0x9e37) + 0x4f1b) & 0xffff)
            .collect();
        ids.set(0, aya::maps::PerCpuValues::try_from(seeds)?, 0)?;
        Ok(())
    }

    /// Replaces what the program matches (on reload too), without a
    /// window: the domains are written to the half of the slots the trie
    /// does not use, then the trie is pointed at them (an LPM update
    /// replaces an entry atomically), then stale prefixes and BR addresses
    /// go. A packet sees the old configuration or the new, never neither.
    pub fn set_domains(&mut self, domains: &[Domain], fast: bool) -> Result<()> {
        anyhow::ensure!(
            domains.len() <= br_ebpf::MAX_PREFIXES as usize,
            "at most {} domains",
            br_ebpf::MAX_PREFIXES
        );
        let generation = self.generation.wrapping_add(1);
        let slot = |i: usize| (generation % 2) * br_ebpf::MAX_PREFIXES + i as u32;
        let mut infos: Array<&mut MapData, DomainInfo> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_DOMAINS)?)?;
        for (i, d) in domains.iter().enumerate() {
            infos.set(slot(i), DomainInfo::of(d, fast), 0)?;
        }
        let mut prefixes: LpmTrie<&mut MapData, [u8; 16], u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_SIXRD_PREFIXES)?)?;
        let key = |d: &Domain| {
            let p = d.prefix();
            Key::new(u32::from(p.prefix_len()), p.network().octets())
        };
        for (i, d) in domains.iter().enumerate() {
            prefixes.insert(&key(d), slot(i), 0)?;
        }
        let wanted: Vec<Key<[u8; 16]>> = domains.iter().map(key).collect();
        let old: Vec<Key<[u8; 16]>> = prefixes.keys().filter_map(|k| k.ok()).collect();
        for k in old {
            let kept = wanted
                .iter()
                .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data());
            if !kept {
                prefixes.remove(&k)?;
            }
        }
        self.generation = generation;
        let mut brs: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_BR_ADDRS)?)?;
        let wanted: Vec<u32> = domains
            .iter()
            .flat_map(|d| d.br_ipv4_all().iter().map(|a| u32::from(*a).to_be()))
            .collect();
        for a in &wanted {
            brs.insert(a, 1, 0)?;
        }
        let old: Vec<u32> = brs.keys().filter_map(|k| k.ok()).collect();
        for k in old.into_iter().filter(|k| !wanted.contains(k)) {
            brs.remove(&k)?;
        }
        self.set_few(FewSets::of(domains, slot), generation % 2)?;
        if fast != self.fast {
            self.fast = fast;
            self.set_interfaces_fast(fast)?;
        }
        // A CE's remembered next hop vouches for its domain's checks.
        self.renew_generation()
    }

    /// Rewrites every attached interface's entry with `fast`.
    fn set_interfaces_fast(&mut self, fast: bool) -> Result<()> {
        let mut map: Array<&mut MapData, IfInfo> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_IF_INFO)?)?;
        for entry in 0..br_ebpf::MAX_IF_TABLE {
            let info = map.get(&entry, 0)?;
            if info.ifindex != 0 {
                let fast = u8::from(fast);
                map.set(entry, IfInfo { fast, ..info }, 0)?;
            }
        }
        Ok(())
    }

    /// Writes `sets` to copy `which` of `few_sets`, then makes it the one
    /// the program reads (the other copy may be in use until then).
    fn set_few(&mut self, sets: FewSets, which: u32) -> Result<()> {
        let mut copies: Array<&mut MapData, FewSets> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_FEW_SETS)?)?;
        copies.set(which, sets, 0)?;
        let mut current: Array<&mut MapData, u32> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_FEW_CURRENT)?)?;
        current.set(0, which, 0)?;
        Ok(())
    }

    /// Attaches to an interface; the link lives as long as `self`. In
    /// native mode a device-bound copy that reads VLAN metadata is tried
    /// first ([`xdp_dev_bound`]); where the kernel has none, the shared
    /// program, with a warning if the driver strips VLAN tags.
    pub fn attach(&mut self, interface: &str, mode: ConfigMode) -> Result<()> {
        let ifindex = ifindex_of(interface)?;
        let why_blind = match mode {
            ConfigMode::Native => match xdp_dev_bound::attach(ifindex, &self.maps) {
                Ok(copy) => {
                    self.dev_bound.push(copy);
                    tracing::info!("{interface}: XDP reads VLAN tags the driver strips");
                    return Ok(());
                }
                Err(e) => format!("{e:#}"),
            },
            ConfigMode::Generic => "generic XDP runs before the kernel restores it".to_string(),
        };
        warn_if_vlan_tags_hidden(interface, ifindex, &why_blind);
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
    /// Whether the program is attached to at least one interface.
    pub fn is_attached(&self) -> bool {
        !self.links.is_empty() || !self.dev_bound.is_empty()
    }

    pub fn detach_all(&mut self) {
        self.dev_bound.clear();
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

    /// Describes attached interface `ifindex` (its socket slot, MAC and
    /// role); replaces what was there in one atomic map update. Fails for
    /// an interface whose table entry another one holds.
    pub fn set_interface(&mut self, ifindex: u32, info: IfInfo) -> Result<()> {
        anyhow::ensure!(
            info.slot < br_ebpf::MAX_INTERFACES,
            "at most {} interfaces",
            br_ebpf::MAX_INTERFACES
        );
        let mut map: Array<&mut MapData, IfInfo> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_IF_INFO)?)?;
        let entry = ifindex % br_ebpf::MAX_IF_TABLE;
        let held = map.get(&entry, 0)?.ifindex;
        anyhow::ensure!(
            held == 0 || held == ifindex,
            "interfaces with ifindex {held} and {ifindex} share XDP table entry {entry} \
             (ifindex modulo {}): attach one of them only",
            br_ebpf::MAX_IF_TABLE
        );
        let fast = u8::from(self.fast);
        map.set(
            entry,
            IfInfo {
                ifindex,
                fast,
                ..info
            },
            0,
        )?;
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
        sum_over_cpus(&self.stats, br_ebpf::STAT_COUNT)
    }

    /// Why the fast path left packets to the forwarder, by `br_ebpf::DECLINE_*` index.
    pub fn declines(&self) -> Vec<u64> {
        sum_over_cpus(&self.declines, br_ebpf::DECLINE_COUNT)
    }

    /// Mirrors the kernel's IPsec policies into the program's tries: the
    /// fast path declines what outbound policies cover, and protocol 41
    /// that inbound policies require encrypted goes to the kernel.
    /// `br_addrs` are the BR IPv4 addresses (the local side of the
    /// policies that matter). New entries go in before stale ones leave.
    pub fn set_ipsec(&mut self, ipsec: &Ipsec, br_addrs: &[IpAddr]) -> Result<()> {
        for (map, dir, v4) in [
            (br_ebpf::MAP_IPSEC_OUT4, Direction::Out, true),
            (br_ebpf::MAP_IPSEC_IN4, Direction::In, true),
            (br_ebpf::MAP_IPSEC_OUT6, Direction::Out, false),
        ] {
            let wanted = ipsec.remote_prefixes(dir, v4, br_addrs);
            anyhow::ensure!(
                wanted.len() <= br_ebpf::MAX_IPSEC_PREFIXES as usize,
                "{} IPsec prefixes in {map}: the XDP program holds {}",
                wanted.len(),
                br_ebpf::MAX_IPSEC_PREFIXES
            );
            let data = map_mut(&mut self.ebpf, map)?;
            if v4 {
                let keys = wanted.iter().filter_map(|n| match n {
                    IpNet::V4(n) => Some(Key::new(u32::from(n.prefix_len()), n.addr().octets())),
                    IpNet::V6(_) => None,
                });
                replace_trie(LpmTrie::<_, [u8; 4], u8>::try_from(data)?, keys.collect())?;
            } else {
                let keys = wanted.iter().filter_map(|n| match n {
                    IpNet::V6(n) => Some(Key::new(u32::from(n.prefix_len()), n.addr().octets())),
                    IpNet::V4(_) => None,
                });
                replace_trie(LpmTrie::<_, [u8; 16], u8>::try_from(data)?, keys.collect())?;
            }
        }
        // A CE's remembered next hop vouches it is not under a policy.
        self.renew_generation()
    }

    /// Makes `ifindexes` the interfaces the fast path may redirect to.
    pub fn set_fast_egress(&mut self, ifindexes: &[u32]) -> Result<()> {
        let old: Vec<u32> = self.fast_egress.keys().filter_map(|k| k.ok()).collect();
        for k in old {
            if !ifindexes.contains(&k) {
                self.fast_egress.remove(&k)?;
            }
        }
        for &i in ifindexes {
            self.fast_egress.insert(i, 1, 0)?;
        }
        // The next-hop cache remembers whether an egress was in the set.
        self.renew_generation()
    }

    /// Turns the XDP program's tracing on or off (`trace_on`).
    pub fn set_trace(&mut self, on: bool) -> Result<()> {
        let mut map: Array<&mut MapData, u32> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_TRACE_ON)?)?;
        map.set(0, u32::from(on), 0)?;
        Ok(())
    }

    /// The trace ring, for one trace session at a time (None: taken).
    pub fn take_trace_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.trace_ring.take()
    }

    /// Returns the ring when the session ends.
    pub fn give_back_trace_ring(&mut self, ring: RingBuf<MapData>) {
        self.trace_ring = Some(ring);
    }

    /// A new generation of the next-hop cache with the switches as they
    /// are: what remembered answers vouched for may have changed.
    fn renew_generation(&mut self) -> Result<()> {
        let (v4, v6) = self.next_hop_switches;
        self.renew_next_hops(v4, v6)
    }

    /// The next-hop cache: a new generation, so that every next hop the
    /// program remembered is looked up in the kernel again, and whether
    /// each family may remember (the cache is off until this is called).
    pub fn renew_next_hops(&mut self, cache_ipv4: bool, cache_ipv6: bool) -> Result<()> {
        let mut map: Array<&mut MapData, FibState> =
            Array::try_from(map_mut(&mut self.ebpf, br_ebpf::MAP_FIB_STATE)?)?;
        let generation = map.get(&0, 0)?.generation.wrapping_add(1);
        let state = FibState {
            generation,
            cache_ipv4: u32::from(cache_ipv4),
            cache_ipv6: u32::from(cache_ipv6),
        };
        map.set(0, state, 0)?;
        self.next_hop_switches = (cache_ipv4, cache_ipv6);
        Ok(())
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

/// The object's maps, by name, for the device-bound copies: our own
/// descriptors duplicated (asking the kernel by map id would need
/// CAP_SYS_ADMIN, which the daemon does not have under its unit).
fn maps_of(ebpf: &Ebpf) -> Result<Vec<(String, OwnedFd)>> {
    ebpf.maps()
        .map(|(name, map)| {
            let data = match map {
                Map::Array(d)
                | Map::HashMap(d)
                | Map::LpmTrie(d)
                | Map::PerCpuArray(d)
                | Map::RingBuf(d)
                | Map::XskMap(d) => d,
                _ => bail!("map {name}: a type the device-bound copy does not expect"),
            };
            let fd = data.fd().as_fd().try_clone_to_owned()?;
            Ok((name.to_string(), fd))
        })
        .collect()
}

fn ifindex_of(interface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(interface)?;
    // SAFETY: a NUL-terminated name that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(anyhow!("no interface {interface}")),
        i => Ok(i),
    }
}

/// A frame whose tag the driver took off looks untagged to XDP: say so
/// where that can happen, with what to do about it.
fn warn_if_vlan_tags_hidden(interface: &str, ifindex: u32, why: &str) {
    match ethtool::strips_vlan_tags(ifindex) {
        Ok(true) => tracing::warn!(
            "{interface} strips VLAN tags and XDP cannot read them here ({why}): a tagged \
             frame would be relayed as if untagged. Run `ethtool -K {interface} rxvlan off` \
             (tagged frames then go to the kernel), or kernel 6.8+ in native mode"
        ),
        Ok(false) => tracing::debug!("{interface}: VLAN tags stay in the frame ({why})"),
        Err(e) => tracing::debug!("{interface}: VLAN offload unknown ({e}); {why}"),
    }
}

/// Makes `wanted` the keys of an LPM trie: adds first, then removes the
/// keys no longer wanted.
fn replace_trie<K: aya::Pod + PartialEq>(
    mut trie: LpmTrie<&mut MapData, K, u8>,
    wanted: Vec<Key<K>>,
) -> Result<()> {
    for k in &wanted {
        trie.insert(k, 1, 0)?;
    }
    let old: Vec<Key<K>> = trie.keys().filter_map(|k| k.ok()).collect();
    for k in old {
        if !wanted
            .iter()
            .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data())
        {
            trie.remove(&k)?;
        }
    }
    Ok(())
}

/// Entries `0..count` of a per-CPU counter array, each summed over CPUs.
fn sum_over_cpus(counters: &PerCpuArray<MapData, u64>, count: u32) -> Vec<u64> {
    (0..count)
        .map(|i| counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
        .collect()
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("no map {name} in the XDP object"))
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("no map {name} in the XDP object"))
}

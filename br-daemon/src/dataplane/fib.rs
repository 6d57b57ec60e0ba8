//! Next hops from the kernel: a snapshot of its routes, neighbours and
//! links read over rtnetlink (RFC 3549; `man 7 rtnetlink`), rebuilt when
//! the kernel announces a change, and published to the workers through
//! [`Published`] (no lock on the packet path).
//!
//! The forwarder never keeps static MACs: a destination whose neighbour
//! the kernel has not resolved goes through the kernel (slow path), which
//! resolves it; the resulting neighbour event refreshes the snapshot.
//!
//! Multipath routes (ECMP, `RTA_MULTIPATH`) keep every live next hop with
//! its weight; a destination picks one by a hash of the destination
//! address, so packets to one destination keep one path (no reordering)
//! and destinations spread over the paths by weight. The kernel's own
//! choice (and so the XDP fast path's, through `bpf_fib_lookup`) hashes
//! with a secret seed and may pick another of the same paths: either is
//! a valid path of the route. Dead next hops (`RTNH_F_DEAD`) are skipped,
//! as the kernel skips them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::fib_index::{FastHash, Prefix, RouteIndex};
use super::fib_rules::{self, Rule, RuleAction};
use super::publish::Published;
use super::xfrm::Ipsec;

/// A MAC address.
pub type Mac = [u8; 6];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteKind {
    Unicast,
    Local,
    /// blackhole, unreachable, prohibit.
    Reject,
    /// throw: go on with the next rule.
    Throw,
    /// A subnet's broadcast address (local table).
    Broadcast,
}

/// One next hop of a route.
#[derive(Clone, Debug)]
struct Hop {
    oif: u32,
    gateway: Option<IpAddr>,
    /// ECMP weight (rtnexthop hops + 1); 1 for a single-path route.
    weight: u32,
}

#[derive(Clone, Debug)]
struct Route {
    dst: u128,
    len: u8,
    /// Address width in bits (32 or 128), to build masks.
    width: u8,
    kind: RouteKind,
    /// The live next hops; none when every one is dead (the route is
    /// then skipped, as the kernel skips it).
    hops: Vec<Hop>,
    table: u32,
    priority: u32,
    /// The route's own MTU metric (`ip route ... mtu N`), if any.
    mtu: Option<u32>,
}

impl Prefix for Route {
    fn table(&self) -> u32 {
        self.table
    }
    fn width(&self) -> u8 {
        self.width
    }
    fn prefix_len(&self) -> u8 {
        self.len
    }
    fn bits(&self) -> u128 {
        self.dst
    }
}

impl Route {
    /// The next hop for a destination: by weight, from a hash of it.
    fn hop_for(&self, dst: u128) -> Option<&Hop> {
        if self.hops.len() <= 1 {
            return self.hops.first();
        }
        let total: u64 = self.hops.iter().map(|h| u64::from(h.weight)).sum();
        let folded = (dst as u64) ^ ((dst >> 64) as u64);
        // Fibonacci hashing: the high bits mix every input bit.
        let mut pick = (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % total.max(1);
        for hop in &self.hops {
            if pick < u64::from(hop.weight) {
                return Some(hop);
            }
            pick -= u64::from(hop.weight);
        }
        self.hops.last()
    }
}

/// Where a packet for a destination goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// Out of `ifindex` to `dst_mac`.
    Direct {
        ifindex: u32,
        src_mac: Mac,
        dst_mac: Mac,
        /// The route's MTU, or the link's (None: the kernel did not say).
        mtu: Option<u32>,
    },
    /// A route exists but the neighbour is not (yet) known: let the kernel resolve it.
    Unresolved { ifindex: u32, mtu: Option<u32> },
    /// One of the host's own addresses.
    Local,
    /// No route, or a reject route.
    Unreachable,
    /// The broadcast address of a subnet the host is on.
    Broadcast,
}

impl NextHop {
    /// The MTU of the way out, when the packet leaves by a link.
    pub fn mtu(&self) -> Option<u32> {
        match *self {
            NextHop::Direct { mtu, .. } | NextHop::Unresolved { mtu, .. } => mtu,
            NextHop::Local | NextHop::Unreachable | NextHop::Broadcast => None,
        }
    }
}

/// One snapshot of the kernel's forwarding state.
#[derive(Clone, Debug, Default)]
pub struct Fib {
    routes: Vec<Route>,
    /// The routes' longest-prefix index, built with a kernel snapshot (or
    /// at the first lookup); whatever changes `routes` resets it.
    index: OnceLock<RouteIndex>,
    neighbours: HashMap<(u32, IpAddr), Mac, FastHash>,
    link_macs: HashMap<u32, Mac, FastHash>,
    link_names: HashMap<u32, String>,
    link_mtus: HashMap<u32, u32, FastHash>,
    /// The kernel's IPsec policies (xfrm), read on their own socket.
    ipsec: Arc<Ipsec>,
    /// The routing rules by priority; empty: the kernel's defaults.
    rules: Vec<Rule>,
}

#[cfg(test)]
const TABLE_LOCAL: u32 = 255;
const TABLE_MAIN: u32 = 254;

impl Fib {
    /// The next hop for `dst` (from `src`, when known), through the
    /// tables the rules select, as the kernel's fib_lookup does.
    fn lookup(&self, src: Option<IpAddr>, dst: IpAddr) -> NextHop {
        let (bits, width) = to_bits(dst);
        let src = src.map(|s| to_bits(s).0);
        let defaults = fib_rules::default_rules(width);
        let rules: &[Rule] = if self.rules.iter().any(|r| r.width == width) {
            &self.rules
        } else {
            &defaults
        };
        let mut resume_at = 0;
        for rule in rules.iter().filter(|r| r.width == width) {
            if rule.priority < resume_at || !rule.matches(src, bits) {
                continue;
            }
            match rule.action {
                RuleAction::Nop => {}
                RuleAction::Goto(priority) => resume_at = priority.max(rule.priority + 1),
                RuleAction::Reject => return NextHop::Unreachable,
                RuleAction::Table(table) => {
                    if let Some(hop) = self.lookup_table(table, bits, width, dst, rule) {
                        return hop;
                    }
                }
            }
        }
        NextHop::Unreachable
    }

    /// The answer of one table, or None to go on with the next rule.
    fn lookup_table(
        &self,
        table: u32,
        bits: u128,
        width: u8,
        dst: IpAddr,
        rule: &Rule,
    ) -> Option<NextHop> {
        let index = self.index.get_or_init(|| RouteIndex::new(&self.routes));
        let at = index.best(
            table,
            width,
            bits,
            &self.routes,
            |r| r.kind != RouteKind::Unicast || !r.hops.is_empty(),
            |r| r.priority,
        )?;
        let route = &self.routes[at];
        if rule.suppress_prefixlen.is_some_and(|l| route.len <= l) {
            return None;
        }
        Some(match route.kind {
            RouteKind::Throw => return None,
            RouteKind::Local => NextHop::Local,
            RouteKind::Broadcast => NextHop::Broadcast,
            RouteKind::Reject => NextHop::Unreachable,
            RouteKind::Unicast => {
                let Some(hop) = route.hop_for(bits) else {
                    return Some(NextHop::Unreachable);
                };
                let neighbour = hop.gateway.unwrap_or(dst);
                let mtu = route.mtu.or_else(|| self.link_mtus.get(&hop.oif).copied());
                match (
                    self.neighbours.get(&(hop.oif, neighbour)),
                    self.link_macs.get(&hop.oif),
                ) {
                    (Some(dst_mac), Some(src_mac)) => NextHop::Direct {
                        ifindex: hop.oif,
                        src_mac: *src_mac,
                        dst_mac: *dst_mac,
                        mtu,
                    },
                    _ => NextHop::Unresolved {
                        ifindex: hop.oif,
                        mtu,
                    },
                }
            }
        })
    }

    /// Next hop for a packet `src -> dst`: rules may select on the source.
    pub fn lookup_from(&self, src: IpAddr, dst: IpAddr) -> NextHop {
        self.lookup(Some(src), dst)
    }

    /// Next hop for an IPv4 destination.
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> NextHop {
        self.lookup(None, IpAddr::V4(dst))
    }

    /// Next hop for an IPv6 destination.
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> NextHop {
        self.lookup(None, IpAddr::V6(dst))
    }

    /// Whether the routing rules of the family of `width` (32 or 128) are
    /// the kernel's defaults (local, main, default): then a next hop
    /// depends on the destination and the ingress alone, and the XDP
    /// program may remember it.
    pub fn default_rules(&self, width: u8) -> bool {
        let defaults = fib_rules::default_rules(width);
        self.rules
            .iter()
            .filter(|r| r.width == width)
            .all(|r| defaults.contains(r))
    }

    /// The kernel's IPsec policies as of this snapshot.
    pub fn ipsec(&self) -> &Ipsec {
        &self.ipsec
    }

    /// Replaces the IPsec policies.
    pub fn set_ipsec(&mut self, ipsec: Arc<Ipsec>) {
        self.ipsec = ipsec;
    }

    /// Interface index of a name.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.link_names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(i, _)| *i)
    }

    /// Name of an interface.
    pub fn link_name(&self, ifindex: u32) -> Option<&str> {
        self.link_names.get(&ifindex).map(String::as_str)
    }

    /// MAC address of an interface.
    pub fn link_mac(&self, ifindex: u32) -> Option<Mac> {
        self.link_macs.get(&ifindex).copied()
    }

    /// Adds a link (tests and tools; the daemon reads links from the kernel).
    pub fn add_link(&mut self, ifindex: u32, name: &str, mac: Mac) {
        self.link_names.insert(ifindex, name.to_string());
        self.link_macs.insert(ifindex, mac);
    }

    /// Sets a link's MTU (tests and tools).
    pub fn set_link_mtu(&mut self, ifindex: u32, mtu: u32) {
        self.link_mtus.insert(ifindex, mtu);
    }

    /// Adds a unicast route in the main table.
    pub fn add_route(&mut self, dst: ipnet::IpNet, oif: u32, gateway: Option<IpAddr>) {
        let (bits, width) = match dst.network() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        self.index = OnceLock::new();
        self.routes.push(Route {
            dst: bits,
            len: dst.prefix_len(),
            width,
            kind: RouteKind::Unicast,
            hops: vec![Hop {
                oif,
                gateway,
                weight: 1,
            }],
            table: TABLE_MAIN,
            priority: 0,
            mtu: None,
        });
    }

    /// Adds routes (tests and the snapshot).
    fn extend_routes(&mut self, routes: impl IntoIterator<Item = Route>) {
        self.index = OnceLock::new();
        self.routes.extend(routes);
    }

    /// Replaces the routes (tests).
    #[cfg(test)]
    fn set_routes(&mut self, routes: Vec<Route>) {
        self.index = OnceLock::new();
        self.routes = routes;
    }

    /// Adds a resolved neighbour.
    pub fn add_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: Mac) {
        self.neighbours.insert((ifindex, addr), mac);
    }
}

fn to_bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

pub(super) fn prefix_match(addr: u128, net: u128, len: u8, width: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = u32::from(width - len.min(width));
    (addr >> shift) == (net >> shift)
}

// --- rtnetlink wire format (linux/netlink.h, linux/rtnetlink.h) ---

const NLMSG_HDRLEN: usize = 16;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const RTA_METRICS: u16 = 8;
const RTAX_MTU: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTN_BROADCAST: u8 = 3;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
const RTN_THROW: u8 = 9;
const RTNH_F_DEAD: u32 = 1;

const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
const NUD_NONE: u16 = 0x00;

/// Iterates over rtattrs: (type, payload).
pub(super) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, payload))
    })
}

pub(super) fn ip_from(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (libc::AF_INET6, 16) => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn u32_from(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Parses one RTM_NEWROUTE body (rtmsg + attributes).
fn parse_route(body: &[u8]) -> Option<Route> {
    if body.len() < 12 {
        return None;
    }
    let family = body[0];
    let width = match i32::from(family) {
        libc::AF_INET => 32,
        libc::AF_INET6 => 128,
        _ => return None,
    };
    let kind = match body[7] {
        RTN_UNICAST => RouteKind::Unicast,
        RTN_LOCAL => RouteKind::Local,
        RTN_BLACKHOLE | RTN_UNREACHABLE | RTN_PROHIBIT => RouteKind::Reject,
        RTN_THROW => RouteKind::Throw,
        RTN_BROADCAST => RouteKind::Broadcast,
        _ => return None, // multicast, anycast: not for unicast forwarding
    };
    let rtm_flags = u32_from(&body[8..12])?;
    let mut r = Route {
        dst: 0,
        len: body[1],
        width,
        kind,
        hops: Vec::new(),
        table: u32::from(body[4]),
        priority: 0,
        mtu: None,
    };
    let mut single = Hop {
        oif: 0,
        gateway: None,
        weight: 1,
    };
    let mut multipath = None;
    for (t, p) in attrs(&body[12..]) {
        match t {
            RTA_DST => {
                r.dst = match ip_from(family, p)? {
                    IpAddr::V4(a) => u128::from(u32::from(a)),
                    IpAddr::V6(a) => u128::from(a),
                }
            }
            RTA_GATEWAY => single.gateway = ip_from(family, p),
            RTA_OIF => single.oif = u32_from(p)?,
            RTA_PRIORITY => r.priority = u32_from(p)?,
            RTA_TABLE => r.table = u32_from(p)?,
            RTA_MULTIPATH => multipath = Some(parse_multipath(family, p)),
            RTA_METRICS => {
                r.mtu = attrs(p)
                    .find(|&(t, _)| t == RTAX_MTU)
                    .and_then(|(_, v)| u32_from(v))
                    .filter(|&m| m > 0)
            }
            _ => {}
        }
    }
    r.hops = match multipath {
        Some(hops) => hops,
        None if rtm_flags & RTNH_F_DEAD != 0 => Vec::new(),
        None => vec![single],
    };
    Some(r)
}

/// The live next hops of an `RTA_MULTIPATH` attribute: a sequence of
/// struct rtnexthop (len u16, flags u8, hops u8, ifindex i32), each
/// followed by its own attributes (the gateway).
fn parse_multipath(family: u8, mut p: &[u8]) -> Vec<Hop> {
    let mut hops = Vec::new();
    while p.len() >= 8 {
        let len = usize::from(u16::from_ne_bytes([p[0], p[1]]));
        if len < 8 || len > p.len() {
            break;
        }
        let flags = u32::from(p[2]);
        let mut hop = Hop {
            oif: u32::from_ne_bytes([p[4], p[5], p[6], p[7]]),
            gateway: None,
            weight: u32::from(p[3]) + 1,
        };
        for (t, a) in attrs(&p[8..len]) {
            if t == RTA_GATEWAY {
                hop.gateway = ip_from(family, a);
            }
        }
        if flags & RTNH_F_DEAD == 0 {
            hops.push(hop);
        }
        p = &p[len.next_multiple_of(4).min(p.len())..];
    }
    hops
}

/// Parses one RTM_NEWNEIGH body: ((ifindex, address), MAC) when usable.
fn parse_neighbour(body: &[u8]) -> Option<((u32, IpAddr), Mac)> {
    if body.len() < 12 {
        return None;
    }
    let family = body[0];
    let ifindex = u32::try_from(i32::from_ne_bytes(body[4..8].try_into().ok()?)).ok()?;
    let state = u16::from_ne_bytes([body[8], body[9]]);
    if state == NUD_NONE || state & (NUD_INCOMPLETE | NUD_FAILED) != 0 {
        return None;
    }
    let mut dst = None;
    let mut mac = None;
    for (t, p) in attrs(&body[12..]) {
        match t {
            NDA_DST => dst = ip_from(family, p),
            NDA_LLADDR if p.len() == 6 => mac = p.try_into().ok(),
            _ => {}
        }
    }
    Some(((ifindex, dst?), mac?))
}

/// What an RTM_NEWLINK says of a link.
struct Link {
    ifindex: u32,
    name: Option<String>,
    mac: Option<Mac>,
    mtu: Option<u32>,
}

/// Parses one RTM_NEWLINK body.
fn parse_link(body: &[u8]) -> Option<Link> {
    if body.len() < 16 {
        return None;
    }
    let ifindex = u32::try_from(i32::from_ne_bytes(body[4..8].try_into().ok()?)).ok()?;
    let mut name = None;
    let mut mac = None;
    let mut mtu = None;
    for (t, p) in attrs(&body[16..]) {
        match t {
            IFLA_IFNAME => {
                name = Some(String::from_utf8_lossy(p.split(|&b| b == 0).next()?).into_owned())
            }
            IFLA_ADDRESS if p.len() == 6 => mac = p.try_into().ok(),
            IFLA_MTU => mtu = u32_from(p),
            _ => {}
        }
    }
    Some(Link {
        ifindex,
        name,
        mac,
        mtu,
    })
}

/// A netlink socket (NETLINK_ROUTE, or NETLINK_GENERIC for xdp_features).
pub(super) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

const NLM_F_ACK: u16 = 0x4;

impl Netlink {
    fn open(groups: u32) -> io::Result<Netlink> {
        Netlink::open_protocol(libc::NETLINK_ROUTE, groups)
    }

    pub(super) fn open_protocol(protocol: i32, groups: u32) -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        // SAFETY: addr is a live sockaddr_nl of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends a dump request and calls `each(type, body)` per answer.
    fn dump(
        &mut self,
        kind: u16,
        family: u8,
        header_len: usize,
        each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let mut body = vec![0u8; header_len];
        body[0] = family;
        self.exchange(kind, NLM_F_DUMP, &body, each)
    }

    /// Sends a dump request with `body` as it is and calls `each(type,
    /// body)` per answer.
    pub(super) fn dump_body(
        &mut self,
        kind: u16,
        body: &[u8],
        each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.exchange(kind, NLM_F_DUMP, body, each)
    }

    /// Sends one request with `body` and an acknowledgement wanted, and
    /// calls `each(type, body)` per answer.
    pub(super) fn request(
        &mut self,
        kind: u16,
        body: &[u8],
        each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.exchange(kind, NLM_F_ACK, body, each)
    }

    fn exchange(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.seq += 1;
        let mut req = vec![0u8; NLMSG_HDRLEN];
        req.extend_from_slice(body);
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&kind.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // SAFETY: req is a live buffer of the length passed.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: buf is a live, writable buffer of the length passed.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
                if len < NLMSG_HDRLEN || len > msgs.len() {
                    break;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(msgs[16..20].try_into().expect("4 bytes"));
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        return Ok(());
                    }
                    _ => each(kind, &msgs[NLMSG_HDRLEN..len]),
                }
                msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
            }
        }
    }
}

/// Reads a complete snapshot from the kernel.
pub fn snapshot() -> io::Result<Fib> {
    let mut nl = Netlink::open(0)?;
    let mut fib = Fib::default();
    nl.dump(RTM_GETLINK, libc::AF_UNSPEC as u8, 16, |kind, body| {
        if kind == RTM_NEWLINK {
            if let Some(link) = parse_link(body) {
                let i = link.ifindex;
                if let Some(n) = link.name {
                    fib.link_names.insert(i, n);
                }
                if let Some(m) = link.mac {
                    fib.link_macs.insert(i, m);
                }
                if let Some(m) = link.mtu {
                    fib.link_mtus.insert(i, m);
                }
            }
        }
    })?;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        nl.dump(RTM_GETROUTE, family, 12, |kind, body| {
            if kind == RTM_NEWROUTE {
                fib.extend_routes(parse_route(body));
            }
        })?;
        nl.dump(fib_rules::RTM_GETRULE, family, 12, |kind, body| {
            if kind == fib_rules::RTM_NEWRULE {
                fib.rules.extend(fib_rules::parse_rule(body));
            }
        })?;
        nl.dump(RTM_GETNEIGH, family, 12, |kind, body| {
            if kind == RTM_NEWNEIGH {
                if let Some((k, mac)) = parse_neighbour(body) {
                    fib.neighbours.insert(k, mac);
                }
            }
        })?;
    }
    fib.rules.sort_by_key(|r| r.priority);
    // Here, in the netlink thread, not at a worker's first packet.
    fib.index.get_or_init(|| RouteIndex::new(&fib.routes));
    Ok(fib)
}

/// Multicast groups: links, neighbours, IPv4/IPv6 routes and addresses,
/// IPv4/IPv6 rules.
const MONITOR_GROUPS: u32 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x40000;

/// Watches the kernel's routes, neighbours and links (rtnetlink) and its
/// IPsec policies (NETLINK_XFRM), and republishes a snapshot after each
/// change (changes within 20 ms are taken together). `on_ipsec` gets each
/// new set of policies before the snapshot that carries it is published
/// (the daemon mirrors them into the XDP program first). Runs until `stop`.
pub fn monitor(
    cell: Arc<Published<Fib>>,
    stop: Arc<AtomicBool>,
    mut on_ipsec: impl FnMut(&Ipsec),
) -> io::Result<()> {
    let routes = Netlink::open(MONITOR_GROUPS)?;
    // None where the kernel has no xfrm_user: no `ip xfrm` policy exists.
    let xfrm = Netlink::open_protocol(libc::NETLINK_XFRM, super::xfrm::XFRM_GROUPS).ok();
    let mut ipsec = Arc::clone(&cell.get().ipsec);
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let mut pfds: Vec<libc::pollfd> = [Some(&routes), xfrm.as_ref()]
            .into_iter()
            .flatten()
            .map(|nl| libc::pollfd {
                fd: nl.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a live array of pollfds of the length passed.
        let ready = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
        if ready <= 0 {
            continue;
        }
        std::thread::sleep(Duration::from_millis(20));
        // Drain everything queued; the content does not matter, a fresh
        // dump follows. ENOBUFS (overrun) is handled the same way.
        drain(&routes, &mut buf);
        if let Some(x) = &xfrm {
            if drain(x, &mut buf) {
                match super::xfrm::snapshot() {
                    Ok(new) => {
                        ipsec = Arc::new(new);
                        on_ipsec(&ipsec);
                    }
                    Err(e) => {
                        tracing::warn!("xfrm dump failed, keeping the previous IPsec policies: {e}")
                    }
                }
            }
        }
        match snapshot() {
            Ok(mut fib) => {
                fib.ipsec = Arc::clone(&ipsec);
                cell.publish(fib)
            }
            Err(e) => tracing::warn!("rtnetlink dump failed, keeping the previous next hops: {e}"),
        }
    }
    Ok(())
}

/// What one batch of rtnetlink notifications held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Changes {
    /// Something changed (or notifications were lost).
    pub any: bool,
    /// A routing rule was added or removed (or notifications were lost).
    pub rules: bool,
}

/// Netconf groups (forwarding switched on or off) besides MONITOR_GROUPS.
const NETCONF_GROUPS: u32 = (1 << (24 - 1)) | (1 << (25 - 1));

/// Calls `batch` after every batch of rtnetlink notifications (links,
/// neighbours, addresses, routes, rules, netconf), at once, and every
/// 200 ms without any; until `stop`. For the XDP program's next-hop
/// cache, whose every entry a change may have made stale.
pub fn watch_changes(stop: Arc<AtomicBool>, mut batch: impl FnMut(Changes)) -> io::Result<()> {
    let nl = Netlink::open(MONITOR_GROUPS | NETCONF_GROUPS)?;
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: nl.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 200) };
        let changes = if ready > 0 {
            drain_kinds(&nl, &mut buf)
        } else {
            Changes::default()
        };
        batch(changes);
    }
    Ok(())
}

/// Reads everything queued on a monitoring socket: what it held.
fn drain_kinds(nl: &Netlink, buf: &mut [u8]) -> Changes {
    let mut changes = Changes::default();
    loop {
        // SAFETY: buf is live and writable for its length.
        let n = unsafe {
            libc::recv(
                nl.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        // An overrun (ENOBUFS) means notifications were lost: assume the worst.
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
            changes = Changes {
                any: true,
                rules: true,
            };
            continue;
        }
        if n <= 0 {
            return changes;
        }
        changes.any = true;
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().expect("2 bytes"));
            changes.rules |= kind == fib_rules::RTM_NEWRULE || kind == fib_rules::RTM_DELRULE;
            if len < NLMSG_HDRLEN {
                break;
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// Reads everything queued on a monitoring socket; whether anything was
/// (or was lost: then dump again).
fn drain(nl: &Netlink, buf: &mut [u8]) -> bool {
    drain_kinds(nl, buf).any
}

/// One netlink attribute, padded: what [`attrs`] reads (for tests).
#[cfg(test)]
pub(super) fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(family: i32, len: u8, kind: u8, dst: &[u8], gw: Option<&[u8]>, oif: u32) -> Vec<u8> {
        let mut b = vec![
            family as u8,
            len,
            0,
            0,
            TABLE_MAIN as u8,
            3,
            0,
            kind,
            0,
            0,
            0,
            0,
        ];
        b.extend(attr(RTA_DST, dst));
        if let Some(g) = gw {
            b.extend(attr(RTA_GATEWAY, g));
        }
        b.extend(attr(RTA_OIF, &oif.to_ne_bytes()));
        b
    }

    fn neigh(family: i32, ifindex: i32, state: u16, dst: &[u8], mac: Mac) -> Vec<u8> {
        let mut b = vec![family as u8, 0, 0, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend(attr(NDA_DST, dst));
        b.extend(attr(NDA_LLADDR, &mac));
        b
    }

    #[test]
    fn a_route_mtu_wins_over_the_link_mtu() {
        let mut fib = Fib::default();
        fib.link_mtus.insert(3, 1500);
        let mut body = route(
            libc::AF_INET6,
            64,
            RTN_UNICAST,
            &[0x20, 1, 0x0d, 0xb8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            None,
            3,
        );
        fib.extend_routes(parse_route(&body));
        let dst: Ipv6Addr = "2001:db8:0:100::5".parse().unwrap();
        assert_eq!(fib.lookup_v6(dst).mtu(), Some(1500));
        body.extend(attr(RTA_METRICS, &attr(RTAX_MTU, &1400u32.to_ne_bytes())));
        fib.set_routes(Vec::new());
        fib.extend_routes(parse_route(&body));
        assert_eq!(fib.lookup_v6(dst).mtu(), Some(1400));
    }

    #[test]
    fn longest_prefix_then_neighbour() {
        let mut fib = Fib::default();
        fib.extend_routes(parse_route(&route(
            libc::AF_INET,
            16,
            RTN_UNICAST,
            &[10, 96, 0, 0],
            None,
            3,
        )));
        fib.extend_routes(parse_route(&route(
            libc::AF_INET,
            0,
            RTN_UNICAST,
            &[0, 0, 0, 0],
            Some(&[192, 0, 2, 1]),
            2,
        )));
        fib.extend_routes(parse_route(&route(
            libc::AF_INET,
            24,
            RTN_BLACKHOLE,
            &[10, 96, 9, 0],
            None,
            0,
        )));
        fib.link_macs.insert(3, [2, 0, 0, 0, 0, 3]);
        fib.link_macs.insert(2, [2, 0, 0, 0, 0, 2]);
        fib.link_mtus.insert(3, 1500);
        let mut broadcast = route(
            libc::AF_INET,
            32,
            RTN_BROADCAST,
            &[10, 96, 255, 255],
            None,
            3,
        );
        broadcast[4] = 255; // the local table
        fib.extend_routes(parse_route(&broadcast));
        let (k, mac) = parse_neighbour(&neigh(
            libc::AF_INET,
            3,
            0x02,
            &[10, 96, 1, 100],
            [2, 1, 1, 1, 1, 1],
        ))
        .unwrap();
        fib.neighbours.insert(k, mac);
        assert!(parse_neighbour(&neigh(
            libc::AF_INET,
            3,
            NUD_FAILED,
            &[10, 96, 1, 101],
            [0; 6]
        ))
        .is_none());

        assert_eq!(
            fib.lookup_v4("10.96.1.100".parse().unwrap()),
            NextHop::Direct {
                ifindex: 3,
                src_mac: [2, 0, 0, 0, 0, 3],
                dst_mac: [2, 1, 1, 1, 1, 1],
                mtu: Some(1500),
            }
        );
        assert_eq!(
            fib.lookup_v4("10.96.1.101".parse().unwrap()),
            NextHop::Unresolved {
                ifindex: 3,
                mtu: Some(1500)
            }
        );
        assert_eq!(
            fib.lookup_v4("10.96.255.255".parse().unwrap()),
            NextHop::Broadcast
        );
        // Off-link: the gateway's neighbour entry is what matters.
        assert_eq!(
            fib.lookup_v4("8.8.8.8".parse().unwrap()),
            NextHop::Unresolved {
                ifindex: 2,
                mtu: None
            }
        );
        assert_eq!(
            fib.lookup_v4("10.96.9.1".parse().unwrap()),
            NextHop::Unreachable
        );
        assert_eq!(
            fib.lookup_v6("2001:db8::1".parse().unwrap()),
            NextHop::Unreachable
        );
    }

    #[test]
    fn local_table_wins() {
        let mut fib = Fib::default();
        let mut local = route(
            libc::AF_INET6,
            128,
            RTN_LOCAL,
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            None,
            1,
        );
        local[4] = TABLE_LOCAL as u8;
        fib.extend_routes(parse_route(&local));
        fib.extend_routes(parse_route(&route(
            libc::AF_INET6,
            64,
            RTN_UNICAST,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            None,
            4,
        )));
        assert_eq!(
            fib.lookup_v6("2001:db8::1".parse().unwrap()),
            NextHop::Local
        );
        assert_eq!(
            fib.lookup_v6("2001:db8::2".parse().unwrap()),
            NextHop::Unresolved {
                ifindex: 4,
                mtu: None
            }
        );
    }

    /// An RTM_NEWROUTE body for `dst/len` over `hops`: (flags, weight - 1,
    /// ifindex, gateway).
    fn multipath_route(dst: [u8; 4], len: u8, hops: &[(u8, u8, u32, [u8; 4])]) -> Vec<u8> {
        let mut b = vec![
            libc::AF_INET as u8,
            len,
            0,
            0,
            TABLE_MAIN as u8,
            3,
            0,
            RTN_UNICAST,
        ];
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend(attr(RTA_DST, &dst));
        let mut nexthops = Vec::new();
        for &(flags, weight, ifindex, gw) in hops {
            let gw = attr(RTA_GATEWAY, &gw);
            nexthops.extend_from_slice(&((8 + gw.len()) as u16).to_ne_bytes());
            nexthops.extend_from_slice(&[flags, weight]);
            nexthops.extend_from_slice(&ifindex.to_ne_bytes());
            nexthops.extend(gw);
        }
        b.extend(attr(RTA_MULTIPATH, &nexthops));
        b
    }

    /// How many of 4096 destinations in 10.0.0.0/8 go out of each ifindex.
    fn spread(fib: &Fib) -> HashMap<u32, u32> {
        let mut out = HashMap::new();
        for i in 0..4096u32 {
            let dst = Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(2_654_435_761) & 0x00ff_ffff));
            let NextHop::Unresolved { ifindex, .. } = fib.lookup_v4(dst) else {
                panic!("{dst}: {:?}", fib.lookup_v4(dst));
            };
            *out.entry(ifindex).or_insert(0) += 1;
            assert_eq!(
                fib.lookup_v4(dst),
                NextHop::Unresolved { ifindex, mtu: None },
                "one path per destination"
            );
        }
        out
    }

    #[test]
    fn multipath_spreads_by_weight_and_skips_dead_hops() {
        let mut fib = Fib::default();
        fib.extend_routes(parse_route(&multipath_route(
            [10, 0, 0, 0],
            8,
            &[(0, 0, 2, [192, 0, 2, 1]), (0, 0, 3, [198, 51, 100, 1])],
        )));
        let even = spread(&fib);
        assert_eq!(even.len(), 2, "{even:?}");
        assert!((1700..2400).contains(&even[&2]), "{even:?}");

        // Weight 3 (hops 2) against 1.
        fib.set_routes(
            parse_route(&multipath_route(
                [10, 0, 0, 0],
                8,
                &[(0, 2, 2, [192, 0, 2, 1]), (0, 0, 3, [198, 51, 100, 1])],
            ))
            .into_iter()
            .collect(),
        );
        let weighted = spread(&fib);
        assert!((2800..3350).contains(&weighted[&2]), "{weighted:?}");

        // A dead next hop carries nothing.
        fib.set_routes(
            parse_route(&multipath_route(
                [10, 0, 0, 0],
                8,
                &[
                    (RTNH_F_DEAD as u8, 0, 2, [192, 0, 2, 1]),
                    (0, 0, 3, [198, 51, 100, 1]),
                ],
            ))
            .into_iter()
            .collect(),
        );
        assert_eq!(spread(&fib), HashMap::from([(3, 4096)]));

        // All dead: the route is skipped and a shorter one matches.
        fib.set_routes(
            parse_route(&multipath_route(
                [10, 0, 0, 0],
                8,
                &[(RTNH_F_DEAD as u8, 0, 2, [192, 0, 2, 1])],
            ))
            .into_iter()
            .collect(),
        );
        assert_eq!(
            fib.lookup_v4("10.1.2.3".parse().unwrap()),
            NextHop::Unreachable
        );
        fib.extend_routes(parse_route(&route(
            libc::AF_INET,
            0,
            RTN_UNICAST,
            &[0, 0, 0, 0],
            Some(&[203, 0, 113, 1]),
            4,
        )));
        assert_eq!(
            fib.lookup_v4("10.1.2.3".parse().unwrap()),
            NextHop::Unresolved {
                ifindex: 4,
                mtu: None
            }
        );
    }

    #[test]
    fn malformed_attributes_do_not_panic() {
        for bytes in [&[][..], &[1, 2, 3], &[255, 255, 0, 0, 9], &[0, 0, 0, 0]] {
            let _ = attrs(bytes).count();
            let _ = parse_route(bytes);
            let _ = parse_multipath(libc::AF_INET as u8, bytes);
            let _ = parse_neighbour(bytes);
            let _ = parse_link(bytes);
        }
    }
}

//! The pure RFC 5969 relay: one function per direction turns a packet in a
//! [`Frame`] into a [`Verdict`], rewriting the frame in place.
//!
//! - [`Relay::from_ipv6`]: native IPv6 towards a 6rd prefix is encapsulated
//!   to the CE whose IPv4 address the destination embeds (RFC 5969 §7.1,
//!   RFC 4213 §3.5), or answered with an ICMPv6 error (RFC 4443 §3).
//! - [`Relay::from_ipv4`]: protocol 41 addressed to the BR is checked
//!   (RFC 5969 §12), decapsulated (RFC 4213 §3.6, ECN per RFC 6040 §4.2) and
//!   routed natively, or re-encapsulated to another CE (RFC 5969 §8
//!   hairpin); ICMPv4 errors about packets we encapsulated are relayed to
//!   the IPv6 sender as ICMPv6 (RFC 4213 §3.4).
//!
//! Choices where the RFCs leave room (see `docs/rfc-compliance.md`):
//! - Static tunnel MTU (RFC 4213 §3.2.1), default 1280, and the outer DF bit
//!   is never set, as that section requires for a static MTU. Larger IPv6
//!   packets get Packet Too Big.
//! - The outer DSCP and ECN are copied from the inner traffic class
//!   (RFC 6040 normal mode); decapsulation keeps the inner DSCP.
//! - Protocol-41 fragments are not handled here: the XDP program leaves
//!   them to the kernel, which reassembles them for the slow path.
//! - IPv4 options on a received packet are accepted and removed with the
//!   header; we never write options.
//! - A CE's inner source must lie in its own delegated prefix: in the 6rd
//!   prefix and embedding the outer IPv4 source.
//!
//! Nothing here allocates, locks, or panics on packet bytes.

pub mod domain;
pub mod frame;
pub mod probe;
pub mod ratelimit;
pub mod tcp_mss;
pub mod verdict;
pub mod wire;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_mss;

use std::net::{Ipv4Addr, Ipv6Addr};

pub use domain::{Domain, DomainError, DomainSpec, DomainWarning, Domains, Mapping};
pub use frame::Frame;
pub use ratelimit::{IcmpRate, TokenBucket};
pub use tcp_mss::{MssClamp, MssEvent};
pub use verdict::{DropReason, Egress, Path, Verdict};

pub use domain::is_martian_ipv4;
use wire::*;

/// Headroom a frame needs for the worst case: an ICMPv6 error (48 bytes)
/// that is then encapsulated (20 bytes), plus an Ethernet header (14).
pub const REQUIRED_HEADROOM: usize = IPV6_HEADER_LEN + ICMP_HEADER_LEN + IPV4_HEADER_LEN + 14;

/// ICMPv6 errors carry as much of the invoking packet as fits in the
/// minimum MTU (RFC 4443 §2.4 c).
const ICMPV6_ERROR_MAX: usize = IPV6_MIN_MTU as usize;
const IPV6_MIN_MTU: u16 = domain::IPV6_MIN_MTU;
/// Hop limit of the ICMPv6 errors we originate.
const ICMP_HOP_LIMIT: u8 = 64;

/// The relay: the domains it serves and how it answers.
#[derive(Clone, Debug)]
pub struct Relay {
    domains: Domains,
    icmp_rate: IcmpRate,
}

/// Per-worker mutable state: the IPv4 ID counter and the ICMP limiters.
#[derive(Clone, Debug)]
pub struct WorkerState {
    next_ipv4_id: u16,
    /// One bucket per ICMPv6 error type ([`Icmpv6Error::bucket`]): a flood
    /// that earns one type (hop limit 1) cannot starve another (the Packet
    /// Too Big that path MTU discovery needs).
    icmp: [TokenBucket; 3],
    /// What MSS clamping did since [`WorkerState::take_mss_events`].
    mss_events: [u64; MssEvent::COUNT],
}

impl WorkerState {
    fn ipv4_id(&mut self) -> u16 {
        let id = self.next_ipv4_id;
        self.next_ipv4_id = id.wrapping_add(1);
        id
    }

    /// Clamps the TCP MSS of the IPv6 packet at the start of `frame` to
    /// `domain`'s `tcp-mss`, if it has one, and notes what happened.
    fn clamp_mss(&mut self, frame: &mut Frame, domain: &Domain) {
        let Some(max) = domain.tcp_mss() else {
            return;
        };
        let event = match tcp_mss::clamp(frame.data_mut(), max) {
            MssClamp::Clamped => MssEvent::Clamped,
            MssClamp::Malformed => MssEvent::MalformedOptions,
            MssClamp::NotSyn | MssClamp::Unchanged => return,
        };
        self.mss_events[event.index()] += 1;
    }

    /// The MSS clamping events since the last call, by [`MssEvent`] index,
    /// for the caller's counters.
    pub fn take_mss_events(&mut self) -> [u64; MssEvent::COUNT] {
        std::mem::take(&mut self.mss_events)
    }
}

/// An ICMPv6 error the BR originates (RFC 4443 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Icmpv6Error {
    /// Type 1; code 1 administratively prohibited, 3 address unreachable.
    DestinationUnreachable(u8),
    /// Type 2 with the MTU.
    PacketTooBig(u32),
    /// Type 3 code 0, hop limit exceeded in transit.
    TimeExceeded,
}

impl Icmpv6Error {
    /// Which of the worker's rate-limit buckets this error takes from.
    fn bucket(self) -> usize {
        match self {
            Icmpv6Error::DestinationUnreachable(_) => 0,
            Icmpv6Error::PacketTooBig(_) => 1,
            Icmpv6Error::TimeExceeded => 2,
        }
    }

    fn type_code_param(self) -> (u8, u8, u32) {
        match self {
            Icmpv6Error::DestinationUnreachable(code) => (1, code, 0),
            Icmpv6Error::PacketTooBig(mtu) => (2, 0, mtu),
            Icmpv6Error::TimeExceeded => (3, 0, 0),
        }
    }
}

/// The fixed IPv6 header fields we look at.
struct Ipv6Header {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
}

/// Checks the IPv6 header at the start of the frame and trims any bytes
/// past its payload length (Ethernet padding).
fn parse_ipv6(frame: &mut Frame) -> Result<Ipv6Header, DropReason> {
    let d = frame.data();
    if d.len() < IPV6_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if d[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload_len = usize::from(be16(d, 4));
    // A zero payload length with a Hop-by-Hop header is a jumbogram
    // (RFC 2675), which no tunnel MTU admits.
    if payload_len == 0 && d[6] == 0 {
        return Err(DropReason::Malformed);
    }
    let total = IPV6_HEADER_LEN + payload_len;
    if total > d.len() {
        return Err(DropReason::Truncated);
    }
    let header = Ipv6Header {
        src: ipv6_at(d, 8),
        dst: ipv6_at(d, 24),
        hop_limit: d[7],
    };
    frame.truncate(total);
    Ok(header)
}

/// The IPv4 header fields we look at.
struct Ipv4Header {
    header_len: usize,
    tos: u8,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

fn parse_ipv4(frame: &mut Frame) -> Result<Ipv4Header, DropReason> {
    let d = frame.data();
    if d.len() < IPV4_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if d[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let header_len = usize::from(d[0] & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    let total = usize::from(be16(d, 2));
    if d.len() < header_len || total > d.len() {
        return Err(DropReason::Truncated);
    }
    if total < header_len {
        return Err(DropReason::Malformed);
    }
    if checksum(&d[..header_len]) != 0 {
        return Err(DropReason::BadIpv4Checksum);
    }
    let header = Ipv4Header {
        header_len,
        tos: d[1],
        protocol: d[9],
        src: ipv4_at(d, 12),
        dst: ipv4_at(d, 16),
    };
    let fragment = be16(d, 6);
    frame.truncate(total);
    if fragment & (IPV4_MF | IPV4_OFFSET_MASK) != 0 {
        return Err(DropReason::Ipv4Fragment);
    }
    Ok(header)
}

/// Unspecified, loopback and IPv4-compatible (::/96), IPv4-mapped
/// (::ffff:0:0/96), link-local (fe80::/10) and multicast (ff00::/8):
/// addresses a BR never relays (RFC 4291 §2.5.2-2.5.6, §2.7).
fn is_martian_ipv6(addr: Ipv6Addr) -> bool {
    let bits = u128::from(addr);
    let top96 = bits >> 32;
    top96 == 0 || top96 == 0xffff || addr.is_unicast_link_local() || addr.is_multicast()
}

/// RFC 4443 §2.4 (e): no error about an ICMPv6 error, nor about a packet
/// from the unspecified address or to a multicast one.
fn may_send_error_about(packet: &[u8]) -> bool {
    let src = ipv6_at(packet, 8);
    let dst = ipv6_at(packet, 24);
    if src.is_unspecified() || src.is_multicast() || dst.is_multicast() {
        return false;
    }
    let is_icmp_error =
        packet[6] == PROTO_ICMPV6 && packet.get(IPV6_HEADER_LEN).is_some_and(|&t| t < 128);
    !is_icmp_error
}

/// Replaces the frame's IPv6 packet with an ICMPv6 error about it, from
/// `src` to the packet's source. `false` when the headroom is too small.
fn write_icmpv6_error(frame: &mut Frame, src: Ipv6Addr, error: Icmpv6Error) -> bool {
    let dst = ipv6_at(frame.data(), 8);
    frame.truncate(ICMPV6_ERROR_MAX - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
    if !frame.push(IPV6_HEADER_LEN + ICMP_HEADER_LEN) {
        return false;
    }
    let payload_len = frame.len() - IPV6_HEADER_LEN;
    let (icmp_type, code, param) = error.type_code_param();
    let p = frame.data_mut();
    p[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    // The payload is at most 1240 bytes, so it fits in 16 bits.
    put_be16(p, 4, payload_len as u16);
    p[6] = PROTO_ICMPV6;
    p[7] = ICMP_HOP_LIMIT;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    let icmp = &mut p[IPV6_HEADER_LEN..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&param.to_be_bytes());
    let sum = ipv6_pseudo_sum(&src, &dst, payload_len as u32, PROTO_ICMPV6);
    let csum = finish(sum_bytes(sum, icmp));
    put_be16(icmp, 2, csum);
    true
}

impl Relay {
    /// A relay for these domains.
    pub fn new(domains: Domains, icmp_rate: IcmpRate) -> Self {
        Relay { domains, icmp_rate }
    }

    /// The domains served.
    pub fn domains(&self) -> &Domains {
        &self.domains
    }

    /// Fresh state for worker number `worker`. Workers start their IPv4 ID
    /// counters far apart so that IDs of one CE's packets rarely collide.
    pub fn worker_state(&self, worker: u16) -> WorkerState {
        WorkerState {
            next_ipv4_id: worker.wrapping_mul(0x9e37),
            icmp: [TokenBucket::new(self.icmp_rate); 3],
            mss_events: [0; MssEvent::COUNT],
        }
    }

    /// A native IPv6 packet from an interface (the LAN): encapsulate it
    /// to its CE, or answer it. No 6rd address is a source here, not even
    /// the BR's own (RFC 5969 §12 asks a BR to check sources).
    pub fn from_ipv6(&self, state: &mut WorkerState, frame: &mut Frame, now_ns: u64) -> Verdict {
        match self.try_from_ipv6(state, frame, now_ns, false) {
            Ok(v) => v,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// A native IPv6 packet the host sent into the TUN interface: as
    /// [`Relay::from_ipv6`], but the BR's own addresses (its 6rd address
    /// and its delegated prefix) are the host's and may be sources.
    pub fn from_host_ipv6(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
    ) -> Verdict {
        match self.try_from_ipv6(state, frame, now_ns, true) {
            Ok(v) => v,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    fn try_from_ipv6(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
        from_host: bool,
    ) -> Result<Verdict, DropReason> {
        let ip = parse_ipv6(frame)?;
        if is_martian_ipv6(ip.dst) {
            return Err(DropReason::MartianDestination);
        }
        let domain = self.domains.find(ip.dst).ok_or(DropReason::NotForUs)?;
        if ip.dst == domain.br_ipv6() {
            return Ok(Verdict::Forward {
                path: Path::ToHost,
                egress: Egress::Host,
            });
        }
        if domain.in_br_prefix(ip.dst) {
            return Err(DropReason::BrOwnPrefix);
        }
        if is_martian_ipv6(ip.src) {
            return Err(DropReason::MartianSource);
        }
        // A native packet cannot come from a CE: CE sources arrive
        // encapsulated. Only the BR's own addresses may use a 6rd source
        // natively, and only from the host itself.
        if let Some(src_domain) = self.domains.find(ip.src) {
            let br_own = ip.src == src_domain.br_ipv6() || src_domain.in_br_prefix(ip.src);
            if !(from_host && br_own) {
                return Err(DropReason::SpoofedSource);
            }
        }
        self.relay_to_ce(
            state,
            frame,
            now_ns,
            domain,
            &ip,
            domain,
            Path::Encapsulated,
        )
    }

    /// Forwards an IPv6 packet into `domain` (as `path`), or answers it
    /// with an ICMPv6 error from `answering` when it cannot go.
    #[allow(clippy::too_many_arguments)]
    fn relay_to_ce(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
        domain: &Domain,
        ip: &Ipv6Header,
        answering: &Domain,
        path: Path,
    ) -> Result<Verdict, DropReason> {
        if ip.hop_limit <= 1 {
            return self.answer(
                state,
                frame,
                now_ns,
                answering,
                Icmpv6Error::TimeExceeded,
                false,
            );
        }
        let ce = domain.ce_ipv4(ip.dst).ok_or(DropReason::NotForUs)?;
        if is_martian_ipv4(ce) || self.domains.is_br_ipv4(ce) {
            return Err(DropReason::MartianIpv4);
        }
        if !domain.ce_allowed(ce) {
            return Err(DropReason::CeNotAllowed);
        }
        if frame.len() > usize::from(domain.mtu()) {
            let mtu = u32::from(domain.mtu());
            return self.answer(
                state,
                frame,
                now_ns,
                answering,
                Icmpv6Error::PacketTooBig(mtu),
                false,
            );
        }
        frame.data_mut()[7] = ip.hop_limit - 1;
        state.clamp_mss(frame, domain);
        encapsulate(state, frame, domain, ce)?;
        Ok(Verdict::Forward {
            path,
            egress: Egress::Ipv4 { dst: ce },
        })
    }

    /// Replaces the packet with an ICMPv6 error from `domain`'s ICMP source
    /// (its BR address unless configured) and routes it: natively, or encapsulated when it goes to a CE.
    fn answer(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
        domain: &Domain,
        error: Icmpv6Error,
        relayed: bool,
    ) -> Result<Verdict, DropReason> {
        // Only relayed ICMPv4 errors become Destination Unreachable.
        let (path, silent) = match error {
            _ if relayed => (Path::IcmpRelayed, DropReason::Icmpv4NotRelayable),
            Icmpv6Error::TimeExceeded => (Path::IcmpTimeExceeded, DropReason::HopLimitExceeded),
            _ => (Path::IcmpPacketTooBig, DropReason::PacketTooBig),
        };
        if !may_send_error_about(frame.data()) {
            return Err(silent);
        }
        if !state.icmp[error.bucket()].allow(now_ns) {
            return Err(DropReason::IcmpRateLimited);
        }
        if !write_icmpv6_error(frame, domain.icmp_source(), error) {
            return Err(DropReason::NoHeadroom);
        }
        let dst = ipv6_at(frame.data(), 24);
        match self.domains.map_ipv6(dst) {
            Mapping::Ce { domain, ipv4 } => {
                if is_martian_ipv4(ipv4) || self.domains.is_br_ipv4(ipv4) {
                    return Err(DropReason::MartianIpv4);
                }
                encapsulate(state, frame, domain, ipv4)?;
                Ok(Verdict::Forward {
                    path,
                    egress: Egress::Ipv4 { dst: ipv4 },
                })
            }
            Mapping::None => Ok(Verdict::Forward {
                path,
                egress: Egress::Ipv6 { dst },
            }),
        }
    }

    /// An IPv4 packet for the BR: protocol 41 from a CE, or an ICMPv4 error
    /// about a packet we encapsulated.
    pub fn from_ipv4(&self, state: &mut WorkerState, frame: &mut Frame, now_ns: u64) -> Verdict {
        match self.try_from_ipv4(state, frame, now_ns) {
            Ok(v) => v,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    fn try_from_ipv4(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
    ) -> Result<Verdict, DropReason> {
        let outer = parse_ipv4(frame)?;
        if !self.domains.is_br_ipv4(outer.dst) {
            return Err(DropReason::NotForUs);
        }
        match outer.protocol {
            PROTO_IPV6_IN_IPV4 => self.decapsulate(state, frame, now_ns, &outer),
            PROTO_ICMPV4 => self.relay_icmpv4(state, frame, now_ns, &outer),
            _ => Err(DropReason::NotProtocol41),
        }
    }

    fn decapsulate(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
        outer: &Ipv4Header,
    ) -> Result<Verdict, DropReason> {
        if is_martian_ipv4(outer.src) || self.domains.is_br_ipv4(outer.src) {
            return Err(DropReason::MartianIpv4);
        }
        if !frame.pull(outer.header_len) {
            return Err(DropReason::Truncated);
        }
        let ip = parse_ipv6(frame)?;
        if is_martian_ipv6(ip.src) {
            return Err(DropReason::MartianSource);
        }
        // RFC 5969 §12: the inner source must embed the outer source.
        let from = self
            .domains
            .find(ip.src)
            .ok_or(DropReason::SourceOutsideDomain)?;
        if from.ce_ipv4(ip.src) != Some(outer.src) {
            return Err(DropReason::SpoofedSource);
        }
        if !from.is_br_ipv4(outer.dst) {
            return Err(DropReason::NotForUs);
        }
        if !from.ce_allowed(outer.src) {
            return Err(DropReason::CeNotAllowed);
        }
        let tc = ipv6_traffic_class(frame.data());
        let ecn = ecn_decapsulate(Ecn::from_tos(tc), Ecn::from_tos(outer.tos))
            .ok_or(DropReason::EcnCeOnNotEct)?;
        set_ipv6_traffic_class(frame.data_mut(), (tc & !3) | ecn as u8);
        if is_martian_ipv6(ip.dst) {
            return Err(DropReason::MartianDestination);
        }
        // Out of the CE's tunnel (then maybe into another: clamped again).
        state.clamp_mss(frame, from);
        match self.domains.find(ip.dst) {
            Some(to) if ip.dst == to.br_ipv6() => Ok(Verdict::Forward {
                path: match probe::is_probe(frame.data()) {
                    true => Path::SelfCheck,
                    false => Path::ToHost,
                },
                egress: Egress::Host,
            }),
            Some(to) if to.in_br_prefix(ip.dst) => Err(DropReason::BrOwnPrefix),
            Some(to) => self.relay_to_ce(state, frame, now_ns, to, &ip, from, Path::Hairpinned),
            None => {
                if ip.hop_limit <= 1 {
                    return self.answer(
                        state,
                        frame,
                        now_ns,
                        from,
                        Icmpv6Error::TimeExceeded,
                        false,
                    );
                }
                frame.data_mut()[7] = ip.hop_limit - 1;
                Ok(Verdict::Forward {
                    path: Path::Decapsulated,
                    egress: Egress::Ipv6 { dst: ip.dst },
                })
            }
        }
    }

    /// RFC 4443 §3.2: a decapsulated packet larger than the MTU of the
    /// link it would leave by (`mtu`, from the kernel's routes) is answered
    /// with Packet Too Big, back to its CE, instead of being sent. It
    /// happens to packets the kernel reassembled from protocol-41
    /// fragments, or when the native link's MTU is below the tunnel's.
    pub fn too_big_for_link(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
        mtu: u32,
    ) -> Verdict {
        let d = frame.data();
        if d.len() < IPV6_HEADER_LEN || d[0] >> 4 != 6 {
            return Verdict::Drop(DropReason::Malformed);
        }
        let (src, hop_limit) = (ipv6_at(d, 8), d[7]);
        let Some(domain) = self.domains.find(src) else {
            return Verdict::Drop(DropReason::PacketTooBig);
        };
        // Quote the packet as it arrived: undo decapsulate's decrement.
        frame.data_mut()[7] = hop_limit.saturating_add(1);
        let error = Icmpv6Error::PacketTooBig(mtu.max(u32::from(IPV6_MIN_MTU)));
        match self.answer(state, frame, now_ns, domain, error, false) {
            Ok(v) => v,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// RFC 4213 §3.4: an ICMPv4 error about a packet we encapsulated goes
    /// back to the IPv6 sender as the matching ICMPv6 error, when the
    /// router quoted enough of it to find the IPv6 header.
    fn relay_icmpv4(
        &self,
        state: &mut WorkerState,
        frame: &mut Frame,
        now_ns: u64,
        outer: &Ipv4Header,
    ) -> Result<Verdict, DropReason> {
        const NOT_RELAYABLE: DropReason = DropReason::Icmpv4NotRelayable;
        let icmp = frame
            .data()
            .get(outer.header_len..)
            .ok_or(DropReason::Truncated)?;
        if icmp.len() < ICMP_HEADER_LEN + IPV4_HEADER_LEN || checksum(icmp) != 0 {
            return Err(NOT_RELAYABLE);
        }
        let error = match (icmp[0], icmp[1]) {
            // Fragmentation needed: the MTU the IPv6 side sees is the next
            // hop's minus our header, never below the IPv6 minimum.
            (3, 4) => {
                let next_hop_mtu = u32::from(be16(icmp, 6));
                let mtu = next_hop_mtu.saturating_sub(IPV4_HEADER_LEN as u32);
                Icmpv6Error::PacketTooBig(mtu.max(u32::from(IPV6_MIN_MTU)))
            }
            // Communication administratively prohibited (RFC 1812 §5.2.7.1).
            (3, 9 | 10 | 13) => Icmpv6Error::DestinationUnreachable(1),
            // Any other unreachable, and TTL expiry inside the IPv4 network:
            // the tunnel is one IPv6 link, so its failure is an address
            // unreachable for IPv6 (RFC 2473 §8.2 does the same).
            (3, _) | (11, _) => Icmpv6Error::DestinationUnreachable(3),
            _ => return Err(NOT_RELAYABLE),
        };
        let quoted = &icmp[ICMP_HEADER_LEN..];
        let quoted_len = usize::from(quoted[0] & 0x0f) * 4;
        if quoted[0] >> 4 != 4
            || quoted_len < IPV4_HEADER_LEN
            || quoted[9] != PROTO_IPV6_IN_IPV4
            || quoted.len() < quoted_len + IPV6_HEADER_LEN
            || quoted[quoted_len] >> 4 != 6
        {
            return Err(NOT_RELAYABLE);
        }
        let (quoted_src, quoted_ce) = (ipv4_at(quoted, 12), ipv4_at(quoted, 16));
        let inner_dst = ipv6_at(quoted, quoted_len + 24);
        // Only packets this BR sent: from a BR address, to the CE that
        // the inner destination maps to.
        let domain = self.domains.find(inner_dst).ok_or(NOT_RELAYABLE)?;
        if !domain.is_br_ipv4(quoted_src) || domain.ce_ipv4(inner_dst) != Some(quoted_ce) {
            return Err(NOT_RELAYABLE);
        }
        let inner_src = ipv6_at(quoted, quoted_len + 8);
        if is_martian_ipv6(inner_src) {
            return Err(DropReason::MartianSource);
        }
        if !frame.pull(outer.header_len + ICMP_HEADER_LEN + quoted_len) {
            return Err(DropReason::Truncated);
        }
        self.answer(state, frame, now_ns, domain, error, true)
    }
}

/// A one-line description of an IP packet for logs: version, addresses,
/// protocol. Never panics.
pub fn describe(packet: &[u8]) -> String {
    match packet.first().map(|b| b >> 4) {
        // The lengths the headers give: `packet` may be only its start.
        Some(4) if packet.len() >= IPV4_HEADER_LEN => format!(
            "IPv4 {} -> {} protocol {} length {}",
            ipv4_at(packet, 12),
            ipv4_at(packet, 16),
            packet[9],
            be16(packet, 2)
        ),
        Some(6) if packet.len() >= IPV6_HEADER_LEN => format!(
            "IPv6 {} -> {} next header {} hop limit {} length {}",
            ipv6_at(packet, 8),
            ipv6_at(packet, 24),
            packet[6],
            packet[7],
            IPV6_HEADER_LEN + usize::from(be16(packet, 4))
        ),
        _ => format!("{} bytes, not an IP header", packet.len()),
    }
}

/// Writes the 20-byte IPv4 header (RFC 4213 §3.5) in front of the IPv6
/// packet in `frame`.
fn encapsulate(
    state: &mut WorkerState,
    frame: &mut Frame,
    domain: &Domain,
    ce: Ipv4Addr,
) -> Result<(), DropReason> {
    let traffic_class = ipv6_traffic_class(frame.data());
    if !frame.push(IPV4_HEADER_LEN) {
        return Err(DropReason::NoHeadroom);
    }
    // Callers keep the IPv6 packet within the tunnel MTU (<= 65515).
    let total = frame.len() as u16;
    let id = state.ipv4_id();
    let h = &mut frame.data_mut()[..IPV4_HEADER_LEN];
    h[0] = 0x45;
    // DSCP and ECN copied from the inner packet (RFC 6040 §4.1 normal mode).
    h[1] = traffic_class;
    put_be16(h, 2, total);
    put_be16(h, 4, id);
    // No DF with a static tunnel MTU (RFC 4213 §3.2.1), no fragment offset.
    put_be16(h, 6, 0);
    h[8] = domain.ttl();
    h[9] = PROTO_IPV6_IN_IPV4;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&domain.br_ipv4().octets());
    h[16..20].copy_from_slice(&ce.octets());
    let csum = checksum(h);
    put_be16(h, 10, csum);
    Ok(())
}

//! What the relay decided about one packet. Every packet gets exactly one
//! verdict, and every verdict has a stable name that a counter counts
//! (`docs/counters.md` explains each one).

use std::net::{Ipv4Addr, Ipv6Addr};

/// An enum whose variants have stable kebab-case names and documented
/// meanings, for counters.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[doc = $doc:literal])* $variant:ident => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[doc = $doc])* $variant,)* }

        impl $name {
            /// Every value, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// Number of values.
            pub const COUNT: usize = $name::ALL.len();

            /// The stable kebab-case name used in counters and logs.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// One-line meaning, for `--help` and docs.
            pub fn meaning(self) -> &'static str {
                match self { $($name::$variant => concat!($($doc),*).trim_start(),)* }
            }

            /// Position in [`Self::ALL`], for counter arrays.
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use named_enum;

named_enum! {
    /// Why a packet was dropped.
    DropReason {
        /// A header is cut short, or a length field points past the end of the packet.
        Truncated => "truncated",
        /// A header field is impossible: wrong IP version, IPv4 header length below 20, IPv6 jumbogram.
        Malformed => "malformed",
        /// The IPv4 header checksum does not verify.
        BadIpv4Checksum => "bad-ipv4-checksum",
        /// A fragment of a protocol-41 packet reached the AF_XDP forwarder; the kernel reassembles fragments and hands them to the slow path.
        Ipv4Fragment => "ipv4-fragment",
        /// An IPv4 packet that is neither protocol 41 nor an ICMP error about one.
        NotProtocol41 => "not-protocol-41",
        /// Not addressed to a BR address (IPv4) or to a 6rd prefix (IPv6).
        NotForUs => "not-for-us",
        /// RFC 5969 §12: the inner source is in the 6rd prefix but does not embed the outer IPv4 source; or a native IPv6 packet claims a CE's address as its source.
        SpoofedSource => "spoofed-source",
        /// A CE sent an inner source outside every 6rd prefix; a CE may only use its delegated prefix.
        SourceOutsideDomain => "source-outside-domain",
        /// IPv6 source unspecified, loopback, multicast, link-local, IPv4-mapped or IPv4-compatible (RFC 4291 §2.5, §2.7).
        MartianSource => "martian-source",
        /// IPv6 destination unspecified, loopback, multicast, link-local, IPv4-mapped or IPv4-compatible (RFC 4291).
        MartianDestination => "martian-destination",
        /// An IPv4 address that cannot be a CE: 0/8, 127/8, 224/4, 240/4, or the BR itself.
        MartianIpv4 => "martian-ipv4",
        /// Destination inside the BR's own delegated prefix but not the BR's address (the Cisco `Null0` route).
        BrOwnPrefix => "br-own-prefix",
        /// Hop limit exhausted; no Time Exceeded sent because the packet was itself an ICMPv6 error or not unicast (RFC 4443 §2.4 e).
        HopLimitExceeded => "hop-limit-exceeded",
        /// Larger than the tunnel MTU; no Packet Too Big sent because the packet was itself an ICMPv6 error or not unicast.
        PacketTooBig => "packet-too-big",
        /// An ICMPv6 error was due but the rate limit (RFC 4443 §2.4 f) refused it.
        IcmpRateLimited => "icmp-rate-limited",
        /// RFC 6040 §4.2: outer header Congestion Experienced over a Not-ECT inner packet.
        EcnCeOnNotEct => "ecn-ce-on-not-ect",
        /// An ICMPv4 message that cannot be relayed as ICMPv6: wrong type, bad checksum, or it quotes too little of a packet we sent.
        Icmpv4NotRelayable => "icmpv4-not-relayable",
        /// The buffer has no room in front of the packet for the new header.
        NoHeadroom => "no-headroom",
        /// Forwarder: a frame that is neither IPv4 nor IPv6 reached the forwarder.
        NotIp => "not-ip",
        /// Forwarder: the kernel has no route (or a reject route) to the next destination.
        NoRoute => "no-route",
        /// Forwarder: the CE address is the broadcast address of a subnet the host is on (a `broadcast` route in the kernel's local table); a router forwards no directed broadcast (RFC 2644).
        Ipv4Broadcast => "ipv4-broadcast",
        /// Forwarder: the egress AF_XDP TX ring was full.
        TxRingFull => "tx-ring-full",
        /// Forwarder: plaintext protocol 41 from a CE that an inbound IPsec policy says must arrive encrypted (RFC 4301 §5.2); the XDP program leaves these to the kernel, this catches a policy that changed in between.
        IpsecRequired => "ipsec-required",
        /// Protocol 41 from, or a packet towards, a CE address outside the domain's `ce-ipv4-allow` prefixes.
        CeNotAllowed => "ce-not-allowed",
        /// Slow path: protocol 41 the kernel received on an interface not in `ce-interfaces` (RFC 4213 §3.6); the XDP program drops these itself on attached interfaces (`drop-proto41-wrong-interface`).
        Proto41WrongInterface => "proto41-wrong-interface",
        /// Forwarder: handing the packet to the kernel (raw socket or TUN) failed, or its send buffer was full (the sends never block).
        KernelSendFailed => "kernel-send-failed",
        /// Slow path: multicast the host itself sent into the TUN interface (its MLD reports); harmless, a BR relays no multicast.
        HostMulticast => "host-multicast",
    }
}

named_enum! {
    /// What the relay did with a packet it forwards.
    Path {
        /// Native IPv6 encapsulated to a CE (LAN → CE).
        Encapsulated => "encapsulated",
        /// CE traffic decapsulated to native IPv6 (CE → LAN).
        Decapsulated => "decapsulated",
        /// CE traffic for another CE, re-encapsulated (RFC 5969 §8 hairpin).
        Hairpinned => "hairpinned",
        /// Addressed to the BR's own 6rd address: handed to the host's stack.
        ToHost => "to-host",
        /// The health check's probe (announce-table): protocol 41 it ran through the XDP program, from a CE to the BR's own 6rd address, relayed into the TUN interface like `to-host`, where the host discards it (no next header).
        SelfCheck => "self-check",
        /// ICMPv6 Time Exceeded sent in place of the packet.
        IcmpTimeExceeded => "icmp-time-exceeded",
        /// ICMPv6 Packet Too Big sent in place of the packet.
        IcmpPacketTooBig => "icmp-packet-too-big",
        /// An ICMPv4 error about a packet we encapsulated, relayed as ICMPv6 (RFC 4213 §3.4).
        IcmpRelayed => "icmp-relayed",
    }
}

/// Where the rewritten frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// The frame is an IPv4 packet (protocol 41) for this CE.
    Ipv4 { dst: Ipv4Addr },
    /// The frame is a native IPv6 packet for this destination.
    Ipv6 { dst: Ipv6Addr },
    /// The frame is an IPv6 packet for the host's own stack.
    Host,
}

/// The decision about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame.
    Forward { path: Path, egress: Egress },
    /// Drop it, and count why.
    Drop(DropReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.name()));
            assert!(r
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert!(!r.meaning().is_empty());
            assert_eq!(DropReason::ALL[r.index()], *r);
        }
        for p in Path::ALL {
            assert!(seen.insert(p.name()));
            assert!(!p.meaning().is_empty());
        }
    }
}

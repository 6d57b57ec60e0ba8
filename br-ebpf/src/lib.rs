//! The XDP steering program of the 6rd BR and the ABI it shares with the
//! daemon. The program is C (`src/steer.bpf.c`), compiled by `build.rs`
//! with clang; the constants below are generated from `src/steer_abi.h`,
//! the single definition both sides use.

include!(concat!(env!("OUT_DIR"), "/abi.rs"));

/// Name of the XDP program in the object.
pub const PROGRAM: &str = "br_steer";
/// XSKMAP: `slot * MAX_QUEUES + receive queue` → AF_XDP socket.
pub const MAP_XSKS: &str = "xsks";
/// ARRAY: `ifindex % MAX_IF_TABLE` → `struct if_info` (the interface, its socket slot, MAC, role).
pub const MAP_IF_INFO: &str = "if_info";
/// HASH: BR IPv4 address (network order) → 1.
pub const MAP_BR_ADDRS: &str = "br_addrs";
/// LPM_TRIE: 6rd prefix → domain index.
pub const MAP_SIXRD_PREFIXES: &str = "sixrd_prefixes";
/// ARRAY, two copies: `struct few_sets` (BR addresses and 6rd prefixes
/// compared one by one when there are few).
pub const MAP_FEW_SETS: &str = "few_sets";
/// ARRAY, one entry: which copy of `few_sets` the program reads.
pub const MAP_FEW_CURRENT: &str = "few_current";
/// PERCPU_ARRAY: counters by `STAT_*` index.
pub const MAP_STATS: &str = "stats";
/// ARRAY: domain index → `struct domain_info` (the fast path's parameters).
pub const MAP_DOMAINS: &str = "domains";
/// HASH: interface index → 1, the interfaces the fast path may redirect to.
pub const MAP_FAST_EGRESS: &str = "fast_egress";
/// PERCPU_ARRAY: fast-path declines by `DECLINE_*` index.
pub const MAP_DECLINES: &str = "declines";
/// LPM_TRIE (IPv4): CE prefixes outbound IPsec policies cover (decline).
pub const MAP_IPSEC_OUT4: &str = "ipsec_out4";
/// LPM_TRIE (IPv4): CE prefixes whose protocol 41 inbound IPsec policies
/// require encrypted (to the kernel).
pub const MAP_IPSEC_IN4: &str = "ipsec_in4";
/// LPM_TRIE (IPv6): native destinations outbound IPsec policies cover.
pub const MAP_IPSEC_OUT6: &str = "ipsec_out6";
/// PERCPU_ARRAY, one entry: the fast path's next IPv4 identification.
pub const MAP_IPV4_IDS: &str = "ipv4_ids";
/// ARRAY, one entry: `struct fib_state` (the next-hop cache's generation and switches).
pub const MAP_FIB_STATE: &str = "fib_state";
/// ARRAY, direct-mapped by the key's hash: `struct next_hop_slot` (remembered FIB answers).
pub const MAP_NEXT_HOPS: &str = "next_hops";
/// ARRAY, one entry: 1 while `br-daemon trace` runs.
pub const MAP_TRACE_ON: &str = "trace_on";
/// RINGBUF: `struct trace_event` records while a trace runs.
pub const MAP_TRACE_RING: &str = "trace_ring";

#[cfg(feature = "objects")]
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

#[cfg(feature = "objects")]
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o")));

/// The compiled ELF object, 8-byte aligned as the ELF parser wants.
#[cfg(feature = "objects")]
pub fn object() -> &'static [u8] {
    &OBJECT.0
}

#[cfg(feature = "objects")]
static DEV_BOUND_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/steer_dev_bound.bpf.o"
)));

/// The same program built to be bound to one device (kernel 6.8+): it also
/// reads the VLAN tag the driver took off the frame. Its maps are the
/// shared object's, reused by name.
#[cfg(feature = "objects")]
pub fn dev_bound_object() -> &'static [u8] {
    &DEV_BOUND_OBJECT.0
}

#[cfg(feature = "objects")]
static BENCH_OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/bench.bpf.o")));

/// The benchmark's helper programs (`bench_sink`, `bench_redirect`), not
/// part of the BR.
#[cfg(feature = "objects")]
pub fn bench_object() -> &'static [u8] {
    &BENCH_OBJECT.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_is_consistent() {
        assert_eq!(STAT_NAMES.len() as u32, STAT_COUNT);
        assert_eq!(DECLINE_NAMES.len() as u32, DECLINE_COUNT);
        assert_eq!(DECLINE_NAMES[DECLINE_EGRESS as usize].0, "egress");
        assert_eq!(STAT_NAMES[STAT_REDIRECT_IPV6 as usize].0, "redirect-ipv6");
    }

    #[cfg(feature = "objects")]
    #[test]
    fn objects_are_elf() {
        assert_eq!(&object()[..4], b"\x7fELF");
        assert_eq!(&dev_bound_object()[..4], b"\x7fELF");
    }
}

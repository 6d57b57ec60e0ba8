/* The ABI between the XDP steering program and br-daemon: the one
 * definition of map sizes and counter indices. br-ebpf's build.rs reads
 * this file to generate the Rust constants, so the two cannot drift. */
#ifndef STEER_ABI_H
#define STEER_ABI_H

#define MAX_QUEUES 64
#define MAX_INTERFACES 8
/* The attached-interface table is direct-mapped: entry ifindex % this
 * (a power of two), so the lookup is an array index, not a hash. */
#define MAX_IF_TABLE 4096
#define MAX_BR_ADDRS 64
#define MAX_PREFIXES 64
/* Two generations of MAX_PREFIXES domains (and trie entries), so that a
 * reload writes the new generation before the trie points at it and a
 * packet never meets a half-written or missing domain. */
#define MAX_DOMAIN_SLOTS 128
#define MAX_FAST_EGRESS 64
#define MAX_IPSEC_PREFIXES 256
/* ce-ipv4-allow prefixes a domain may have (struct domain_info holds them). */
#define MAX_CE_ALLOW 8
/* Bytes of each traced frame: Ethernet, IPv4, IPv6 and the next header. */
#define MAX_TRACE_BYTES 128
/* Slots of the next-hop cache (both families together; a power of two:
 * the slot is the top bits of the key's hash). */
#define NEXT_HOP_SLOT_BITS 17
#define MAX_NEXT_HOPS 131072
/* BR addresses and 6rd prefixes the program compares one by one (struct
 * few_sets) instead of looking them up in br_addrs and sixrd_prefixes:
 * with this many or fewer, a few compares beat a hash or trie lookup. */
#define MAX_FEW 4
/* Size of the trace ring buffer (a power of two pages). */
#define MAX_TRACE_RING_BYTES 262144

/* Per-CPU counters, one per final action of the program. */
enum steer_stat {
	STAT_PASS_NOT_IP = 0,         /* not IPv4 or IPv6 (ARP, LLDP, ...): to the kernel */
	STAT_PASS_TRUNCATED = 1,      /* IP header cut short: to the kernel, which drops it */
	STAT_PASS_IPV4_OTHER = 2,     /* IPv4 not addressed to a BR address: to the kernel */
	STAT_PASS_IPV6_OTHER = 3,     /* IPv6 outside every 6rd prefix (ND, MLD, ...): to the kernel */
	STAT_PASS_IPV4_FRAGMENT = 4,  /* fragment for the BR: the kernel reassembles it for the slow path */
	STAT_PASS_BR_NOT_6RD = 5,     /* for a BR address but not 6rd (ping, ssh): to the kernel */
	STAT_PASS_NO_SOCKET = 6,      /* no AF_XDP socket on this queue (daemon stopped): to the kernel */
	STAT_REDIRECT_PROTO41 = 7,    /* protocol 41 for the BR: to the forwarder */
	STAT_REDIRECT_ICMPV4 = 8,     /* ICMPv4 error quoting protocol 41: to the forwarder */
	STAT_REDIRECT_IPV6 = 9,       /* IPv6 to a 6rd prefix: to the forwarder */
	STAT_FAST_ENCAP = 10,         /* IPv6 encapsulated to its CE by the XDP fast path */
	STAT_FAST_DECAP = 11,         /* protocol 41 decapsulated to the LAN by the XDP fast path */
	STAT_FAST_HAIRPIN = 12,       /* protocol 41 from a CE re-encapsulated to another CE by the XDP fast path */
	STAT_PASS_IPSEC_IN = 13,      /* plaintext protocol 41 from a CE that an inbound IPsec policy says must arrive encrypted: to the kernel, which checks (and drops) it */
	STAT_PASS_NOT_OUR_MAC = 14,   /* for the BR but to another host's MAC (unicast): to the kernel, which drops it (or a bridge forwards it) */
	STAT_DROP_L2_MULTICAST = 15,  /* for the BR but sent to a broadcast or multicast MAC: dropped (RFC 1122 §3.3.6) */
	STAT_DROP_PROTO41_WRONG_INTERFACE = 16, /* protocol 41 (or an ICMPv4 error quoting it) for a BR address on an interface not in ce-interfaces: dropped (RFC 4213 §3.6) */
	STAT_PASS_VLAN_TAGGED = 17,   /* VLAN-tagged (VID not 0), the tag in the frame or in the NIC's metadata where the kernel lets XDP read it: to the kernel, which gives it to its VLAN interface or drops it */
	STAT_COUNT = 18,              /* number of counters */
};

/* Per-CPU counters: why the XDP fast path left a packet to the forwarder
 * (which then forwards, answers or drops it with its own counters). */
enum fast_decline {
	DECLINE_DISABLED = 0,         /* fast path off (xdp-fast-path = false) */
	DECLINE_NEEDS_RELAY = 1,      /* not plain: an ICMPv6 error to send (hop limit, MTU), ECN to merge, IPv4 options or padding, to the BR itself, or a check that drops it */
	DECLINE_NO_NEXT_HOP = 2,      /* the kernel FIB has no resolved next hop (unresolved neighbour, local, unreachable, forwarding off) */
	DECLINE_EGRESS = 3,           /* the egress cannot take XDP frames (not attached, or a veth whose peer has neither XDP nor GRO) */
	DECLINE_IPSEC = 4,            /* an outbound IPsec policy covers the packet: the kernel must encrypt it */
	DECLINE_TCP_MSS = 5,          /* a TCP SYN (or a packet with extension headers) in a domain with tcp-mss: the forwarder clamps its MSS */
	DECLINE_COUNT = 6,            /* number of counters */
};

/* An IPv4 prefix, host byte order: addr & mask == net. */
struct ipv4_prefix {
	__u32 net;
	__u32 mask;
};

/* A 6rd domain as the fast path needs it (RFC 5969 §7.1), indexed by the
 * value the 6rd-prefix trie returns. Addresses in network byte order
 * unless said otherwise. */
struct domain_info {
	__u8 br_ipv6[16];             /* the BR's own IPv6 address: to the host */
	__u32 br_ipv4;                /* source of encapsulated packets */
	__u32 ipv4_common;            /* host order: the CEs' common IPv4 prefix bits */
	__u32 prefix_len;             /* 6rd prefix length */
	__u32 embedded_bits;          /* 32 - IPv4MaskLen */
	__u16 mtu;                    /* static tunnel MTU: larger packets need Packet Too Big */
	__u8 ttl;                     /* outer TTL */
	__u8 fast;                    /* 1: the fast path may forward this domain's packets */
	__u32 ce_allow_count;         /* 0: any CE the mapping admits; else only these: */
	struct ipv4_prefix ce_allow[MAX_CE_ALLOW];
	__u16 tcp_mss;                /* 0: no clamp; else TCP SYNs go to the forwarder, which clamps */
	__u16 pad;
};

/* An attached interface, at entry ifindex % MAX_IF_TABLE. */
struct if_info {
	__u32 ifindex;                /* the interface this entry is for (0: none) */
	__u32 slot;                   /* its AF_XDP sockets: slot * MAX_QUEUES + queue */
	__u8 mac[6];                  /* its own MAC: only frames to it are relayed */
	__u8 ce_facing;               /* 1: protocol 41 from CEs is accepted here */
	__u8 fast;                    /* 1: the XDP fast path is on (xdp-fast-path) */
};

/* One traced frame (br-daemon trace), as the XDP program saw it when it
 * decided (fast-path frames as they leave). */
struct trace_event {
	__u64 ns;                     /* CLOCK_MONOTONIC */
	__u32 ifindex;                /* where it arrived */
	__u32 out_ifindex;            /* fast path: where it was redirected; else 0 */
	__u32 stat;                   /* its STAT_* action */
	__u32 len;                    /* frame length (0: bytes not captured) */
	__u8 data[MAX_TRACE_BYTES];       /* its first bytes */
};

/* The next-hop cache's state, entry 0 of fib_state: the daemon bumps
 * the generation on every rtnetlink change (routes, neighbours, links,
 * addresses, rules), fast_egress change, reload and IPsec change, which
 * invalidates every remembered next hop (and the per-CE checks a CE's
 * entry vouches for); and
 * allows the cache per family only while the kernel's routing rules are
 * its defaults (a rule on source or TOS would make the destination alone
 * the wrong key). */
struct fib_state {
	__u64 generation;
	__u32 cache_ipv4;             /* 1: IPv4 next hops may be remembered */
	__u32 cache_ipv6;             /* 1: IPv6 next hops may be remembered */
};

/* The tag of next hops to native destinations (decapsulated packets). */
#define NEXT_HOP_NATIVE 0xffffffff

/* A remembered next hop: by destination and ingress interface, and for a
 * CE (IPv4) the domain index whose checks it passed. */
struct next_hop_key {
	__u8 dst[16];                 /* IPv4: the first 4 bytes */
	__u32 ifindex;                /* where the packet arrived */
	__u32 family;                 /* AF_INET or AF_INET6 */
	__u32 tag;                    /* a CE's domain index, or NEXT_HOP_NATIVE */
};

struct next_hop {
	__u64 generation;             /* fib_state's when it was looked up */
	__u32 ifindex;                /* the egress */
	__u16 max_len;                /* the longest L3 length the lookup passed (MTU) */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 fast_egress;             /* 1: the egress was in fast_egress (a change renews) */
	__u8 pad[5];
};

/* A slot of the direct-mapped next-hop cache: any CPU may write it, so
 * `check` (a hash of every other field) tells a whole entry from one
 * two CPUs wrote at once, which counts as empty. */
struct next_hop_slot {
	struct next_hop_key key;
	__u32 check;
	struct next_hop hop;
};

/* A 6rd prefix of few_sets: the address matches when addr & mask == net
 * (network byte order, compared 64 bits at a time). */
struct few_prefix {
	__u8 net[16];
	__u8 mask[16];
	__u32 index;                  /* its domain, as sixrd_prefixes gives */
	__u32 pad;
};

/* The BR addresses and 6rd prefixes when there are at most MAX_FEW of
 * each; a count above MAX_FEW sends the program to the maps. Two copies
 * (few_sets entries 0 and 1): the daemon writes the one few_current does
 * not name, then names it, so a packet never sees half a reload. */
struct few_sets {
	__u32 br_count;
	__u32 prefix_count;
	__u32 br[MAX_FEW];            /* network byte order */
	struct few_prefix prefixes[MAX_FEW]; /* longest first: the first match is the longest */
};

/* Key of the 6rd prefix LPM trie. */
struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Key of the IPsec prefix LPM tries (IPv4). */
struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

#endif

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* XDP steering and fast path for the 6rd BR.
 *
 * Redirects to the AF_XDP socket of the receive queue exactly what the
 * forwarder handles: IPv4 protocol 41 addressed to a BR address, ICMPv4
 * errors to a BR address that quote protocol 41, and IPv6 whose destination
 * is in a 6rd prefix. Everything else, and anything this program cannot
 * parse, is XDP_PASS: the host's own traffic never depends on the daemon.
 * The redirect falls back to XDP_PASS when no socket is bound to the queue.
 *
 * The fast path forwards the plain packets itself, without the copies
 * copy-mode AF_XDP costs: IPv6 to a CE is encapsulated (RFC 5969 §7.1,
 * RFC 4213 §3.5) and protocol 41 from a CE to a native destination is
 * decapsulated (RFC 4213 §3.6) or, towards another CE, re-encapsulated
 * (RFC 5969 §8 hairpin), each to the next hop the kernel's FIB
 * gives, producing the same bytes as the forwarder's relay (tested).
 * Anything that is not plain (an ICMPv6 error to send, a check that would
 * drop it, an unresolved neighbour, IPv4 options) goes to the forwarder,
 * which is the one place that answers, drops and counts by reason.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer_abi.h"

#ifndef VLAN_VID_MASK
#define VLAN_VID_MASK 0x0fff
#endif
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* AF_XDP sockets by slot * MAX_QUEUES + receive queue. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_INTERFACES * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Attached interfaces: their socket slot, MAC and role, at entry
 * ifindex % MAX_IF_TABLE (the daemon refuses two that share one). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_IF_TABLE);
	__type(key, __u32);
	__type(value, struct if_info);
} if_info SEC(".maps");

/* BR IPv4 addresses, network byte order. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BR_ADDRS);
	__type(key, __u32);
	__type(value, __u8);
} br_addrs SEC(".maps");

/* 6rd prefixes; the value is the domain index. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_DOMAIN_SLOTS);
	__type(key, struct lpm_v6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sixrd_prefixes SEC(".maps");

/* struct few_sets, two copies; few_current[0] is the one in use. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct few_sets);
} few_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} few_current SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* The domains, by the index the 6rd-prefix trie returns. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_DOMAIN_SLOTS);
	__type(key, __u32);
	__type(value, struct domain_info);
} domains SEC(".maps");

/* Interfaces the fast path may redirect to: ifindex -> 1. The daemon
 * lists the attached interfaces that can transmit XDP frames. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FAST_EGRESS);
	__type(key, __u32);
	__type(value, __u8);
} fast_egress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECLINE_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} declines SEC(".maps");

/* The remote prefixes of the kernel's IPsec policies (the daemon mirrors
 * the xfrm SPD): CEs that outbound policies cover, CEs whose protocol 41
 * inbound policies require encrypted, and native IPv6 destinations that
 * outbound IPv6 policies cover. The value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_IPSEC_PREFIXES);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipsec_out4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_IPSEC_PREFIXES);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipsec_in4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_IPSEC_PREFIXES);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipsec_out6 SEC(".maps");

/* Per-CPU IPv4 identification counter of encapsulated packets (DF is
 * never set, so IDs should vary: RFC 6864 §4.1). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ipv4_ids SEC(".maps");

/* The next-hop cache (struct fib_state, next_hop): bpf_fib_lookup is
 * half of the fast path's cost; a remembered answer is valid until the
 * daemon bumps the generation after a netlink change. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fib_state);
} fib_state SEC(".maps");

/* Direct-mapped by the key's hash: an array lookup the verifier inlines,
 * where a hash map costs a helper call and jhash per packet. A slot two
 * keys share holds the last one asked. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_NEXT_HOPS);
	__type(key, __u32);
	__type(value, struct next_hop_slot);
} next_hops SEC(".maps");

/* `br-daemon trace`: entry 0 is 1 while a trace runs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} trace_on SEC(".maps");

/* struct trace_event records for the tracer (full: events are skipped). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MAX_TRACE_RING_BYTES);
} trace_ring SEC(".maps");

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define IP_MF_AND_OFFSET 0x3fff

/* A 16-bit length field of the packet plus `add`, with bounds the
 * verifier can see: the verifiers of 6.1 and 6.12 lose the range of a
 * byte-swapped value ("math between pkt pointer and register with
 * unbounded min value"), and clang drops a plain mask as redundant, so
 * the mask is an instruction of its own. */
static __always_inline __u32 bounded_len(__u16 be_len, __u32 add)
{
	__u32 v = bpf_ntohs(be_len);

	asm volatile("%[v] &= 0xffff" : [v] "+r"(v));
	return v + add;
}

static __always_inline const struct few_sets *few(void)
{
	__u32 zero = 0, *current = bpf_map_lookup_elem(&few_current, &zero);
	__u32 which;

	if (!current)
		return 0;
	which = *current & 1;
	return bpf_map_lookup_elem(&few_sets, &which);
}

/* Whether `addr_be` is a BR address: compared with each when few,
 * else looked up. */
static __always_inline int is_br_addr(__u32 addr_be)
{
	const struct few_sets *f = few();

	if (!f)
		return 0;
	if (f->br_count > MAX_FEW)
		return bpf_map_lookup_elem(&br_addrs, &addr_be) != 0;
	/* Without branches: clang cannot unroll the loop with an early return. */
	int hit = 0;

#pragma unroll
	for (int i = 0; i < MAX_FEW; i++)
		hit |= (i < f->br_count) & (f->br[i] == addr_be);
	return hit;
}

/* The domain index of the longest 6rd prefix holding `a`, or -1. */
static __always_inline long sixrd_domain(const struct in6_addr *a)
{
	const struct few_sets *f = few();
	struct lpm_v6_key key = { .prefixlen = 128 };
	__u64 hi, lo;
	__u32 *index;

	if (!f)
		return -1;
	if (f->prefix_count > MAX_FEW) {
		__builtin_memcpy(key.addr, a, sizeof(key.addr));
		index = bpf_map_lookup_elem(&sixrd_prefixes, &key);
		/* (long): u32 ? u32 : -1 would be unsigned, never negative. */
		return index ? (long)*index : -1;
	}
	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, (const __u8 *)a + 8, 8);
#pragma unroll
	for (int i = 0; i < MAX_FEW; i++) {
		const struct few_prefix *p = &f->prefixes[i];
		__u64 net_hi, net_lo, mask_hi, mask_lo;

		if (i >= f->prefix_count)
			break;
		__builtin_memcpy(&net_hi, p->net, 8);
		__builtin_memcpy(&net_lo, p->net + 8, 8);
		__builtin_memcpy(&mask_hi, p->mask, 8);
		__builtin_memcpy(&mask_lo, p->mask + 8, 8);
		if ((hi & mask_hi) == net_hi && (lo & mask_lo) == net_lo)
			return p->index;
	}
	return -1;
}

/* While `br-daemon trace` runs (trace_on[0] = 1), each frame's final
 * action, its interface and its first MAX_TRACE_BYTES bytes go to
 * trace_ring; otherwise this costs one inlined array lookup. */
static __always_inline void trace(struct xdp_md *ctx, __u32 stat, __u32 out_ifindex)
{
	struct trace_event *e;
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&trace_on, &zero);
	__u64 len;

	if (!on || !*on)
		return;
	e = bpf_ringbuf_reserve(&trace_ring, sizeof(*e), 0);
	if (!e)
		return;
	len = ctx->data_end - ctx->data;
	e->ns = bpf_ktime_get_ns();
	e->ifindex = ctx->ingress_ifindex;
	e->out_ifindex = out_ifindex;
	e->stat = stat;
	e->len = len;
	if (len > MAX_TRACE_BYTES)
		len = MAX_TRACE_BYTES;
	/* 1..MAX_TRACE_BYTES in a form the verifier can bound (the compiler
	 * would drop the mask after the test above without the barrier). */
	asm volatile("" : "+r"(len));
	len = ((len - 1) & (MAX_TRACE_BYTES - 1)) + 1;
	if (bpf_xdp_load_bytes(ctx, 0, e->data, len))
		e->len = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Every frame ends here: counted by its final action (and traced). */
static __always_inline int count_to(struct xdp_md *ctx, __u32 stat, int action, __u32 out_ifindex)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &stat);

	if (c)
		*c += 1;
	trace(ctx, stat, out_ifindex);
	return action;
}

static __always_inline int count(struct xdp_md *ctx, __u32 stat, int action)
{
	return count_to(ctx, stat, action, 0);
}

static __always_inline int steer(struct xdp_md *ctx, const struct if_info *in, __u32 stat)
{
	__u32 key;
	int action;

	if (ctx->rx_queue_index >= MAX_QUEUES)
		return count(ctx, STAT_PASS_NO_SOCKET, XDP_PASS);
	key = in->slot * MAX_QUEUES + ctx->rx_queue_index;
	/* The low bits of the flags are the action when the slot is empty. */
	action = bpf_redirect_map(&xsks, key, XDP_PASS);

	return count(ctx, action == XDP_REDIRECT ? stat : STAT_PASS_NO_SOCKET, action);
}

/* The attached interface the frame arrived on, or 0 (no entry: the
 * daemon is not serving it). */
static __always_inline const struct if_info *ingress(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 key = ifindex & (MAX_IF_TABLE - 1);
	const struct if_info *in = bpf_map_lookup_elem(&if_info, &key);

	return in && in->ifindex == ifindex ? in : 0;
}

/* STAT_* of a frame for the BR that is not addressed to the interface's
 * own MAC, or -1 when it is. A router forwards only frames sent to it
 * (RFC 1122 §3.3.6, RFC 1812 §5.3.4). */
static __always_inline int foreign_mac(const struct ethhdr *eth, const struct if_info *in)
{
	const __u8 *d = eth->h_dest, *m = in->mac;

	if (d[0] & 1)
		return STAT_DROP_L2_MULTICAST;
	/* Byte by byte: clang would make a memcmp a call BPF cannot take. */
	if ((d[0] ^ m[0]) | (d[1] ^ m[1]) | (d[2] ^ m[2]) | (d[3] ^ m[3]) | (d[4] ^ m[4]) |
	    (d[5] ^ m[5]))
		return STAT_PASS_NOT_OUR_MAC;
	return -1;
}

/* Counts and ends a frame for the BR whose destination MAC is not ours. */
static __always_inline int refuse_foreign(struct xdp_md *ctx, int stat)
{
	return count(ctx, stat, stat == STAT_DROP_L2_MULTICAST ? XDP_DROP : XDP_PASS);
}

/* -1 when a 6rd frame from a CE (protocol 41, or an ICMPv4 error quoting
 * it) may be relayed, else the action, counted. Only the host's traffic
 * to the BR address that is not 6rd (ping, ssh) stays the kernel's. */
static __always_inline int admit_from_ce(struct xdp_md *ctx, const struct ethhdr *eth,
					 const struct if_info *in)
{
	int foreign = foreign_mac(eth, in);

	if (foreign >= 0)
		return refuse_foreign(ctx, foreign);
	/* CEs are only behind the interfaces that face them (RFC 4213 §3.6). */
	if (!in->ce_facing)
		return count(ctx, STAT_DROP_PROTO41_WRONG_INTERFACE, XDP_DROP);
	return -1;
}

/* The fast path's answer when it leaves the packet to the forwarder. */
#define DECLINED (-1)

static __always_inline int decline(__u32 why)
{
	__u64 *c = bpf_map_lookup_elem(&declines, &why);

	if (c)
		*c += 1;
	return DECLINED;
}

/* Addresses a BR never relays; the forwarder drops them with a reason
 * (RFC 4291 §2.5.2-2.5.6, §2.7). */
static __always_inline int martian_ipv6(const struct in6_addr *a)
{
	if (a->s6_addr[0] == 0xff)
		return 1;
	if (a->s6_addr[0] == 0xfe && (a->s6_addr[1] & 0xc0) == 0x80)
		return 1;
	return a->s6_addr32[0] == 0 && a->s6_addr32[1] == 0 &&
	       (a->s6_addr32[2] == 0 || a->s6_addr32[2] == bpf_htonl(0xffff));
}

/* 0/8, 127/8, 224/4 and 240/4 (RFC 1122 §3.2.1.3). */
static __always_inline int martian_ipv4(__u32 addr_be)
{
	__u8 first = bpf_ntohl(addr_be) >> 24;

	return first == 0 || first == 127 || first >= 224;
}

static __always_inline int same_ipv6(const struct in6_addr *a, const __u8 *b)
{
	__u32 w[4];

	__builtin_memcpy(w, b, sizeof(w));
	return a->s6_addr32[0] == w[0] && a->s6_addr32[1] == w[1] &&
	       a->s6_addr32[2] == w[2] && a->s6_addr32[3] == w[3];
}

static __always_inline int in_any_prefix(const struct in6_addr *a)
{
	return sixrd_domain(a) >= 0;
}

/* The CE IPv4 address an address of the domain embeds (RFC 5969 §7.1.1):
 * the common prefix, then the embedded_bits that follow the 6rd prefix.
 * Network byte order. */
static __always_inline __u32 ce_ipv4(const struct in6_addr *a, const struct domain_info *d)
{
	__u32 bits = d->embedded_bits & 63;
	__u32 shift, field_lo;
	__u64 hi, lo, field;

	if (bits == 0)
		return bpf_htonl(d->ipv4_common);
	if (bits > 32)
		bits = 32;
	hi = ((__u64)bpf_ntohl(a->s6_addr32[0]) << 32) | bpf_ntohl(a->s6_addr32[1]);
	lo = ((__u64)bpf_ntohl(a->s6_addr32[2]) << 32) | bpf_ntohl(a->s6_addr32[3]);
	/* Bits right of the field; the daemon checked prefix_len + bits <= 128. */
	shift = (128 - d->prefix_len - bits) & 127;
	if (shift >= 64)
		field = hi >> (shift - 64);
	else if (shift == 0)
		field = lo;
	else
		field = (lo >> shift) | (hi << (64 - shift));
	field_lo = (__u32)(field & ((1ULL << bits) - 1));
	return bpf_htonl(d->ipv4_common | field_lo);
}

/* Whether `addr_be` may be a CE of `d` (its ce-ipv4-allow prefixes). */
static __always_inline int ce_allowed(const struct domain_info *d, __u32 addr_be)
{
	__u32 a = bpf_ntohl(addr_be);

	if (d->ce_allow_count == 0)
		return 1;
#pragma unroll
	for (int i = 0; i < MAX_CE_ALLOW; i++) {
		if (i >= d->ce_allow_count)
			break;
		if ((a & d->ce_allow[i].mask) == d->ce_allow[i].net)
			return 1;
	}
	return 0;
}

/* RFC 1071 checksum of a 20-byte IPv4 header. */
static __always_inline __u16 ipv4_header_sum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

static __always_inline int ipsec_covers4(void *trie, __u32 addr_be)
{
	struct lpm_v4_key key = { .prefixlen = 32 };

	__builtin_memcpy(key.addr, &addr_be, sizeof(key.addr));
	return bpf_map_lookup_elem(trie, &key) != 0;
}

static __always_inline int ipsec_covers6(const struct in6_addr *a)
{
	struct lpm_v6_key key = { .prefixlen = 128 };

	__builtin_memcpy(key.addr, a, sizeof(key.addr));
	return bpf_map_lookup_elem(&ipsec_out6, &key) != 0;
}

/* Whether the IPv6 packet may be a TCP SYN whose MSS domain `d` clamps
 * (tcp-mss): the forwarder rewrites those. Extension headers that could
 * hide one go there too; every other packet stays on the fast path. */
static __always_inline int needs_mss_clamp(const struct ipv6hdr *ip6, void *end,
					   const struct domain_info *d)
{
	const __u8 *flags = (const __u8 *)(ip6 + 1) + 13;

	if (!d->tcp_mss)
		return 0;
	if (ip6->nexthdr == IPPROTO_HOPOPTS || ip6->nexthdr == IPPROTO_ROUTING ||
	    ip6->nexthdr == IPPROTO_DSTOPTS)
		return 1;
	if (ip6->nexthdr != IPPROTO_TCP)
		return 0;
	return (void *)(flags + 1) > end || (*flags & 0x02);
}

static __always_inline int fast_egress_ok(__u32 ifindex)
{
	return bpf_map_lookup_elem(&fast_egress, &ifindex) != 0;
}

/* A next-hop cache lookup in progress: its key, the generation read
 * before anything else (an answer that races a change is stored under
 * the old one, so never used), its slot and the entry found there. */
_Static_assert(MAX_NEXT_HOPS == 1 << NEXT_HOP_SLOT_BITS, "slots by the hash's top bits");
_Static_assert(sizeof(struct next_hop_key) == 28 && sizeof(struct next_hop) == 32,
	       "the hash and check read them as 64-bit words");

struct nh_lookup {
	struct next_hop_key key;
	struct next_hop_slot seen;
	struct next_hop_slot *slot;
	__u64 generation;
	__u64 key_hash;
	int use;
	int found;
};

/* Independent multiplies (no chain): the hash of a key and the check of
 * a slot cost a few cycles. The constants are odd 64-bit ones. */
static __always_inline __u64 next_hop_key_hash(const struct next_hop_key *k)
{
	const __u64 *w = (const __u64 *)k;
	__u64 last = k->tag;

	return w[0] * 0x9e3779b97f4a7c15ULL + w[1] * 0xc2b2ae3d27d4eb4fULL +
	       w[2] * 0x165667b19e3779f9ULL + last * 0xd6e8feb86659fd93ULL;
}

static __always_inline __u32 next_hop_check(__u64 key_hash, const struct next_hop *h)
{
	const __u64 *w = (const __u64 *)h;
	__u64 c = 0x2545f4914f6cdd1dULL + key_hash + w[0] * 0xff51afd7ed558ccdULL +
		  w[1] * 0xc4ceb9fe1a85ec53ULL + w[2] * 0x9fb21c651e98df25ULL +
		  w[3] * 0x8cb92ba72f3d8dd7ULL;

	return (__u32)(c >> 32) ^ (__u32)c;
}

static __always_inline int same_next_hop_key(const struct next_hop_key *a,
					     const struct next_hop_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && a->tag == b->tag;
}

/* Whether the cache holds a current answer for `fib` (family, ifindex,
 * destination and tot_len set) under `tag`: then fib's ifindex, smac
 * and dmac are the next hop's, as the helper would leave them, and
 * *egress_ok whether the fast path may redirect there. A remembered
 * answer serves a packet no longer than the ones the kernel passed (its
 * MTU check). */
static __always_inline int next_hop_remembered(struct bpf_fib_lookup *fib, __u32 tag,
					       struct nh_lookup *l, int *egress_ok)
{
	__u32 zero = 0, index;
	struct fib_state *st = bpf_map_lookup_elem(&fib_state, &zero);
	const struct next_hop *hop = &l->seen.hop;

	if (!st)
		return 0;
	l->generation = st->generation;
	l->use = fib->family == AF_INET ? st->cache_ipv4 : st->cache_ipv6;
	if (!l->use)
		return 0;
	l->key.ifindex = fib->ifindex;
	l->key.family = fib->family;
	l->key.tag = tag;
	if (fib->family == AF_INET)
		__builtin_memcpy(l->key.dst, &fib->ipv4_dst, 4);
	else
		__builtin_memcpy(l->key.dst, fib->ipv6_dst, 16);
	l->key_hash = next_hop_key_hash(&l->key);
	index = l->key_hash >> (64 - NEXT_HOP_SLOT_BITS);
	l->slot = bpf_map_lookup_elem(&next_hops, &index);
	if (!l->slot)
		return 0;
	/* A copy, checked whole: another CPU may be rewriting the slot. */
	__builtin_memcpy(&l->seen, l->slot, sizeof(l->seen));
	l->found = same_next_hop_key(&l->seen.key, &l->key) &&
		   next_hop_check(l->key_hash, hop) == l->seen.check;
	if (!l->found || hop->generation != l->generation || fib->tot_len > hop->max_len)
		return 0;
	fib->ifindex = hop->ifindex;
	__builtin_memcpy(fib->smac, hop->smac, ETH_ALEN);
	__builtin_memcpy(fib->dmac, hop->dmac, ETH_ALEN);
	*egress_ok = hop->fast_egress;
	return 1;
}

/* bpf_fib_lookup after next_hop_remembered missed; a success (and
 * whether its egress is in fast_egress) is remembered. */
static __always_inline int next_hop_ask(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
					struct nh_lookup *l, int *egress_ok)
{
	struct next_hop_slot fresh = {};
	const struct next_hop *old = &l->seen.hop;
	__u16 len = fib->tot_len;
	int rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);

	*egress_ok = rc == BPF_FIB_LKUP_RET_SUCCESS && fast_egress_ok(fib->ifindex);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || !l->use || !l->slot)
		return rc;
	fresh.key = l->key;
	fresh.hop.fast_egress = *egress_ok;
	fresh.hop.generation = l->generation;
	fresh.hop.ifindex = fib->ifindex;
	fresh.hop.max_len = len;
	if (l->found && old->generation == l->generation && old->ifindex == fib->ifindex &&
	    old->max_len > len)
		fresh.hop.max_len = old->max_len;
	__builtin_memcpy(fresh.hop.smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(fresh.hop.dmac, fib->dmac, ETH_ALEN);
	fresh.check = next_hop_check(l->key_hash, &fresh.hop);
	__builtin_memcpy(l->slot, &fresh, sizeof(fresh));
	return rc;
}

static __always_inline int redirect_fast(struct xdp_md *ctx, __u32 ifindex, __u32 stat)
{
	return count_to(ctx, stat, bpf_redirect(ifindex, 0), ifindex);
}

/* Writes the 20-byte outer IPv4 header (RFC 4213 §3.5) as the relay's
 * encapsulate does. */
static __always_inline void write_outer_ipv4(struct iphdr *ip, __u8 tc, __u16 len6,
					     const struct domain_info *d, __u32 ce)
{
	__u32 zero = 0, *id = bpf_map_lookup_elem(&ipv4_ids, &zero);

	ip->version = 4;
	ip->ihl = 5;
	/* DSCP and ECN from the inner packet (RFC 6040 §4.1 normal mode). */
	ip->tos = tc;
	ip->tot_len = bpf_htons(len6 + sizeof(*ip));
	ip->id = bpf_htons(id ? (*id)++ : 0);
	/* No DF with a static tunnel MTU (RFC 4213 §3.2.1). */
	ip->frag_off = 0;
	ip->ttl = d->ttl;
	ip->protocol = IPPROTO_IPV6;
	ip->check = 0;
	ip->saddr = d->br_ipv4;
	ip->daddr = ce;
	ip->check = ipv4_header_sum(ip);
}

/* The CE an IPv6 packet of domain `d` goes to, its outer TOS and the
 * next hop: 0, or DECLINED (counted) when the relay must handle it. */
static __always_inline int route_to_ce(struct xdp_md *ctx, struct ipv6hdr *ip6, __u16 len6,
				       const struct domain_info *d, __u32 index,
				       struct bpf_fib_lookup *fib, __u32 *ce, __u8 *tc)
{
	struct nh_lookup l = {};
	int egress_ok = 0;

	*ce = ce_ipv4(&ip6->daddr, d);
	if (martian_ipv4(*ce))
		return decline(DECLINE_NEEDS_RELAY);
	*tc = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	fib->family = AF_INET;
	fib->tos = *tc;
	fib->l4_protocol = IPPROTO_IPV6;
	fib->tot_len = len6 + sizeof(struct iphdr);
	fib->ipv4_src = d->br_ipv4;
	fib->ipv4_dst = *ce;
	fib->ifindex = ctx->ingress_ifindex;
	/* Remembered for this CE of this domain (`index`), the answer also
	 * vouches for the checks below: only a reload or an IPsec change can
	 * change their outcome, and both renew the generation. */
	if (!next_hop_remembered(fib, index, &l, &egress_ok)) {
		if (is_br_addr(*ce) || !ce_allowed(d, *ce))
			return decline(DECLINE_NEEDS_RELAY);
		/* A redirected frame never meets xfrm: IPsec is the kernel's. */
		if (ipsec_covers4(&ipsec_out4, *ce))
			return decline(DECLINE_IPSEC);
		if (next_hop_ask(ctx, fib, &l, &egress_ok) != BPF_FIB_LKUP_RET_SUCCESS)
			return decline(DECLINE_NO_NEXT_HOP);
	}
	if (!egress_ok)
		return decline(DECLINE_EGRESS);
	return 0;
}

static __always_inline void write_eth(struct ethhdr *eth, const struct bpf_fib_lookup *fib,
				      __u16 proto)
{
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	eth->h_proto = bpf_htons(proto);
}

/* IPv6 towards domain `index`: encapsulate it to its CE, as the relay's
 * from_ipv6 does for a plain packet. */
static __always_inline int fast_encapsulate(struct xdp_md *ctx, __u32 index)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct bpf_fib_lookup fib = {};
	struct domain_info *d;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 len6;
	__u32 ce;
	__u8 tc;

	d = bpf_map_lookup_elem(&domains, &index);
	if (!d || !d->fast)
		return decline(DECLINE_DISABLED);
	if ((void *)(ip6 + 1) > end || ip6->version != 6)
		return decline(DECLINE_NEEDS_RELAY);
	len6 = bounded_len(ip6->payload_len, sizeof(*ip6));
	/* Exactly one packet: no jumbogram, no Ethernet padding to trim. */
	if (ip6->payload_len == 0 || (void *)ip6 + len6 != end)
		return decline(DECLINE_NEEDS_RELAY);
	if (ip6->hop_limit <= 1 || len6 > d->mtu)
		return decline(DECLINE_NEEDS_RELAY);
	if (martian_ipv6(&ip6->daddr) || martian_ipv6(&ip6->saddr) ||
	    same_ipv6(&ip6->daddr, d->br_ipv6))
		return decline(DECLINE_NEEDS_RELAY);
	/* A 6rd source arriving natively is the BR's own or spoofed. */
	if (in_any_prefix(&ip6->saddr))
		return decline(DECLINE_NEEDS_RELAY);
	if (needs_mss_clamp(ip6, end, d))
		return decline(DECLINE_TCP_MSS);
	if (route_to_ce(ctx, ip6, len6, d, index, &fib, &ce, &tc))
		return DECLINED;
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return decline(DECLINE_NEEDS_RELAY);

	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	ip = data + sizeof(*eth);
	ip6 = (void *)(ip + 1);
	/* Cannot fail (only the head moved), but the verifier wants it. */
	if ((void *)(ip6 + 1) > end)
		return count(ctx, STAT_PASS_TRUNCATED, XDP_DROP);
	write_eth(eth, &fib, ETH_P_IP);
	write_outer_ipv4(ip, tc, len6, d, ce);
	ip6->hop_limit--;
	return redirect_fast(ctx, fib.ifindex, STAT_FAST_ENCAP);
}

/* Protocol 41 from a CE to another CE of domain `index` (RFC 5969 §8):
 * a new outer header, as the relay's hairpin does. The caller checked
 * the source and ECN. */
static __always_inline int fast_hairpin(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *ip,
					struct ipv6hdr *ip6, __u16 len6, __u32 index)
{
	struct bpf_fib_lookup fib = {};
	struct domain_info *d;
	__u32 ce;
	__u8 tc;

	d = bpf_map_lookup_elem(&domains, &index);
	if (!d || !d->fast)
		return decline(DECLINE_DISABLED);
	if (same_ipv6(&ip6->daddr, d->br_ipv6) || len6 > d->mtu)
		return decline(DECLINE_NEEDS_RELAY);
	if (needs_mss_clamp(ip6, (void *)(long)ctx->data_end, d))
		return decline(DECLINE_TCP_MSS);
	if (route_to_ce(ctx, ip6, len6, d, index, &fib, &ce, &tc))
		return DECLINED;
	write_eth(eth, &fib, ETH_P_IP);
	write_outer_ipv4(ip, tc, len6, d, ce);
	ip6->hop_limit--;
	return redirect_fast(ctx, fib.ifindex, STAT_FAST_HAIRPIN);
}

/* Protocol 41 for a BR address: decapsulate it to its native destination,
 * as the relay's from_ipv4 does for a plain packet. */
static __always_inline int fast_decapsulate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct ipv6hdr *ip6 = (void *)(ip + 1);
	struct bpf_fib_lookup fib = {};
	struct domain_info *d;
	struct ethhdr *eth;
	__u8 outer_ecn, inner_ecn;
	long found;
	__u32 index;
	__u32 len6;
	struct nh_lookup l = {};
	int egress_ok = 0;

	if ((void *)(ip6 + 1) > end)
		return decline(DECLINE_NEEDS_RELAY);
	/* Options, a bad checksum or a length that is not the frame's: the
	 * forwarder strips, drops or trims. */
	if (ip->version != 4 || ip->ihl != 5 || ipv4_header_sum(ip) != 0 ||
	    (void *)ip + bounded_len(ip->tot_len, 0) != end)
		return decline(DECLINE_NEEDS_RELAY);
	if (martian_ipv4(ip->saddr) || is_br_addr(ip->saddr))
		return decline(DECLINE_NEEDS_RELAY);
	len6 = bounded_len(ip6->payload_len, sizeof(*ip6));
	if (ip6->version != 6 || ip6->payload_len == 0 || (void *)ip6 + len6 != end)
		return decline(DECLINE_NEEDS_RELAY);
	if (ip6->hop_limit <= 1 || martian_ipv6(&ip6->saddr) || martian_ipv6(&ip6->daddr))
		return decline(DECLINE_NEEDS_RELAY);
	/* RFC 5969 §12: the inner source embeds the outer source. */
	found = sixrd_domain(&ip6->saddr);
	if (found < 0)
		return decline(DECLINE_NEEDS_RELAY);
	index = found;
	d = bpf_map_lookup_elem(&domains, &index);
	if (!d || !d->fast)
		return decline(DECLINE_DISABLED);
	if (ce_ipv4(&ip6->saddr, d) != ip->saddr || ip->daddr != d->br_ipv4 ||
	    !ce_allowed(d, ip->saddr))
		return decline(DECLINE_NEEDS_RELAY);
	/* RFC 6040 §4.2: only combinations that leave the inner ECN as is. */
	outer_ecn = ip->tos & 3;
	inner_ecn = (ip6->flow_lbl[0] >> 4) & 3;
	if ((outer_ecn == 3 && inner_ecn != 3) || (outer_ecn == 1 && inner_ecn == 2))
		return decline(DECLINE_NEEDS_RELAY);
	if (needs_mss_clamp(ip6, end, d))
		return decline(DECLINE_TCP_MSS);
	fib.family = AF_INET6;
	fib.l4_protocol = ip6->nexthdr;
	fib.tot_len = len6;
	__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	fib.ifindex = ctx->ingress_ifindex;
	/* A native destination's remembered answer also vouches that it is
	 * in no 6rd prefix and no outbound IPsec policy covers it: only a
	 * reload or an IPsec change alters that, and both renew it. */
	if (!next_hop_remembered(&fib, NEXT_HOP_NATIVE, &l, &egress_ok)) {
		/* To another CE: hairpin. */
		found = sixrd_domain(&ip6->daddr);
		if (found >= 0)
			return fast_hairpin(ctx, data, ip, ip6, len6, found);
		if (ipsec_covers6(&ip6->daddr))
			return decline(DECLINE_IPSEC);
		if (next_hop_ask(ctx, &fib, &l, &egress_ok) != BPF_FIB_LKUP_RET_SUCCESS)
			return decline(DECLINE_NO_NEXT_HOP);
	}
	if (!egress_ok)
		return decline(DECLINE_EGRESS);
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr)))
		return decline(DECLINE_NEEDS_RELAY);

	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	ip6 = data + sizeof(*eth);
	/* Cannot fail (only the head moved), but the verifier wants it. */
	if ((void *)(ip6 + 1) > end)
		return count(ctx, STAT_PASS_TRUNCATED, XDP_DROP);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	ip6->hop_limit--;
	return redirect_fast(ctx, fib.ifindex, STAT_FAST_DECAP);
}

static __always_inline int steer_ipv6(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	const struct if_info *in;
	long index;
	int action;

	if ((void *)(ip6 + 1) > end)
		return count(ctx, STAT_PASS_TRUNCATED, XDP_PASS);
	index = sixrd_domain(&ip6->daddr);
	if (index < 0)
		return count(ctx, STAT_PASS_IPV6_OTHER, XDP_PASS);
	in = ingress(ctx);
	if (!in)
		return count(ctx, STAT_PASS_NO_SOCKET, XDP_PASS);
	action = foreign_mac(eth, in);
	if (action >= 0)
		return refuse_foreign(ctx, action);
	action = in->fast ? fast_encapsulate(ctx, index) : decline(DECLINE_DISABLED);
	if (action != DECLINED)
		return action;
	return steer(ctx, in, STAT_REDIRECT_IPV6);
}

/* Protocol 41 for a BR address, from a CE. */
static __always_inline int steer_proto41(struct xdp_md *ctx, struct ethhdr *eth,
					 const struct if_info *in)
{
	struct iphdr *ip = (void *)(eth + 1);
	int action = admit_from_ce(ctx, eth, in);

	if (action >= 0)
		return action;
	/* Fragments go to the kernel, which reassembles them and hands the
	 * whole packet to the daemon's raw socket (the slow path). */
	if (ip->frag_off & bpf_htons(IP_MF_AND_OFFSET))
		return count(ctx, STAT_PASS_IPV4_FRAGMENT, XDP_PASS);
	/* Must have come through IPsec: the kernel checks its policy and
	 * hands what it decrypted to the daemon's socket. */
	if (ipsec_covers4(&ipsec_in4, ip->saddr))
		return count(ctx, STAT_PASS_IPSEC_IN, XDP_PASS);
	/* Off: none of the fast path's checks (this is all steering costs). */
	action = in->fast ? fast_decapsulate(ctx) : decline(DECLINE_DISABLED);
	if (action != DECLINED)
		return action;
	return steer(ctx, in, STAT_REDIRECT_PROTO41);
}

static __always_inline int steer_ipv4(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct iphdr *ip = (void *)(eth + 1);
	const struct if_info *in;
	__u32 daddr;
	__u8 *icmp;
	int action;

	if ((void *)(ip + 1) > end)
		return count(ctx, STAT_PASS_TRUNCATED, XDP_PASS);
	daddr = ip->daddr;
	if (!is_br_addr(daddr))
		return count(ctx, STAT_PASS_IPV4_OTHER, XDP_PASS);
	if (ip->protocol == IPPROTO_IPV6) {
		in = ingress(ctx);
		if (!in)
			return count(ctx, STAT_PASS_NO_SOCKET, XDP_PASS);
		return steer_proto41(ctx, eth, in);
	}
	if (ip->protocol != IPPROTO_ICMP || ip->ihl < 5)
		return count(ctx, STAT_PASS_BR_NOT_6RD, XDP_PASS);
	if (ip->frag_off & bpf_htons(IP_MF_AND_OFFSET))
		return count(ctx, STAT_PASS_IPV4_FRAGMENT, XDP_PASS);
	/* An ICMP error is ours only if it quotes a protocol-41 packet:
	 * 8 bytes of ICMP header, then the quoted IPv4 header. */
	icmp = (__u8 *)ip + (ip->ihl & 0xf) * 4;
	if ((void *)(icmp + 8 + sizeof(struct iphdr)) > end)
		return count(ctx, STAT_PASS_BR_NOT_6RD, XDP_PASS);
	if ((icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED) ||
	    icmp[8 + 9] != IPPROTO_IPV6)
		return count(ctx, STAT_PASS_BR_NOT_6RD, XDP_PASS);
	in = ingress(ctx);
	if (!in)
		return count(ctx, STAT_PASS_NO_SOCKET, XDP_PASS);
	action = admit_from_ce(ctx, eth, in);
	if (action >= 0)
		return action;
	return steer(ctx, in, STAT_REDIRECT_ICMPV4);
}

#ifdef BR_DEV_BOUND
/* Built into steer_dev_bound.bpf.o only: the kernel (6.8+) lets a program
 * bound to one device read the VLAN tag its driver took off the frame. */
extern int bpf_xdp_metadata_rx_vlan_tag(const struct xdp_md *ctx, __be16 *vlan_proto,
					__u16 *vlan_tci) __ksym;

static __always_inline int vlan_in_metadata(struct xdp_md *ctx)
{
	__be16 proto;
	__u16 tci = 0;

	/* -ENODATA: untagged; -EOPNOTSUPP: the driver cannot tell. */
	if (bpf_xdp_metadata_rx_vlan_tag(ctx, &proto, &tci))
		return 0;
	return tci & VLAN_VID_MASK;
}
#else
static __always_inline int vlan_in_metadata(struct xdp_md *ctx)
{
	return 0;
}
#endif

/* A tagged frame belongs to the VLAN interface, not to the one XDP runs on:
 * the kernel delivers it there or drops it. VID 0 only carries a priority
 * (IEEE 802.1Q §9.6): the kernel treats it as untagged, so does this. */
static __always_inline int vlan_tagged(struct xdp_md *ctx, const struct ethhdr *eth, void *end)
{
	if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD)) {
		const __be16 *tci = (const void *)(eth + 1);

		return (void *)(tci + 1) > end || (bpf_ntohs(*tci) & VLAN_VID_MASK);
	}
	return vlan_in_metadata(ctx);
}

SEC("xdp")
int br_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return count(ctx, STAT_PASS_NOT_IP, XDP_PASS);
	if (vlan_tagged(ctx, eth, end))
		return count(ctx, STAT_PASS_VLAN_TAGGED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return steer_ipv6(ctx, eth, end);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return steer_ipv4(ctx, eth, end);
	return count(ctx, STAT_PASS_NOT_IP, XDP_PASS);
}

char _license[] SEC("license") = "Dual MIT/GPL";

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Benchmark helpers (cargo xtask bench), not part of the BR:
 * - bench_sink: counts every frame (per CPU) and drops it: the sink. A
 *   frame whose IPv6 flow label is LATENCY_MARK carries a CLOCK_MONOTONIC
 *   timestamp in place of its UDP header (latency trials); its one-way
 *   latency goes into a histogram of 1-microsecond buckets.
 * - bench_redirect: redirects every frame to the interface in tx_port[0]:
 *   the XDP ceiling of the testbed.
 * - bench_xsk: redirects every frame to the AF_XDP socket of its receive
 *   queue: the bare AF_XDP forwarder's steering (its ceiling).
 * - bench_fib: one bpf_fib_lookup of the address in fib_dst (IPv4 when
 *   family is AF_INET, else IPv6) from the frame's ingress interface, then
 *   XDP_PASS (XDP_ABORTED when the lookup fails): the helper's own cost,
 *   against the BR's whole program (br-bench's XDP program alone).
 * - xdp_pass: passes every frame; on a veth it lets the peer transmit
 *   redirected frames to it (the lab's fast-path tests).
 * - vlan_to_metadata (tc egress): moves an 802.1Q tag whose priority is 7
 *   from the frame into the skb's metadata, as a NIC that strips tags
 *   hands them to XDP (the lab's VLAN tests; tc's vlan action and VLAN
 *   devices are not built into the host kernel). Counts what it moved. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Buckets 0..LATENCY_BUCKETS-2 are 1 us wide; the last one is "more". */
#define LATENCY_BUCKETS 2048
/* IPv6 flow label of stamped frames (the relay carries it unchanged). */
#define LATENCY_MARK 0x5ca1e

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LATENCY_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *packets = bpf_map_lookup_elem(&sink_count, &key);
	__u32 key_bytes = 1;
	__u64 *bytes = bpf_map_lookup_elem(&sink_count, &key_bytes);

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 stamp, *bucket;
	__u32 at, us, label;
	__u8 *ip6;

	if (packets)
		*packets += 1;
	if (bytes)
		*bytes += ctx->data_end - ctx->data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	/* The stamp replaces the UDP header after the (inner) IPv6 header. */
	at = eth->h_proto == bpf_htons(ETH_P_IP) ? 14 + 20 : 14;
	ip6 = data + at;
	if ((void *)(ip6 + 48) > end)
		return XDP_DROP;
	label = ((__u32)(ip6[1] & 0x0f) << 16) | ((__u32)ip6[2] << 8) | ip6[3];
	if (label != LATENCY_MARK)
		return XDP_DROP;
	__builtin_memcpy(&stamp, ip6 + 40, 8);
	us = (bpf_ktime_get_ns() - stamp) / 1000;
	if (us > LATENCY_BUCKETS - 1)
		us = LATENCY_BUCKETS - 1;
	bucket = bpf_map_lookup_elem(&latency, &us);
	if (bucket)
		*bucket += 1;
	return XDP_DROP;
}

SEC("xdp")
int bench_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, 0, XDP_PASS);
}

/* AF_XDP sockets of the bare forwarder, by receive queue. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} bench_xsks SEC(".maps");

SEC("xdp")
int bench_xsk(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bench_xsks, ctx->rx_queue_index, XDP_PASS);
}

/* bench_fib's destination: family (2 or 10), then the address. */
struct fib_dst {
	__u32 family;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fib_dst);
} fib_dst SEC(".maps");

SEC("xdp")
int bench_fib(struct xdp_md *ctx)
{
	struct bpf_fib_lookup fib = {};
	__u32 zero = 0;
	struct fib_dst *d = bpf_map_lookup_elem(&fib_dst, &zero);

	if (!d)
		return XDP_ABORTED;
	fib.ifindex = ctx->ingress_ifindex;
	fib.family = d->family;
	if (d->family == 2) {
		__builtin_memcpy(&fib.ipv4_dst, d->addr, 4);
		fib.tot_len = 84;
	} else {
		__builtin_memcpy(fib.ipv6_dst, d->addr, 16);
		fib.tot_len = 64;
	}
	return bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_SUCCESS ? XDP_PASS
										    : XDP_ABORTED;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} vlan_moved SEC(".maps");

SEC("classifier")
int vlan_to_metadata(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__be16 *tci = (void *)(eth + 1);
	__u32 key = 0;
	__u64 *moved;
	__u16 vid;

	if ((void *)(tci + 1) > end || eth->h_proto != bpf_htons(ETH_P_8021Q) ||
	    (bpf_ntohs(*tci) >> 13) != 7)
		return 0; /* TC_ACT_OK */
	vid = bpf_ntohs(*tci) & 0x0fff;
	if (bpf_skb_vlan_pop(skb) || bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), vid))
		return 2; /* TC_ACT_SHOT */
	moved = bpf_map_lookup_elem(&vlan_moved, &key);
	if (moved)
		__sync_fetch_and_add(moved, 1);
	return 0;
}

char _license[] SEC("license") = "Dual MIT/GPL";

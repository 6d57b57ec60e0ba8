// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* XDP steering for the 6rd BR.
 *
 * Redirects to the AF_XDP socket of the receive queue exactly what the
 * forwarder handles: IPv4 protocol 41 addressed to a BR address, ICMPv4
 * errors to a BR address that quote protocol 41, and IPv6 whose destination
 * is in a 6rd prefix. Everything else, and anything this program cannot
 * parse, is XDP_PASS: the host's own traffic never depends on the daemon.
 * The redirect falls back to XDP_PASS when no socket is bound to the queue.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer_abi.h"

/* AF_XDP sockets by slot * MAX_QUEUES + receive queue. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_INTERFACES * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Attached interfaces: ifindex -> slot (0..MAX_INTERFACES). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_INTERFACES);
	__type(key, __u32);
	__type(value, __u32);
} if_slots SEC(".maps");

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
	__uint(max_entries, MAX_PREFIXES);
	__type(key, struct lpm_v6_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sixrd_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define IP_MF_AND_OFFSET 0x3fff

static __always_inline int count(__u32 stat, int action)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &stat);

	if (c)
		*c += 1;
	return action;
}

static __always_inline int steer(struct xdp_md *ctx, __u32 stat)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *slot = bpf_map_lookup_elem(&if_slots, &ifindex);
	__u32 key;
	int action;

	if (!slot || ctx->rx_queue_index >= MAX_QUEUES)
		return count(STAT_PASS_NO_SOCKET, XDP_PASS);
	key = *slot * MAX_QUEUES + ctx->rx_queue_index;
	/* The low bits of the flags are the action when the slot is empty. */
	action = bpf_redirect_map(&xsks, key, XDP_PASS);

	return count(action == XDP_REDIRECT ? stat : STAT_PASS_NO_SOCKET, action);
}

static __always_inline int steer_ipv6(struct xdp_md *ctx, struct ipv6hdr *ip6, void *end)
{
	struct lpm_v6_key key = { .prefixlen = 128 };

	if ((void *)(ip6 + 1) > end)
		return count(STAT_PASS_TRUNCATED, XDP_PASS);
	__builtin_memcpy(key.addr, &ip6->daddr, sizeof(key.addr));
	if (!bpf_map_lookup_elem(&sixrd_prefixes, &key))
		return count(STAT_PASS_IPV6_OTHER, XDP_PASS);
	return steer(ctx, STAT_REDIRECT_IPV6);
}

static __always_inline int steer_ipv4(struct xdp_md *ctx, struct iphdr *ip, void *end)
{
	__u32 daddr;
	__u8 *icmp;

	if ((void *)(ip + 1) > end)
		return count(STAT_PASS_TRUNCATED, XDP_PASS);
	daddr = ip->daddr;
	if (!bpf_map_lookup_elem(&br_addrs, &daddr))
		return count(STAT_PASS_IPV4_OTHER, XDP_PASS);
	/* Fragments go to the kernel, which reassembles them and hands the
	 * whole packet to the daemon's raw socket (the slow path). */
	if (ip->frag_off & bpf_htons(IP_MF_AND_OFFSET))
		return count(STAT_PASS_IPV4_FRAGMENT, XDP_PASS);
	if (ip->protocol == IPPROTO_IPV6)
		return steer(ctx, STAT_REDIRECT_PROTO41);
	if (ip->protocol != IPPROTO_ICMP || ip->ihl < 5)
		return count(STAT_PASS_BR_NOT_6RD, XDP_PASS);
	/* An ICMP error is ours only if it quotes a protocol-41 packet:
	 * 8 bytes of ICMP header, then the quoted IPv4 header. */
	icmp = (__u8 *)ip + (ip->ihl & 0xf) * 4;
	if ((void *)(icmp + 8 + sizeof(struct iphdr)) > end)
		return count(STAT_PASS_BR_NOT_6RD, XDP_PASS);
	if ((icmp[0] == ICMP_DEST_UNREACH || icmp[0] == ICMP_TIME_EXCEEDED) &&
	    icmp[8 + 9] == IPPROTO_IPV6)
		return steer(ctx, STAT_REDIRECT_ICMPV4);
	return count(STAT_PASS_BR_NOT_6RD, XDP_PASS);
}

SEC("xdp")
int br_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return count(STAT_PASS_NOT_IP, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return steer_ipv6(ctx, (void *)(eth + 1), end);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return steer_ipv4(ctx, (void *)(eth + 1), end);
	return count(STAT_PASS_NOT_IP, XDP_PASS);
}

char _license[] SEC("license") = "Dual MIT/GPL";

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Benchmark helpers (cargo xtask bench), not part of the BR:
 * - bench_sink: counts every frame (per CPU) and drops it: the sink.
 * - bench_redirect: redirects every frame to the interface in tx_port[0]:
 *   the XDP ceiling of the testbed.
 * - xdp_pass: passes every frame; on a veth it lets the peer transmit
 *   redirected frames to it (the lab's fast-path tests). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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

	if (packets)
		*packets += 1;
	if (bytes)
		*bytes += ctx->data_end - ctx->data;
	return XDP_DROP;
}

SEC("xdp")
int bench_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, 0, XDP_PASS);
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";

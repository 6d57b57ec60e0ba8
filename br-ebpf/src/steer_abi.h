/* The ABI between the XDP steering program and br-daemon: the one
 * definition of map sizes and counter indices. br-ebpf's build.rs reads
 * this file to generate the Rust constants, so the two cannot drift. */
#ifndef STEER_ABI_H
#define STEER_ABI_H

#define MAX_QUEUES 64
#define MAX_INTERFACES 8
#define MAX_BR_ADDRS 64
#define MAX_PREFIXES 64

/* Per-CPU counters, one per final action of the program. */
enum steer_stat {
	STAT_PASS_NOT_IP = 0,         /* not IPv4 or IPv6 (ARP, VLAN, ...): to the kernel */
	STAT_PASS_TRUNCATED = 1,      /* IP header cut short: to the kernel, which drops it */
	STAT_PASS_IPV4_OTHER = 2,     /* IPv4 not addressed to a BR address: to the kernel */
	STAT_PASS_IPV6_OTHER = 3,     /* IPv6 outside every 6rd prefix (ND, MLD, ...): to the kernel */
	STAT_PASS_IPV4_FRAGMENT = 4,  /* fragment for the BR: the kernel reassembles it for the slow path */
	STAT_PASS_BR_NOT_6RD = 5,     /* for a BR address but not 6rd (ping, ssh): to the kernel */
	STAT_PASS_NO_SOCKET = 6,      /* no AF_XDP socket on this queue (daemon stopped): to the kernel */
	STAT_REDIRECT_PROTO41 = 7,    /* protocol 41 for the BR: to the forwarder */
	STAT_REDIRECT_ICMPV4 = 8,     /* ICMPv4 error quoting protocol 41: to the forwarder */
	STAT_REDIRECT_IPV6 = 9,       /* IPv6 to a 6rd prefix: to the forwarder */
	STAT_COUNT = 10,              /* number of counters */
};

/* Key of the 6rd prefix LPM trie. */
struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * weft's pod-to-pod fast path: a tc ingress program on the host end of every pod veth and on the
 * overlay's device (flannel.<VNI> for VXLAN, the uplink for host-gw and direct routing).
 *
 * A packet from the pod network to the pod network (TCP or UDP, unfragmented, no IP options, TTL
 * above 1) that conntrack does not know is forwarded by the kernel's FIB (bpf_fib_lookup, the same
 * routes and neighbours the stack would use) straight to its next device, with the TTL lowered
 * as the stack lowers it: into the destination pod (bpf_redirect_peer) or out of the overlay
 * device. It never enters the node's netfilter hooks, so it is not tracked. Everything else is
 * left to the stack (TC_ACT_OK), unchanged:
 * - a packet of a flow conntrack knows (a Service's DNAT, a hostPort, a masqueraded flow, a flow
 *   that began while the fast path was off): its NAT must be undone on this node;
 * - a packet the FIB cannot forward here (a local address, too big for the next device's MTU:
 *   the stack sends the ICMP error). A next hop without a neighbour entry yet is resolved by the
 *   kernel's neighbour code (bpf_redirect_neigh), not left to the stack;
 * - everything while `enabled` is 0: the agent turns the fast path off before a network policy
 *   is put in force, since policy is enforced in the forward hook this path skips.
 *
 * Built by node-agent/build.rs with clang (`-target bpf`), self-contained: the few helper
 * declarations it needs are below, so no libbpf headers are required.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __ksym __attribute__((section(".ksyms")))
#define INLINE static inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_fib_lookup)(void *ctx, struct bpf_fib_lookup *params, int plen,
			      __u32 flags) = (void *)69;
static long (*bpf_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
				  __u64 flags) = (void *)152;
static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)155;

#define AF_INET 2
#define AF_INET6 10
#define htons(x) __builtin_bswap16(x)
#define ntohs(x) __builtin_bswap16(x)

/* The kernel's conntrack lookup for BPF (net/netfilter/nf_conntrack_bpf.c). The struct's layout
 * is the kernel's (NF_BPF_CT_OPTS_SZ = 16); nf_conn is only ever passed back. */
struct nf_conn {
	int unused;
};
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb_ctx, struct bpf_sock_tuple *bpf_tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *nfct) __ksym;

/* Written by the agent (fastpath::Config, same layout). */
struct config {
	__u32 enabled;
	__u32 has_v4;
	__u32 has_v6;
	__be32 net4;
	__be32 mask4;
	__be32 net6[4];
	__be32 mask6[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} weft_fp_config SEC(".maps");

/* ifindex -> 1 for the host ends of the node's pod veths: the targets of bpf_redirect_peer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u32);
} weft_fp_pods SEC(".maps");

enum { FORWARDED, TRACKED, TO_STACK, COUNTERS };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} weft_fp_counters SEC(".maps");

INLINE int count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&weft_fp_counters, &which);
	if (c)
		*c += 1;
	return TC_ACT_OK;
}

INLINE int in_net6(const __be32 *a, const struct config *cfg)
{
	for (int i = 0; i < 4; i++)
		if ((a[i] & cfg->mask6[i]) != cfg->net6[i])
			return 0;
	return 1;
}

/* Conntrack knows the flow (in either direction). */
INLINE int tracked(struct __sk_buff *skb, struct bpf_sock_tuple *tup, __u32 len, __u8 proto)
{
	struct bpf_ct_opts opts = { .netns_id = -1, .l4proto = proto };
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, tup, len, &opts, sizeof(opts));
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return 1;
}

/* The L4 header's length: TCP's data offset (its largest, 60, if the header is not all there),
 * or UDP's 8. */
INLINE __u32 l4_len(__u8 proto, void *l4, void *end)
{
	if (proto != IPPROTO_TCP)
		return 8;
	__u8 *tcp = l4;
	if ((void *)(tcp + 13) > end)
		return 60;
	return (tcp[12] >> 4) * 4;
}

INLINE int forward(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int v6)
{
	long rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return count(TO_STACK);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		ip6->hop_limit--;
	} else {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
		/* ip_decrease_ttl(): the checksum's incremental update for TTL - 1 */
		__u32 check = ip->check;
		check += htons(0x0100);
		ip->check = (__u16)(check + (check >= 0xFFFF));
		ip->ttl--;
	}
	__u32 ifindex = fib->ifindex;
	count(FORWARDED);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The next hop is not resolved yet: the kernel's neighbour code resolves it and
		 * queues the packet meanwhile, as the stack's output would (a packet left to the
		 * stack here would make conntrack track its whole flow). The lookup filled in the
		 * egress device and the next hop. */
		struct bpf_redir_neigh nh = {};
		nh.nh_family = fib->family;
		if (v6)
			__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, 16);
		else
			nh.ipv4_nh = fib->ipv4_dst;
		return bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0);
	}
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (bpf_map_lookup_elem(&weft_fp_pods, &ifindex))
		return bpf_redirect_peer(ifindex, 0);
	return bpf_redirect(ifindex, 0);
}

INLINE int v4(struct __sk_buff *skb, const struct config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	if (ip->ihl != 5 || (ip->frag_off & htons(0x3fff)) || ip->ttl <= 1)
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	if ((ip->saddr & cfg->mask4) != cfg->net4 || (ip->daddr & cfg->mask4) != cfg->net4)
		return TC_ACT_OK;
	__be16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > end)
		return TC_ACT_OK;
	struct bpf_sock_tuple tup = {};
	tup.ipv4.saddr = ip->saddr;
	tup.ipv4.daddr = ip->daddr;
	tup.ipv4.sport = ports[0];
	tup.ipv4.dport = ports[1];
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	/* The FIB's MTU check: the packet's length or, for a GSO packet (a pod's TCP segments,
	 * up to 64 KiB before segmentation), the length of each segment it will be cut into, as
	 * forwarding checks it (ip_exceeds_mtu). */
	fib.tot_len = skb->gso_size ? skb->gso_size + sizeof(*ip) + l4_len(ip->protocol, ports, end)
				    : ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = skb->ingress_ifindex;
	if (tracked(skb, &tup, sizeof(tup.ipv4), fib.l4_protocol))
		return count(TRACKED);
	return forward(skb, &fib, 0);
}

INLINE int v6(struct __sk_buff *skb, const struct config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return TC_ACT_OK;
	if (ip6->hop_limit <= 1)
		return TC_ACT_OK;
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return TC_ACT_OK;
	if (!in_net6(ip6->saddr.in6_u.u6_addr32, cfg) || !in_net6(ip6->daddr.in6_u.u6_addr32, cfg))
		return TC_ACT_OK;
	__be16 *ports = (void *)(ip6 + 1);
	if ((void *)(ports + 2) > end)
		return TC_ACT_OK;
	struct bpf_sock_tuple tup = {};
	__builtin_memcpy(tup.ipv6.saddr, ip6->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(tup.ipv6.daddr, ip6->daddr.in6_u.u6_addr32, 16);
	tup.ipv6.sport = ports[0];
	tup.ipv6.dport = ports[1];
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	fib.l4_protocol = ip6->nexthdr;
	fib.tot_len = skb->gso_size
			      ? skb->gso_size + sizeof(*ip6) + l4_len(ip6->nexthdr, ports, end)
			      : ntohs(ip6->payload_len) + sizeof(struct ipv6hdr);
	__builtin_memcpy(fib.ipv6_src, ip6->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(fib.ipv6_dst, ip6->daddr.in6_u.u6_addr32, 16);
	fib.ifindex = skb->ingress_ifindex;
	if (tracked(skb, &tup, sizeof(tup.ipv6), fib.l4_protocol))
		return count(TRACKED);
	return forward(skb, &fib, 1);
}

SEC("tc")
int weft_fastpath(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&weft_fp_config, &zero);
	if (!cfg || !cfg->enabled || skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	if (skb->protocol == htons(ETH_P_IP) && cfg->has_v4)
		return v4(skb, cfg);
	if (skb->protocol == htons(ETH_P_IPV6) && cfg->has_v6)
		return v6(skb, cfg);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

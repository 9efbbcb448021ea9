/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * NodePort, externalIPs and LoadBalancer IPs: TCX programs on the node's
 * external links.
 *
 * Ingress: a packet to a frontend (an externalIP or LoadBalancer IP and the
 * Service port, or any node address and a NodePort) gets a backend from the
 * frontend's slot table (random, or the client's previous one with ClientIP
 * affinity), its destination rewritten to it (DNAT) and, when the backend does
 * not run on this node and the traffic policy is Cluster, its source rewritten
 * to the node address of the link it came in on (SNAT), so that the reply comes
 * back here. The connection is remembered in an LRU conntrack map by two
 * entries: the forward tuple (client -> frontend) and the reply tuple
 * (backend -> client or node). Later packets of the connection follow the
 * forward entry; replies follow the reply entry, at ingress when they were
 * SNATed (they come back addressed to the node), at egress when not (a local
 * backend answers the client directly, out of the external link; a reply of
 * a local backend that comes in on an external link passes ingress as it is).
 *
 * A translated packet whose source is now a node address cannot go through the
 * kernel's input routing (a packet from outside with a local source is a
 * martian), so those are routed here with bpf_fib_lookup and handed to the
 * egress link with bpf_redirect_neigh. Packets to a local backend go up the
 * stack.
 *
 * IPv4 only for now; IP fragments and packets with neither TCP nor UDP pass
 * untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

/* From <linux/bpf.h> of kernel 6.6, newer than the build host's UAPI. */
#define TCX_NEXT -1
#define TCX_PASS 0
#define TCX_DROP 2

#define AF_INET 2
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define FE_F_AFFINITY SVC_F_AFFINITY /* sessionAffinity: ClientIP */
#define FE_F_LOCAL (1U << 1)         /* externalTrafficPolicy: Local */
#define FE_F_NODEPORT (1U << 2)      /* the key is (any node address, NodePort) */
#define FE_F_EXTERNAL_IP (1U << 3)   /* an externalIP */
#define FE_F_LB_IP (1U << 4)         /* a LoadBalancer ingress IP */

#define CT_F_SNAT (1U << 0) /* the flow is SNATed: route it here */

#define CT_DIR_FWD 0
#define CT_DIR_REV 1

#define SNAT_PORT_MIN 32768
#define SNAT_PORT_RANGE 28232 /* up to 60999, as the kernel's default */
#define SNAT_TRIES 8

#define MAX_FRONTENDS 16384
#define MAX_CT 65536
#define MAX_LINKS 256
#define MAX_NODE_ADDRS 1024

#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))

/* The key of a frontend is a struct svc_key: for a NodePort, the address is
 * the unspecified address of its family. */
struct fe_val {
	__u32 id;               /* slot table: the service's, or its local one */
	__u32 count;            /* valid slots; 0 drops */
	__u32 flags;            /* FE_F_* */
	__u32 affinity_timeout; /* seconds, with FE_F_AFFINITY */
	__u32 owner;            /* id of the ClusterIP service it belongs to */
	__u32 slots[INLINE_SLOTS]; /* the first slots of table id */
};

/* One external link, by ifindex. */
struct link_cfg {
	__u32 snat4; /* node IPv4 address SNAT uses for flows that came in here */
	__u32 flags;
};

struct node_addr {
	__u32 addr[4]; /* as in svc_key */
};

/* A packet's IPv4 tuple as seen where the entry is looked up. */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir; /* CT_DIR_* */
	__u16 pad;
};

/* What the packet becomes. */
struct ct_val {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 flags;      /* CT_F_* */
	__u32 backend_id; /* forward entries: checked before reuse */
};

struct tc_affinity_key {
	__u32 client; /* client IPv4 address */
	__u32 id;     /* slot table id */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FRONTENDS);
	__type(key, struct svc_key);
	__type(value, struct fe_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LINKS);
	__type(key, __u32);
	__type(value, struct link_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NODE_ADDRS);
	__type(key, struct node_addr);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_node_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CT);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_AFFINITY);
	__type(key, struct tc_affinity_key);
	__type(value, struct affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_tc_affinity SEC(".maps");

struct pkt4 {
	__u32 l4off; /* from the start of the Ethernet header */
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

/* parse4 fills p for an unfragmented IPv4 TCP or UDP packet and returns 1,
 * or returns 0. */
static __always_inline int parse4(struct __sk_buff *skb, struct pkt4 *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl, l4len;
	__u16 *ports;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	if (ip->ihl < 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return 0;
	if (ip->protocol == IPPROTO_TCP)
		l4len = sizeof(struct tcphdr);
	else if (ip->protocol == IPPROTO_UDP)
		l4len = sizeof(struct udphdr);
	else
		return 0;
	ihl = ip->ihl * 4;
	ports = (void *)ip + ihl;
	if ((void *)ports + l4len > end)
		return 0;
	p->l4off = ETH_HLEN + ihl;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->sport = ports[0];
	p->dport = ports[1];
	p->proto = ip->protocol;
	return 1;
}

/* load4 makes the headers linear when they are not, then parses. */
static __always_inline int load4(struct __sk_buff *skb, struct pkt4 *p)
{
	if (parse4(skb, p))
		return 1;
	if (bpf_skb_pull_data(skb, ETH_HLEN + 60 + sizeof(struct tcphdr)) &&
	    bpf_skb_pull_data(skb, ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr)))
		return 0;
	return parse4(skb, p);
}

/* rewrite turns p's tuple into (saddr, sport) -> (daddr, dport), keeping the IP
 * and TCP/UDP checksums right. A UDP checksum of 0 (none) stays 0. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt4 *p,
				   __u32 saddr, __u16 sport, __u32 daddr, __u16 dport)
{
	__u32 csum_off = p->l4off + (p->proto == IPPROTO_TCP ?
					     __builtin_offsetof(struct tcphdr, check) :
					     __builtin_offsetof(struct udphdr, check));
	__u64 l4f = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (saddr != p->saddr) {
		if (bpf_l4_csum_replace(skb, csum_off, p->saddr, saddr,
					l4f | BPF_F_PSEUDO_HDR | sizeof(saddr)) ||
		    bpf_l3_csum_replace(skb, IP_CSUM_OFF, p->saddr, saddr, sizeof(saddr)) ||
		    bpf_skb_store_bytes(skb, IP_SRC_OFF, &saddr, sizeof(saddr), 0))
			return -1;
	}
	if (daddr != p->daddr) {
		if (bpf_l4_csum_replace(skb, csum_off, p->daddr, daddr,
					l4f | BPF_F_PSEUDO_HDR | sizeof(daddr)) ||
		    bpf_l3_csum_replace(skb, IP_CSUM_OFF, p->daddr, daddr, sizeof(daddr)) ||
		    bpf_skb_store_bytes(skb, IP_DST_OFF, &daddr, sizeof(daddr), 0))
			return -1;
	}
	if (sport != p->sport) {
		if (bpf_l4_csum_replace(skb, csum_off, p->sport, sport, l4f | sizeof(sport)) ||
		    bpf_skb_store_bytes(skb, p->l4off, &sport, sizeof(sport), 0))
			return -1;
	}
	if (dport != p->dport) {
		if (bpf_l4_csum_replace(skb, csum_off, p->dport, dport, l4f | sizeof(dport)) ||
		    bpf_skb_store_bytes(skb, p->l4off + 2, &dport, sizeof(dport), 0))
			return -1;
	}
	return 0;
}

/* forward4 routes a packet whose source may be a node address past the input
 * path: out of the link the FIB names, with the neighbour's address filled in.
 * Without a route it goes up the stack. */
static __always_inline int forward4(struct __sk_buff *skb, __u32 saddr, __u32 daddr)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = AF_INET;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {
			.nh_family = AF_INET,
			.ipv4_nh = fib.ipv4_dst, /* the gateway, when there is one */
		};
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	return TCX_PASS;
}

static __always_inline int apply(struct __sk_buff *skb, const struct pkt4 *p,
				 const struct ct_val *ct, int ingress)
{
	/* Copies: the map value may change under us. */
	__u32 saddr = ct->saddr, daddr = ct->daddr, flags = ct->flags;
	__u16 sport = ct->sport, dport = ct->dport;

	if (rewrite(skb, p, saddr, sport, daddr, dport) < 0)
		return TCX_DROP;
	if (ingress && (flags & CT_F_SNAT))
		return forward4(skb, saddr, daddr);
	return TCX_PASS;
}

/* frontend finds the frontend p is addressed to: an externalIP or
 * LoadBalancer IP with its port, or a NodePort on a node address. */
static __always_inline struct fe_val *frontend(const struct pkt4 *p)
{
	struct svc_key k = {};
	struct node_addr na = {};
	struct fe_val *fe;

	k.addr[2] = bpf_htonl(0x0000ffff);
	k.addr[3] = p->daddr;
	k.port = p->dport;
	k.proto = p->proto;
	fe = bpf_map_lookup_elem(&kiln_frontends, &k);
	if (fe)
		return fe;
	na.addr[2] = k.addr[2];
	na.addr[3] = k.addr[3];
	if (!bpf_map_lookup_elem(&kiln_node_addrs, &na))
		return NULL;
	k.addr[3] = 0;
	return bpf_map_lookup_elem(&kiln_frontends, &k);
}

/* pick_fe picks a backend of fe for client (see pick in common.h), with the
 * client's address as the affinity key. */
static __always_inline struct backend *pick_fe(const struct fe_val *fe, __u32 client,
					       __u32 *backend_id)
{
	struct tc_affinity_key akey = { .client = client, .id = fe->id };
	struct table_ref t = {
		.id = fe->id,
		.count = fe->count,
		.flags = fe->flags & FE_F_AFFINITY,
		.affinity_timeout = fe->affinity_timeout,
		.inl = fe->slots,
	};

	return pick(&t, &kiln_tc_affinity, &akey, backend_id);
}

/* alive reports whether a forward entry's backend is still the one it
 * names: a backend that went away (or whose ID was reused) is picked anew. */
static __always_inline int alive(const struct ct_val *ct)
{
	struct backend *be = backend_of(ct->backend_id);

	return be && be->addr[3] == ct->daddr && be->port == ct->dport && is_v4mapped(be->addr);
}

SEC("tcx/ingress")
int kiln_tc_ingress(struct __sk_buff *skb)
{
	struct ct_key fk = {}, rk = {};
	struct ct_val fv = {}, rv = {};
	struct link_cfg *link;
	struct backend *be;
	struct fe_val *fe;
	struct ct_val *ct;
	struct pkt4 p;
	__u32 ifindex = skb->ingress_ifindex;
	__u32 bid = 0, snat = 0;
	__u16 nport;
	int i;

	if (!load4(skb, &p))
		return TCX_NEXT;

	/* A reply to a translated flow. Only a SNATed flow's replies are
	 * translated here: they come back addressed to the node. A local
	 * backend's reply goes to the client itself and is translated on its
	 * way out (kiln_tc_egress); one that comes in on an external link (the
	 * backend sits behind it) is routed by the kernel as it is, since its
	 * source rewritten to the frontend would be a martian. */
	rk.saddr = p.saddr;
	rk.daddr = p.daddr;
	rk.sport = p.sport;
	rk.dport = p.dport;
	rk.proto = p.proto;
	rk.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct, &rk);
	if (ct) {
		if (!(ct->flags & CT_F_SNAT))
			return TCX_NEXT;
		return apply(skb, &p, ct, 1);
	}

	fe = frontend(&p);
	if (!fe)
		return TCX_NEXT;

	fk = rk;
	fk.dir = CT_DIR_FWD;
	ct = bpf_map_lookup_elem(&kiln_ct, &fk);
	if (ct && alive(ct))
		return apply(skb, &p, ct, 1);

	/* A new flow. */
	link = bpf_map_lookup_elem(&kiln_links, &ifindex);
	if (!link)
		return TCX_NEXT;
	be = pick_fe(fe, p.saddr, &bid);
	if (!be || !is_v4mapped(be->addr))
		return TCX_DROP;
	if (!(fe->flags & FE_F_LOCAL) && !(be->flags & BE_F_LOCAL)) {
		snat = link->snat4;
		if (!snat)
			return TCX_DROP;
	}

	fv.saddr = snat ? snat : p.saddr;
	fv.daddr = be->addr[3];
	fv.sport = p.sport;
	fv.dport = be->port;
	fv.flags = snat ? CT_F_SNAT : 0;
	fv.backend_id = bid;

	rk.saddr = fv.daddr;
	rk.daddr = fv.saddr;
	rk.sport = fv.dport;
	rk.dport = fv.sport;
	if (snat) {
		/* Keep the client's port unless another flow to this backend
		 * has it on the node's side already. */
		nport = p.sport;
		for (i = 0; i < SNAT_TRIES; i++) {
			ct = bpf_map_lookup_elem(&kiln_ct, &rk);
			if (!ct || (ct->daddr == p.saddr && ct->dport == p.sport &&
				    ct->saddr == p.daddr && ct->sport == p.dport))
				break;
			nport = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_RANGE);
			rk.dport = nport;
		}
		if (i == SNAT_TRIES)
			return TCX_DROP;
		fv.sport = nport;
	}

	rv.saddr = p.daddr;
	rv.daddr = p.saddr;
	rv.sport = p.dport;
	rv.dport = p.sport;
	rv.flags = fv.flags;

	if (bpf_map_update_elem(&kiln_ct, &rk, &rv, BPF_ANY) ||
	    bpf_map_update_elem(&kiln_ct, &fk, &fv, BPF_ANY))
		return TCX_DROP;
	return apply(skb, &p, &fv, 1);
}

SEC("tcx/egress")
int kiln_tc_egress(struct __sk_buff *skb)
{
	struct ct_key rk = {};
	struct ct_val *ct;
	struct pkt4 p;

	if (!load4(skb, &p))
		return TCX_NEXT;
	rk.saddr = p.saddr;
	rk.daddr = p.daddr;
	rk.sport = p.sport;
	rk.dport = p.dport;
	rk.proto = p.proto;
	rk.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct, &rk);
	if (!ct)
		return TCX_NEXT;
	return apply(skb, &p, ct, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * NodePort, externalIPs and LoadBalancer IPs: TCX programs on the node's
 * external links, for IPv4 and IPv6.
 *
 * Ingress: a packet to a frontend (an externalIP or LoadBalancer IP and the
 * Service port, or any node address and a NodePort) gets a backend from the
 * frontend's slot table (random, or the client's previous one with ClientIP
 * affinity; with FE_F_MAGLEV, the entry of the frontend's Maglev table that
 * the flow's hash names, the same on every node), its destination rewritten to it (DNAT) and, when the backend does
 * not run on this node and the traffic policy is Cluster, its source rewritten
 * to the node address of the link it came in on (SNAT: the link's first IPv4
 * address, or its first global IPv6 address), so that the reply comes back
 * here. The connection is remembered in an LRU conntrack map by two entries:
 * the forward tuple (client -> frontend) and the reply tuple (backend -> client
 * or node). Later packets of the connection follow the forward entry; replies
 * follow the reply entry, at ingress when they were SNATed (they come back
 * addressed to the node), at egress when not (a local backend answers the
 * client directly, out of the external link; a reply of a local backend that
 * comes in on an external link passes ingress as it is).
 *
 * A translated packet whose source is now a node address cannot go through the
 * kernel's input routing (a packet from outside with a local source is a
 * martian), so those are routed here with bpf_fib_lookup and handed to the
 * egress link with bpf_redirect_neigh. Packets to a local backend go up the
 * stack.
 *
 * Each family has its own conntrack map, keyed by its own tuple: kiln_ct for
 * IPv4 (4-byte addresses, as before IPv6 was served, so that IPv4 flows pay
 * nothing for IPv6 and their pinned entries survive an upgrade) and kiln_ct6
 * for IPv6. Frontends, node addresses and affinity entries hold 16-byte
 * addresses, IPv4 in its IPv4-mapped form.
 *
 * IPv6 has no header checksum; the TCP/UDP checksum covers the pseudo header,
 * so an address rewrite updates it by the difference of the 16 bytes. In IPv6
 * a UDP checksum is mandatory: a result of 0 is sent as 0xffff (a packet that
 * comes with 0 is invalid, and is left to the stack to drop).
 *
 * TCP connections are followed to their end: an RST either way, or a FIN each
 * way, marks both entries closed (CT_F_CLOSED). A SYN with a closed forward
 * entry's tuple is a new connection and picks its backend anew; a closed
 * flow's port on the node's side is taken for a new SNATed flow only when
 * SNAT_TRIES fresh ports are all in use, since the backend may still hold the
 * old connection in TIME_WAIT. Entries still leave only by LRU eviction, and
 * UDP flows never end.
 *
 * ICMP and ICMPv6 errors about a translated flow's packet (destination
 * unreachable, fragmentation needed / Packet Too Big, time exceeded, parameter
 * problem), from the network at ingress or from this node's stack at egress,
 * are translated for the other side of the flow, so that path MTU discovery
 * and error reporting work across the translation: see "ICMP errors" below.
 *
 * Passed untouched: IPv4 fragments, IPv6 packets with extension headers (the
 * next header after the fixed header must be TCP or UDP; a fragment header is
 * an extension header too), other ICMP messages, ICMP errors about packets of
 * no translated flow or whose embedded packet has IPv4 options or IPv6
 * extension headers, and packets with neither TCP nor UDP.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

/* From <linux/bpf.h> of kernel 6.6, newer than the build host's UAPI. */
#define TCX_NEXT -1
#define TCX_PASS 0
#define TCX_DROP 2
/* Not a verdict: what ingress4 and the like return for a packet with neither
 * TCP nor UDP (or one they do not parse). */
#define TC_OTHER 0x100

#define AF_INET 2
#define AF_INET6 10
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define FE_F_AFFINITY SVC_F_AFFINITY /* sessionAffinity: ClientIP */
#define FE_F_LOCAL (1U << 1)         /* externalTrafficPolicy: Local */
#define FE_F_NODEPORT (1U << 2)      /* the key is (any node address, NodePort) */
#define FE_F_EXTERNAL_IP (1U << 3)   /* an externalIP */
#define FE_F_LB_IP (1U << 4)         /* a LoadBalancer ingress IP */
#define FE_F_MAGLEV (1U << 5)        /* new flows index kiln_maglev[id] by their hash */

#define CT_F_SNAT (1U << 0)   /* the flow is SNATed: route it here */
#define CT_F_FIN (1U << 1)    /* a FIN went this entry's way */
#define CT_F_CLOSED (1U << 2) /* the TCP connection ended (both entries) */

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

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

#define IP6_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, saddr))
#define IP6_DST_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, daddr))
#define L4_OFF6 (ETH_HLEN + sizeof(struct ipv6hdr))

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

/* One external link, by ifindex. A zero address: no SNAT source of that
 * family, so flows of it that need SNAT are dropped. */
struct link_cfg {
	__u32 snat4;    /* node IPv4 address SNAT uses for flows that came in here */
	__u32 flags;
	__u32 snat6[4]; /* node IPv6 address (global) SNAT uses, network order */
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

/* ct_key and ct_val for IPv6. */
struct ct6_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir; /* CT_DIR_* */
	__u16 pad;
};

struct ct6_val {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u32 flags;      /* CT_F_* */
	__u32 backend_id; /* forward entries: checked before reuse */
};

struct tc_affinity_key {
	__u32 client[4]; /* client address, as in svc_key */
	__u32 id;        /* slot table id */
};

/* A Maglev lookup table of slot table id (see MAGLEV_M in common.h): every node
 * builds the same one from the same backends, so that a flow's hash names the
 * same backend on each. */
struct maglev_val {
	__u32 backends[MAGLEV_M]; /* backend ids */
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
	__uint(max_entries, MAX_CT);
	__type(key, struct ct6_key);
	__type(value, struct ct6_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_AFFINITY);
	__type(key, struct tc_affinity_key);
	__type(value, struct affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_tc_affinity SEC(".maps");

/* Maglev tables by slot table id, for the frontends with FE_F_MAGLEV: only
 * those have one, so the map is not preallocated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct maglev_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_maglev SEC(".maps");

/* l4_csum_off is where the TCP or UDP checksum of a packet whose L4 header
 * starts at l4off is. */
static __always_inline __u32 l4_csum_off(__u32 l4off, __u8 proto)
{
	return l4off + (proto == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check) :
					       __builtin_offsetof(struct udphdr, check));
}

/* rewrite_ports turns the ports of a packet into sport and dport, keeping the
 * TCP/UDP checksum right (l4f: flags for bpf_l4_csum_replace). */
static __always_inline int rewrite_ports(struct __sk_buff *skb, __u32 l4off, __u32 csum_off, __u64 l4f,
					 __u16 old_sport, __u16 old_dport, __u16 sport, __u16 dport)
{
	if (sport != old_sport) {
		if (bpf_l4_csum_replace(skb, csum_off, old_sport, sport, l4f | sizeof(sport)) ||
		    bpf_skb_store_bytes(skb, l4off, &sport, sizeof(sport), 0))
			return -1;
	}
	if (dport != old_dport) {
		if (bpf_l4_csum_replace(skb, csum_off, old_dport, dport, l4f | sizeof(dport)) ||
		    bpf_skb_store_bytes(skb, l4off + 2, &dport, sizeof(dport), 0))
			return -1;
	}
	return 0;
}

/*
 * The flow hash Maglev tables are indexed by: the Jenkins hash (jhash2, as
 * the kernel's) of ten words, the client's address, the frontend's address
 * (16 bytes each, IPv4 mapped; a NodePort's is its key's unspecified address,
 * so that nodes with different addresses agree), both ports (network order,
 * the client's in the low half) and the protocol, with a fixed seed: every
 * node computes the same hash for a flow, which skb->hash (seeded per boot)
 * does not. maglev_test.go has its Go twin.
 */
#define JHASH_INITVAL 0xdeadbeef
#define FLOW_HASH_SEED 0x6b696c6e /* "kiln" */

static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define jhash_mix(a, b, c)                                                                          \
	do {                                                                                        \
		a -= c; a ^= rol32(c, 4); c += b;                                                   \
		b -= a; b ^= rol32(a, 6); a += c;                                                   \
		c -= b; c ^= rol32(b, 8); b += a;                                                   \
		a -= c; a ^= rol32(c, 16); c += b;                                                  \
		b -= a; b ^= rol32(a, 19); a += c;                                                  \
		c -= b; c ^= rol32(b, 4); b += a;                                                   \
	} while (0)

#define jhash_final(a, b, c)                                                                        \
	do {                                                                                        \
		c ^= b; c -= rol32(b, 14);                                                          \
		a ^= c; a -= rol32(c, 11);                                                          \
		b ^= a; b -= rol32(a, 25);                                                          \
		c ^= b; c -= rol32(b, 16);                                                          \
		a ^= c; a -= rol32(c, 4);                                                           \
		b ^= a; b -= rol32(a, 14);                                                          \
		c ^= b; c -= rol32(b, 24);                                                          \
	} while (0)

static __always_inline __u32 flow_hash(const __u32 *client, const __u32 *fe_addr, __u16 sport,
				       __u16 dport, __u8 proto)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (10 << 2) + FLOW_HASH_SEED;
	a += client[0];
	b += client[1];
	c += client[2];
	jhash_mix(a, b, c);
	a += client[3];
	b += fe_addr[0];
	c += fe_addr[1];
	jhash_mix(a, b, c);
	a += fe_addr[2];
	b += fe_addr[3];
	c += (__u32)sport | (__u32)dport << 16;
	jhash_mix(a, b, c);
	a += proto;
	jhash_final(a, b, c);
	return c;
}

/* pick_fe picks a backend of fe for client (see pick in common.h), with the
 * client's address (16 bytes, IPv4 mapped) as the affinity key. A frontend
 * with FE_F_MAGLEV takes entry hash % MAGLEV_M of its Maglev table (hash is
 * the flow's flow_hash), or a random slot while that table is missing. */
static __always_inline struct backend *pick_fe(const struct fe_val *fe, const __u32 *client,
					       __u32 hash, __u32 *backend_id)
{
	struct maglev_val *mg = NULL;
	__u32 id = fe->id, idx = 0;
	struct tc_affinity_key akey = {
		.client = { client[0], client[1], client[2], client[3] },
		.id = fe->id,
	};
	struct table_ref t = {
		.id = fe->id,
		.count = fe->count,
		.flags = fe->flags & FE_F_AFFINITY,
		.affinity_timeout = fe->affinity_timeout,
		.inl = fe->slots,
	};

	if (fe->flags & FE_F_MAGLEV) {
		mg = bpf_map_lookup_elem(&kiln_maglev, &id);
		idx = hash % MAGLEV_M;
		/* Hide the range from the compiler, so that the bound check in
		 * pick_mg stays for the verifier, which does not track it
		 * through a modulo on every kernel. */
		asm volatile("" : "+r"(idx));
	}
	return pick_mg(&t, &kiln_tc_affinity, &akey, backend_id, mg ? mg->backends : NULL, idx);
}

/* new_syn reports whether a packet with these TCP flags opens a connection. */
static __always_inline int new_syn(__u8 tcpflags)
{
	return (tcpflags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* close_mark is what a packet with tcpflags adds to its entry, given the
 * flags of the entry for the other direction (twin, or 0 without one): an RST
 * ends the connection, and so does the second FIN. The flags are set without
 * atomics: a lost update leaves a connection open, as it was before it ended. */
static __always_inline __u32 close_mark(__u8 tcpflags, __u32 twin)
{
	if (tcpflags & TCP_FLAG_RST)
		return CT_F_CLOSED;
	if (twin & CT_F_FIN)
		return CT_F_FIN | CT_F_CLOSED;
	return CT_F_FIN;
}

/*
 * ICMP errors about translated flows. An error (IPv4: destination
 * unreachable, time exceeded, parameter problem; IPv6: those and Packet Too
 * Big) carries the start of the packet it is about: its IP header and at
 * least the first 8 bytes of TCP/UDP, the ports. When that packet is one of a
 * translated flow, as the node sent it, the error is translated as the
 * flow's packets in the other direction are: the embedded packet becomes the
 * one the other side sent (the reverse of what the other direction's entry
 * turns a packet into), and the error goes to that side. The rest (type,
 * code, the MTU, the embedded packet's other fields) stays as it is.
 *
 * An error is addressed to its embedded packet's source: one that is not is
 * left alone. Its outer source is rewritten as the flow's source is in the
 * direction the error now travels, as the kernel's NAT does: towards the
 * client it comes from the frontend (not from an address of the backends'
 * network, which may be private and fail source checks on the client's
 * path), towards a remote backend from the node's SNAT address; an error
 * towards a local backend keeps its source. It is routed as the flow's
 * packets are: at ingress a SNATed flow's with bpf_fib_lookup and
 * bpf_redirect_neigh (its source is a node address now), others up the
 * stack; at egress it goes on out.
 *
 * The checksums are updated by hand (RFC 1624) rather than with
 * bpf_l3/l4_csum_replace, since they nest (the embedded ones are data of the
 * ICMP checksum) and bpf_l4_csum_replace leaves a CHECKSUM_PARTIAL packet's
 * field alone: the outer IPv4 header's, the embedded IPv4 header's, the
 * embedded TCP/UDP checksum for the address and port changes (as
 * nf_nat_icmp_reply_translation does, when the error carries it: TCP's is at
 * byte 16, past the 8 bytes an error must carry, and is updated only when the
 * whole TCP header is there), and the ICMP checksum for every byte that
 * changed under it (for ICMPv6 with its pseudo header's addresses). The new
 * bytes are stored with BPF_F_RECOMPUTE_CSUM, so skb->csum of a
 * CHECKSUM_COMPLETE packet follows them.
 */

#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

/* The ICMP header as the code here reads it, and the error's body: the
 * embedded packet's IP header and l4 words (ports first). */
#define ICMP_L4_WORDS 10 /* a TCP header without options */
#define ICMP_L4_MIN 4    /* the 8 bytes every error carries */
#define TCP_CSUM_WORD 8
#define UDP_CSUM_WORD 3

/* csum_fold is the 16-bit one's complement sum of s. */
static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (s & 0xffff) + (s >> 16);
}

/* csum_diff16 and csum_diff32 are what a field that changes from a to b adds
 * to the sum of the data it is in (-a is ~a in one's complement). */
static __always_inline __u64 csum_diff16(__u16 a, __u16 b)
{
	return (__u64)(__u16)~a + b;
}

static __always_inline __u64 csum_diff32(__u32 a, __u32 b)
{
	return (__u64)~a + b;
}

static __always_inline __u64 csum_diff128(const __u32 *a, const __u32 *b)
{
	return csum_diff32(a[0], b[0]) + csum_diff32(a[1], b[1]) + csum_diff32(a[2], b[2]) +
	       csum_diff32(a[3], b[3]);
}

/* csum_update is checksum c after the data it covers changed by diff. */
static __always_inline __u16 csum_update(__u16 c, __u64 diff)
{
	return ~csum_fold((__u16)~c + diff);
}

/* csum_update_l4 is csum_update for a TCP or UDP checksum: a UDP checksum of
 * 0 (none, in IPv4) stays 0, and one that comes out 0 is 0xffff. */
static __always_inline __u16 csum_update_l4(__u16 c, __u64 diff, __u8 proto)
{
	if (proto == IPPROTO_UDP && c == 0)
		return 0;
	c = csum_update(c, diff);
	if (proto == IPPROTO_UDP && c == 0)
		c = 0xffff;
	return c;
}

/* icmp_error4 and icmp_error6 report whether an ICMP message of this type is
 * an error that carries a packet. */
static __always_inline int icmp_error4(__u8 type)
{
	return type == 3 || type == 11 || type == 12; /* unreachable, time exceeded, parameter problem */
}

static __always_inline int icmp_error6(__u8 type)
{
	return type >= 1 && type <= 4; /* unreachable, too big, time exceeded, parameter problem */
}

/* IPv4 */

struct pkt4 {
	__u32 l4off; /* from the start of the Ethernet header */
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcpflags; /* TCP_FLAG_*; 0 for UDP */
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
	p->tcpflags = 0;
	if (p->proto == IPPROTO_TCP) {
		/* Checked again: the verifier keeps only the shorter bound. */
		if ((void *)ports + sizeof(struct tcphdr) > end)
			return 0;
		p->tcpflags = ((__u8 *)ports)[13];
	}
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

/* rewrite4 turns p's tuple into (saddr, sport) -> (daddr, dport), keeping the
 * IP and TCP/UDP checksums right. A UDP checksum of 0 (none) stays 0. */
static __always_inline int rewrite4(struct __sk_buff *skb, const struct pkt4 *p,
				    __u32 saddr, __u16 sport, __u32 daddr, __u16 dport)
{
	__u32 csum_off = l4_csum_off(p->l4off, p->proto);
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
	return rewrite_ports(skb, p->l4off, csum_off, l4f, p->sport, p->dport, sport, dport);
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

static __always_inline int apply4(struct __sk_buff *skb, const struct pkt4 *p,
				  const struct ct_val *ct, int ingress)
{
	/* Copies: the map value may change under us. */
	__u32 saddr = ct->saddr, daddr = ct->daddr, flags = ct->flags;
	__u16 sport = ct->sport, dport = ct->dport;

	if (rewrite4(skb, p, saddr, sport, daddr, dport) < 0)
		return TCX_DROP;
	if (ingress && (flags & CT_F_SNAT))
		return forward4(skb, saddr, daddr);
	return TCX_PASS;
}

/* frontend4 finds the frontend p is addressed to: an externalIP or
 * LoadBalancer IP with its port, or a NodePort on a node address. */
static __always_inline struct fe_val *frontend4(const struct pkt4 *p)
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

/* alive4 reports whether a forward entry's backend is still the one it
 * names: a backend that went away (or whose ID was reused) is picked anew. */
static __always_inline int alive4(const struct ct_val *ct)
{
	struct backend *be = backend_of(ct->backend_id);

	return be && be->addr[3] == ct->daddr && be->port == ct->dport && is_v4mapped(be->addr);
}

/* track4 notes a FIN or RST of the TCP flow whose entry in direction dir is
 * ct. The entry of the other direction has the tuple ct translates to,
 * reversed. */
static __always_inline void track4(struct ct_val *ct, const struct pkt4 *p, __u8 dir)
{
	struct ct_key tk = {};
	struct ct_val *twin;
	__u32 mark;

	if (!(p->tcpflags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return;
	tk.saddr = ct->daddr;
	tk.daddr = ct->saddr;
	tk.sport = ct->dport;
	tk.dport = ct->sport;
	tk.proto = p->proto;
	tk.dir = dir ^ 1;
	twin = bpf_map_lookup_elem(&kiln_ct, &tk);
	mark = close_mark(p->tcpflags, twin ? twin->flags : 0);
	ct->flags |= mark;
	if (twin && (mark & CT_F_CLOSED))
		twin->flags |= CT_F_CLOSED;
}

/* The start of an ICMP error as icmp4 copies it: the ICMP header, the
 * embedded packet's IPv4 header (options are not followed) and its first
 * TCP/UDP words, ports first. */
struct icmp4_err {
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 info; /* e.g. the MTU of "fragmentation needed": kept */
	struct iphdr ip;
	__u16 l4[ICMP_L4_WORDS];
};

#define ICMP4_ERR_MIN (8 + sizeof(struct iphdr) + ICMP_L4_MIN * 2)

/* fix_l4csum updates the embedded TCP/UDP checksum c for a change of diff in
 * what it covers, and returns what that adds to the ICMP checksum's sum. */
static __always_inline __u64 fix_l4csum(__u16 *c, __u64 diff, __u8 proto)
{
	__u16 old = *c;

	*c = csum_update_l4(old, diff, proto);
	return csum_diff16(old, *c);
}

/* icmp4 translates an ICMP error about a packet of a translated flow (see
 * above), at ingress (from the network) or at egress (from this node's stack);
 * anything else goes on untouched. It looks for the entry of the direction
 * opposite to the embedded packet's, by its tuple reversed: a reverse entry
 * (the packet went from the node or client to the backend), at egress too, or
 * at ingress a forward one (it was a reply to the client). At ingress, as
 * for replies, only SNATed flows' reverse entries count (see ingress4). */
static __noinline int icmp4(struct __sk_buff *skb, int ingress)
{
	struct icmp4_err e = {};
	struct ct_key k = {};
	struct iphdr ip;
	struct ct_val *ct;
	__u32 off, saddr, daddr, isaddr, idaddr, flags, new_src;
	__u16 sport, dport, old;
	__u64 dip, dl4, dicmp;
	int full = 1;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return TCX_NEXT;
	if (ip.protocol != IPPROTO_ICMP || ip.ihl < 5 || (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return TCX_NEXT;
	off = ETH_HLEN + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, off, &e, sizeof(e))) {
		full = 0; /* no whole TCP header */
		if (bpf_skb_load_bytes(skb, off, &e, ICMP4_ERR_MIN))
			return TCX_NEXT;
	}
	if (!icmp_error4(e.type) || e.ip.version != 4 || e.ip.ihl != 5 ||
	    (e.ip.frag_off & bpf_htons(IP_OFFSET)) || ip.daddr != e.ip.saddr ||
	    (e.ip.protocol != IPPROTO_TCP && e.ip.protocol != IPPROTO_UDP))
		return TCX_NEXT;

	k.saddr = e.ip.daddr;
	k.daddr = e.ip.saddr;
	k.sport = e.l4[1];
	k.dport = e.l4[0];
	k.proto = e.ip.protocol;
	k.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct, &k);
	if (ct) {
		if (ingress && !(ct->flags & CT_F_SNAT))
			return TCX_NEXT;
		new_src = 1; /* a reverse entry rewrites the source */
	} else {
		if (!ingress)
			return TCX_NEXT;
		k.dir = CT_DIR_FWD;
		ct = bpf_map_lookup_elem(&kiln_ct, &k);
		if (!ct)
			return TCX_NEXT;
		new_src = ct->flags & CT_F_SNAT;
	}
	/* Or clang makes it of the first lookup's pointer, which the verifier
	 * does not take in arithmetic. */
	barrier_var(new_src);
	/* Copies: the map value may change under us. The embedded packet
	 * becomes the reverse of what the entry makes of a packet. */
	isaddr = ct->daddr;
	idaddr = ct->saddr;
	sport = ct->dport;
	dport = ct->sport;
	flags = ct->flags;
	daddr = isaddr;
	saddr = new_src ? idaddr : ip.saddr;

	dip = csum_diff32(e.ip.saddr, isaddr) + csum_diff32(e.ip.daddr, idaddr);
	dl4 = csum_diff16(e.l4[0], sport) + csum_diff16(e.l4[1], dport);
	old = e.ip.check;
	e.ip.check = csum_update(old, dip);
	dicmp = dip + dl4 + csum_diff16(old, e.ip.check);
	if (e.ip.protocol == IPPROTO_UDP)
		dicmp += fix_l4csum(&e.l4[UDP_CSUM_WORD], dip + dl4, IPPROTO_UDP);
	else if (full)
		dicmp += fix_l4csum(&e.l4[TCP_CSUM_WORD], dip + dl4, IPPROTO_TCP);
	e.ip.saddr = isaddr;
	e.ip.daddr = idaddr;
	e.l4[0] = sport;
	e.l4[1] = dport;
	e.csum = csum_update(e.csum, dicmp);

	ip.check = csum_update(ip.check, csum_diff32(ip.saddr, saddr) + csum_diff32(ip.daddr, daddr));
	ip.saddr = saddr;
	ip.daddr = daddr;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM))
		return TCX_DROP;
	if (full ? bpf_skb_store_bytes(skb, off, &e, sizeof(e), BPF_F_RECOMPUTE_CSUM) :
		   bpf_skb_store_bytes(skb, off, &e, ICMP4_ERR_MIN, BPF_F_RECOMPUTE_CSUM))
		return TCX_DROP;
	if (ingress && (flags & CT_F_SNAT))
		return forward4(skb, saddr, daddr);
	return TCX_PASS;
}

static __noinline int ingress4(struct __sk_buff *skb)
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
	__u32 client[4] = {};
	__u32 hash = 0;
	__u16 nport, closed_port = 0;
	int i;

	if (!load4(skb, &p))
		return TC_OTHER;

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
		track4(ct, &p, CT_DIR_REV);
		return apply4(skb, &p, ct, 1);
	}

	fe = frontend4(&p);
	if (!fe)
		return TCX_NEXT;

	fk = rk;
	fk.dir = CT_DIR_FWD;
	ct = bpf_map_lookup_elem(&kiln_ct, &fk);
	if (ct && alive4(ct) && !((ct->flags & CT_F_CLOSED) && new_syn(p.tcpflags))) {
		track4(ct, &p, CT_DIR_FWD);
		return apply4(skb, &p, ct, 1);
	}

	/* A new flow. */
	link = bpf_map_lookup_elem(&kiln_links, &ifindex);
	if (!link)
		return TCX_NEXT;
	client[2] = bpf_htonl(0x0000ffff);
	client[3] = p.saddr;
	if (fe->flags & FE_F_MAGLEV) {
		__u32 fa[4] = { 0, 0, bpf_htonl(0x0000ffff), (fe->flags & FE_F_NODEPORT) ? 0 : p.daddr };

		hash = flow_hash(client, fa, p.sport, p.dport, p.proto);
	}
	be = pick_fe(fe, client, hash, &bid);
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
			if (!closed_port && (ct->flags & CT_F_CLOSED))
				closed_port = nport;
			nport = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_RANGE);
			rk.dport = nport;
		}
		if (i == SNAT_TRIES) {
			if (!closed_port)
				return TCX_DROP;
			nport = closed_port;
			rk.dport = nport;
		}
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
	return apply4(skb, &p, &fv, 1);
}

static __noinline int egress4(struct __sk_buff *skb)
{
	struct ct_key rk = {};
	struct ct_val *ct;
	struct pkt4 p;

	if (!load4(skb, &p))
		return TC_OTHER;
	rk.saddr = p.saddr;
	rk.daddr = p.daddr;
	rk.sport = p.sport;
	rk.dport = p.dport;
	rk.proto = p.proto;
	rk.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct, &rk);
	if (!ct)
		return TCX_NEXT;
	track4(ct, &p, CT_DIR_REV);
	return apply4(skb, &p, ct, 0);
}

/* IPv6 */

struct pkt6 {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcpflags; /* TCP_FLAG_*; 0 for UDP */
};

static __always_inline void addr6_copy(__u32 *d, const __u32 *s)
{
	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

static __always_inline int addr6_eq(const __u32 *a, const __u32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

static __always_inline int addr6_zero(const __u32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

/* parse6 fills p for an IPv6 packet whose next header is TCP or UDP and
 * returns 1, or returns 0: extension headers are not followed. */
static __always_inline int parse6(struct __sk_buff *skb, struct pkt6 *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip;
	__u32 l4len;
	__u16 *ports;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	if (ip->nexthdr == IPPROTO_TCP)
		l4len = sizeof(struct tcphdr);
	else if (ip->nexthdr == IPPROTO_UDP)
		l4len = sizeof(struct udphdr);
	else
		return 0;
	ports = (void *)(ip + 1);
	if ((void *)ports + l4len > end)
		return 0;
	__builtin_memcpy(p->saddr, &ip->saddr, sizeof(p->saddr));
	__builtin_memcpy(p->daddr, &ip->daddr, sizeof(p->daddr));
	p->sport = ports[0];
	p->dport = ports[1];
	p->proto = ip->nexthdr;
	p->tcpflags = 0;
	if (p->proto == IPPROTO_TCP) {
		/* Checked again: the verifier keeps only the shorter bound. */
		if ((void *)ports + sizeof(struct tcphdr) > end)
			return 0;
		p->tcpflags = ((__u8 *)ports)[13];
	}
	return 1;
}

/* load6 makes the headers linear when they are not, then parses. */
static __always_inline int load6(struct __sk_buff *skb, struct pkt6 *p)
{
	if (parse6(skb, p))
		return 1;
	if (bpf_skb_pull_data(skb, L4_OFF6 + sizeof(struct tcphdr)) &&
	    bpf_skb_pull_data(skb, L4_OFF6 + sizeof(struct udphdr)))
		return 0;
	return parse6(skb, p);
}

/* rewrite_addr6 replaces the 16 bytes at off, from with to, and updates the
 * TCP/UDP checksum by their difference (BPF_F_PSEUDO_HDR: they are in the
 * pseudo header). The bytes are stored with BPF_F_RECOMPUTE_CSUM so that a
 * CHECKSUM_COMPLETE packet's skb->csum stays right: bpf_l4_csum_replace
 * adjusts it for the checksum field only, as for IPv4, where the IP header
 * checksum makes up for the addresses. */
static __always_inline int rewrite_addr6(struct __sk_buff *skb, __u32 csum_off, __u64 l4f, __u32 off,
					 const __u32 *from, const __u32 *to)
{
	__s64 diff = bpf_csum_diff((__be32 *)from, 16, (__be32 *)to, 16, 0);

	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, 0, diff, l4f | BPF_F_PSEUDO_HDR) ||
	    bpf_skb_store_bytes(skb, off, to, 16, BPF_F_RECOMPUTE_CSUM))
		return -1;
	return 0;
}

/* rewrite6 turns p's tuple into (saddr, sport) -> (daddr, dport), keeping the
 * TCP/UDP checksum right; a UDP checksum that comes out 0 is sent as 0xffff. */
static __always_inline int rewrite6(struct __sk_buff *skb, const struct pkt6 *p,
				    const __u32 *saddr, __u16 sport, const __u32 *daddr, __u16 dport)
{
	__u32 csum_off = l4_csum_off(L4_OFF6, p->proto);
	__u64 l4f = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (!addr6_eq(saddr, p->saddr) && rewrite_addr6(skb, csum_off, l4f, IP6_SRC_OFF, p->saddr, saddr))
		return -1;
	if (!addr6_eq(daddr, p->daddr) && rewrite_addr6(skb, csum_off, l4f, IP6_DST_OFF, p->daddr, daddr))
		return -1;
	return rewrite_ports(skb, L4_OFF6, csum_off, l4f, p->sport, p->dport, sport, dport);
}

/* forward6 is forward4 for IPv6. */
static __always_inline int forward6(struct __sk_buff *skb, const __u32 *saddr, const __u32 *daddr)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = AF_INET6;
	addr6_copy(fib.ipv6_src, saddr);
	addr6_copy(fib.ipv6_dst, daddr);
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET6 };

		addr6_copy(nh.ipv6_nh, fib.ipv6_dst); /* the gateway, when there is one */
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	return TCX_PASS;
}

static __always_inline int apply6(struct __sk_buff *skb, const struct pkt6 *p,
				  const struct ct6_val *ct, int ingress)
{
	/* Copies: the map value may change under us. */
	__u32 saddr[4], daddr[4], flags = ct->flags;
	__u16 sport = ct->sport, dport = ct->dport;

	addr6_copy(saddr, ct->saddr);
	addr6_copy(daddr, ct->daddr);
	if (rewrite6(skb, p, saddr, sport, daddr, dport) < 0)
		return TCX_DROP;
	if (ingress && (flags & CT_F_SNAT))
		return forward6(skb, saddr, daddr);
	return TCX_PASS;
}

/* frontend6 is frontend4 for IPv6. An IPv4-mapped destination is no IPv6
 * frontend (the frontends map keeps IPv4 ones in that form). */
static __always_inline struct fe_val *frontend6(const struct pkt6 *p)
{
	struct svc_key k = {};
	struct fe_val *fe;

	if (is_v4mapped(p->daddr))
		return NULL;
	addr6_copy(k.addr, p->daddr);
	k.port = p->dport;
	k.proto = p->proto;
	fe = bpf_map_lookup_elem(&kiln_frontends, &k);
	if (fe)
		return fe;
	/* struct node_addr is the address alone, as at the start of k. */
	if (!bpf_map_lookup_elem(&kiln_node_addrs, k.addr))
		return NULL;
	k.addr[0] = k.addr[1] = k.addr[2] = k.addr[3] = 0;
	return bpf_map_lookup_elem(&kiln_frontends, &k);
}

static __always_inline int alive6(const struct ct6_val *ct)
{
	struct backend *be = backend_of(ct->backend_id);

	return be && be->port == ct->dport && addr6_eq(be->addr, ct->daddr);
}

static __always_inline void ct6_tuple(struct ct6_key *k, const __u32 *saddr, const __u32 *daddr,
				      __u16 sport, __u16 dport)
{
	addr6_copy(k->saddr, saddr);
	addr6_copy(k->daddr, daddr);
	k->sport = sport;
	k->dport = dport;
}

/* track6 is track4 for IPv6. */
static __always_inline void track6(struct ct6_val *ct, const struct pkt6 *p, __u8 dir)
{
	struct ct6_key tk = {};
	struct ct6_val *twin;
	__u32 mark;

	if (!(p->tcpflags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return;
	ct6_tuple(&tk, ct->daddr, ct->saddr, ct->dport, ct->sport);
	tk.proto = p->proto;
	tk.dir = dir ^ 1;
	twin = bpf_map_lookup_elem(&kiln_ct6, &tk);
	mark = close_mark(p->tcpflags, twin ? twin->flags : 0);
	ct->flags |= mark;
	if (twin && (mark & CT_F_CLOSED))
		twin->flags |= CT_F_CLOSED;
}

/* icmp4_err for ICMPv6. */
struct icmp6_err {
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 info; /* e.g. the MTU of Packet Too Big: kept */
	struct ipv6hdr ip;
	__u16 l4[ICMP_L4_WORDS];
};

#define ICMP6_ERR_MIN (8 + sizeof(struct ipv6hdr) + ICMP_L4_MIN * 2)

/* icmp6 is icmp4 for ICMPv6, with kiln_ct6. Neither the error nor its
 * embedded packet may have extension headers. The ICMPv6 checksum covers a
 * pseudo header with the outer addresses. */
static __noinline int icmp6(struct __sk_buff *skb, int ingress)
{
	struct icmp6_err e = {};
	struct ct6_key k = {};
	struct ipv6hdr ip;
	struct ct6_val *ct;
	__u32 saddr[4], isaddr[4], idaddr[4], flags;
	__u32 *osaddr = ip.saddr.in6_u.u6_addr32, *odaddr = ip.daddr.in6_u.u6_addr32;
	__u32 *esaddr = e.ip.saddr.in6_u.u6_addr32, *edaddr = e.ip.daddr.in6_u.u6_addr32;
	__u32 new_src;
	__u16 sport, dport;
	__u64 dip, dl4, dicmp;
	int full = 1;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return TCX_NEXT;
	if (ip.nexthdr != IPPROTO_ICMPV6)
		return TCX_NEXT;
	if (bpf_skb_load_bytes(skb, L4_OFF6, &e, sizeof(e))) {
		full = 0;
		if (bpf_skb_load_bytes(skb, L4_OFF6, &e, ICMP6_ERR_MIN))
			return TCX_NEXT;
	}
	if (!icmp_error6(e.type) || e.ip.version != 6 || !addr6_eq(odaddr, esaddr) ||
	    (e.ip.nexthdr != IPPROTO_TCP && e.ip.nexthdr != IPPROTO_UDP))
		return TCX_NEXT;

	ct6_tuple(&k, edaddr, esaddr, e.l4[1], e.l4[0]);
	k.proto = e.ip.nexthdr;
	k.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct6, &k);
	if (ct) {
		if (ingress && !(ct->flags & CT_F_SNAT))
			return TCX_NEXT;
		new_src = 1; /* a reverse entry rewrites the source */
	} else {
		if (!ingress)
			return TCX_NEXT;
		k.dir = CT_DIR_FWD;
		ct = bpf_map_lookup_elem(&kiln_ct6, &k);
		if (!ct)
			return TCX_NEXT;
		new_src = ct->flags & CT_F_SNAT;
	}
	/* Or clang makes it of the first lookup's pointer, which the verifier
	 * does not take in arithmetic. */
	barrier_var(new_src);
	addr6_copy(isaddr, ct->daddr);
	addr6_copy(idaddr, ct->saddr);
	sport = ct->dport;
	dport = ct->sport;
	flags = ct->flags;
	if (new_src)
		addr6_copy(saddr, idaddr);
	else
		addr6_copy(saddr, osaddr);

	dip = csum_diff128(esaddr, isaddr) + csum_diff128(edaddr, idaddr);
	dl4 = csum_diff16(e.l4[0], sport) + csum_diff16(e.l4[1], dport);
	dicmp = dip + dl4 + csum_diff128(osaddr, saddr) + csum_diff128(odaddr, isaddr);
	if (e.ip.nexthdr == IPPROTO_UDP)
		dicmp += fix_l4csum(&e.l4[UDP_CSUM_WORD], dip + dl4, IPPROTO_UDP);
	else if (full)
		dicmp += fix_l4csum(&e.l4[TCP_CSUM_WORD], dip + dl4, IPPROTO_TCP);
	addr6_copy(esaddr, isaddr);
	addr6_copy(edaddr, idaddr);
	e.l4[0] = sport;
	e.l4[1] = dport;
	e.csum = csum_update(e.csum, dicmp);

	addr6_copy(osaddr, saddr);
	addr6_copy(odaddr, isaddr);
	/* The addresses are next to each other, saddr first. */
	if (bpf_skb_store_bytes(skb, IP6_SRC_OFF, osaddr, 32, BPF_F_RECOMPUTE_CSUM))
		return TCX_DROP;
	if (full ? bpf_skb_store_bytes(skb, L4_OFF6, &e, sizeof(e), BPF_F_RECOMPUTE_CSUM) :
		   bpf_skb_store_bytes(skb, L4_OFF6, &e, ICMP6_ERR_MIN, BPF_F_RECOMPUTE_CSUM))
		return TCX_DROP;
	if (ingress && (flags & CT_F_SNAT))
		return forward6(skb, saddr, isaddr);
	return TCX_PASS;
}

/* ingress6 is ingress4 for IPv6, with kiln_ct6. */
static __noinline int ingress6(struct __sk_buff *skb)
{
	struct ct6_key fk = {}, rk = {};
	struct ct6_val fv = {}, rv = {};
	struct link_cfg *link;
	struct backend *be;
	struct fe_val *fe;
	struct ct6_val *ct;
	struct pkt6 p;
	__u32 ifindex = skb->ingress_ifindex;
	__u32 bid = 0, snat = 0, hash = 0;
	__u16 nport, closed_port = 0;
	int i;

	if (!load6(skb, &p))
		return TC_OTHER;

	/* A reply to a translated flow: see ingress4. */
	ct6_tuple(&rk, p.saddr, p.daddr, p.sport, p.dport);
	rk.proto = p.proto;
	rk.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct6, &rk);
	if (ct) {
		if (!(ct->flags & CT_F_SNAT))
			return TCX_NEXT;
		track6(ct, &p, CT_DIR_REV);
		return apply6(skb, &p, ct, 1);
	}

	fe = frontend6(&p);
	if (!fe)
		return TCX_NEXT;

	fk = rk;
	fk.dir = CT_DIR_FWD;
	ct = bpf_map_lookup_elem(&kiln_ct6, &fk);
	if (ct && alive6(ct) && !((ct->flags & CT_F_CLOSED) && new_syn(p.tcpflags))) {
		track6(ct, &p, CT_DIR_FWD);
		return apply6(skb, &p, ct, 1);
	}

	/* A new flow. */
	link = bpf_map_lookup_elem(&kiln_links, &ifindex);
	if (!link)
		return TCX_NEXT;
	if (fe->flags & FE_F_MAGLEV) {
		__u32 fa[4] = {};

		if (!(fe->flags & FE_F_NODEPORT))
			addr6_copy(fa, p.daddr);
		hash = flow_hash(p.saddr, fa, p.sport, p.dport, p.proto);
	}
	be = pick_fe(fe, p.saddr, hash, &bid);
	if (!be || is_v4mapped(be->addr))
		return TCX_DROP;
	if (!(fe->flags & FE_F_LOCAL) && !(be->flags & BE_F_LOCAL)) {
		addr6_copy(fv.saddr, link->snat6);
		if (addr6_zero(fv.saddr))
			return TCX_DROP;
		snat = 1;
	} else {
		addr6_copy(fv.saddr, p.saddr);
	}
	addr6_copy(fv.daddr, be->addr);
	fv.sport = p.sport;
	fv.dport = be->port;
	fv.flags = snat ? CT_F_SNAT : 0;
	fv.backend_id = bid;

	ct6_tuple(&rk, fv.daddr, fv.saddr, fv.dport, fv.sport);
	if (snat) {
		/* Keep the client's port unless another flow to this backend
		 * has it on the node's side already. */
		nport = p.sport;
		for (i = 0; i < SNAT_TRIES; i++) {
			ct = bpf_map_lookup_elem(&kiln_ct6, &rk);
			if (!ct || (ct->dport == p.sport && ct->sport == p.dport &&
				    addr6_eq(ct->daddr, p.saddr) && addr6_eq(ct->saddr, p.daddr)))
				break;
			if (!closed_port && (ct->flags & CT_F_CLOSED))
				closed_port = nport;
			nport = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_RANGE);
			rk.dport = nport;
		}
		if (i == SNAT_TRIES) {
			if (!closed_port)
				return TCX_DROP;
			nport = closed_port;
			rk.dport = nport;
		}
		fv.sport = nport;
	}

	addr6_copy(rv.saddr, p.daddr);
	addr6_copy(rv.daddr, p.saddr);
	rv.sport = p.dport;
	rv.dport = p.sport;
	rv.flags = fv.flags;

	if (bpf_map_update_elem(&kiln_ct6, &rk, &rv, BPF_ANY) ||
	    bpf_map_update_elem(&kiln_ct6, &fk, &fv, BPF_ANY))
		return TCX_DROP;
	return apply6(skb, &p, &fv, 1);
}

static __noinline int egress6(struct __sk_buff *skb)
{
	struct ct6_key rk = {};
	struct ct6_val *ct;
	struct pkt6 p;

	if (!load6(skb, &p))
		return TC_OTHER;
	ct6_tuple(&rk, p.saddr, p.daddr, p.sport, p.dport);
	rk.proto = p.proto;
	rk.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&kiln_ct6, &rk);
	if (!ct)
		return TCX_NEXT;
	track6(ct, &p, CT_DIR_REV);
	return apply6(skb, &p, ct, 0);
}

/*
 * The programs dispatch on skb->protocol (the Ethernet type; the parsers check
 * the header itself) to subprograms (BPF-to-BPF calls, verified in the
 * caller's context), each with a stack frame of its own: inlined into one
 * frame, the IPv4, IPv6 and ICMP paths' locals would pass the 512 bytes a
 * call chain may use. A packet with neither TCP nor UDP (TC_OTHER) may be an
 * ICMP error to translate.
 */

SEC("tcx/ingress")
int kiln_tc_ingress(struct __sk_buff *skb)
{
	int ret;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		ret = ingress4(skb);
		return ret == TC_OTHER ? icmp4(skb, 1) : ret;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		ret = ingress6(skb);
		return ret == TC_OTHER ? icmp6(skb, 1) : ret;
	}
	return TCX_NEXT;
}

SEC("tcx/egress")
int kiln_tc_egress(struct __sk_buff *skb)
{
	int ret;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		ret = egress4(skb);
		return ret == TC_OTHER ? icmp4(skb, 0) : ret;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		ret = egress6(skb);
		return ret == TC_OTHER ? icmp6(skb, 0) : ret;
	}
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

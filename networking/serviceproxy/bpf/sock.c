/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Socket-level load balancing for Kubernetes ClusterIP Services.
 *
 * Programs at the cgroup v2 hooks rewrite the destination of connect(2) and of
 * unconnected sendmsg(2) from a Service's virtual address (VIP) to one of its
 * backends, before a packet exists; recvmsg(2) and getpeername(2) rewrite the
 * backend address back to the VIP, so the application only ever sees the VIP.
 *
 * Addresses are kept as 16 bytes in every map; an IPv4 address is stored in its
 * IPv4-mapped form (::ffff:a.b.c.d), so a v4 socket and a dual-stack v6 socket
 * that talks to ::ffff:VIP find the same Service entry.
 *
 * Map update protocol (kept by the Go side, relied upon here): a slot
 * (id, i) for i < count always names a backend present in the backends map.
 * Growing writes slots before the count, shrinking writes the count before
 * removing slots, deleting removes the service before its slots. The first
 * INLINE_SLOTS slots are in the service's value and change with its count.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

/* From <asm-generic/errno.h>, which needs an <asm/errno.h> of the target. */
#define ECONNREFUSED 111

#define MAX_REVNAT 131072

struct svc_val {
	__u32 id;               /* stable service id, 1..max: its slot table */
	__u32 count;            /* number of valid slots; 0 refuses */
	__u32 flags;            /* SVC_F_* */
	__u32 affinity_timeout; /* seconds, with SVC_F_AFFINITY */
	__u32 slots[INLINE_SLOTS]; /* the first slots of the table */
};

struct revnat_key {
	__u64 cookie;  /* socket cookie */
	__u32 addr[4]; /* backend address */
	__u16 port;    /* backend port, network order */
	__u16 pad[3];
};

struct revnat_val {
	__u32 addr[4]; /* VIP as the application named it */
	__u16 port;
	__u16 pad;
};

struct affinity_key {
	__u64 netns; /* network namespace cookie: the client at socket level */
	__u32 id;    /* service id */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_services SEC(".maps");

/* The translation of a connected socket, kept with the socket (and gone with
 * it): what getpeername(2) and recvmsg(2) on it turn back. */
struct sk_revnat {
	__u32 be_addr[4];  /* backend address */
	__u32 vip_addr[4]; /* VIP as the application named it */
	__u16 be_port;     /* network order */
	__u16 vip_port;    /* network order */
};

/* Reverse NAT of unconnected (UDP) sockets, which send to many addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_REVNAT);
	__type(key, struct revnat_key);
	__type(value, struct revnat_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_revnat SEC(".maps");

/* Reverse NAT of connected sockets: socket-local storage costs a connect(2)
 * less than an LRU entry, and leaves the LRU to the sockets that need it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_sk_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_AFFINITY);
	__type(key, struct affinity_key);
	__type(value, struct affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_affinity SEC(".maps");

/*
 * pick_svc picks a backend of svc (see pick in common.h). With ClientIP
 * affinity, the client is the socket's network namespace (a pod).
 */
static __always_inline struct backend *pick_svc(void *ctx, const struct svc_val *svc,
						__u32 *backend_id)
{
	struct affinity_key akey = {};
	struct table_ref t = {
		.id = svc->id,
		.count = svc->count,
		.flags = svc->flags,
		.affinity_timeout = svc->affinity_timeout,
		.inl = svc->slots,
	};

	if (t.flags & SVC_F_AFFINITY) {
		akey.netns = bpf_get_netns_cookie(ctx);
		akey.id = t.id;
	}
	return pick(&t, &kiln_affinity, &akey, backend_id);
}

/* remember records the translation of vip to be for reverse4/6: with the
 * socket when it is being connected, else in the LRU map by socket cookie and
 * backend. */
static __always_inline void remember(struct bpf_sock_addr *ctx, const struct backend *be,
				     const struct svc_key *vip, int connecting)
{
	struct revnat_key rk = {};
	struct revnat_val rv = {};
	struct revnat_val *old;

	if (connecting) {
		struct sk_revnat *sr;

		sr = bpf_sk_storage_get(&kiln_sk_revnat, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (sr) {
			__builtin_memcpy(sr->be_addr, be->addr, sizeof(sr->be_addr));
			__builtin_memcpy(sr->vip_addr, vip->addr, sizeof(sr->vip_addr));
			sr->be_port = be->port;
			sr->vip_port = vip->port;
			return;
		}
	}
	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, sizeof(rk.addr));
	rk.port = be->port;
	/* A socket sends to the same backend many times: an LRU update
	 * replaces the element, a lookup does not. */
	old = bpf_map_lookup_elem(&kiln_revnat, &rk);
	if (old && old->port == vip->port && old->addr[0] == vip->addr[0] &&
	    old->addr[1] == vip->addr[1] && old->addr[2] == vip->addr[2] &&
	    old->addr[3] == vip->addr[3])
		return;
	__builtin_memcpy(rv.addr, vip->addr, sizeof(rv.addr));
	rv.port = vip->port;
	bpf_map_update_elem(&kiln_revnat, &rk, &rv, BPF_ANY);
}

/* lookup_revnat returns the VIP and port that backend addr:port stands for on
 * the socket of ctx, through vip and port, or 0 when it stands for none. */
static __always_inline int lookup_revnat(struct bpf_sock_addr *ctx, const __u32 *addr,
					 __u16 port, __u32 *vip, __u16 *vip_port)
{
	struct revnat_key rk = {};
	struct revnat_val *rv;
	struct sk_revnat *sr;

	sr = bpf_sk_storage_get(&kiln_sk_revnat, ctx->sk, 0, 0);
	if (sr && sr->be_port == port && sr->be_addr[0] == addr[0] && sr->be_addr[1] == addr[1] &&
	    sr->be_addr[2] == addr[2] && sr->be_addr[3] == addr[3]) {
		__builtin_memcpy(vip, sr->vip_addr, sizeof(sr->vip_addr));
		*vip_port = sr->vip_port;
		return 1;
	}
	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, addr, sizeof(rk.addr));
	rk.port = port;
	rv = bpf_map_lookup_elem(&kiln_revnat, &rk);
	if (!rv)
		return 0;
	__builtin_memcpy(vip, rv->addr, sizeof(rv->addr));
	*vip_port = rv->port;
	return 1;
}

static __always_inline int proto_ok(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/*
 * forward4 and forward6 translate a destination. They return 1 to let the
 * call go on (translated or not) and 0 to refuse it with ECONNREFUSED.
 */
static __always_inline int forward4(struct bpf_sock_addr *ctx, int connecting)
{
	struct svc_key key = {};
	struct svc_val *svc;
	struct backend *be;
	__u32 bid = 0;

	if (!proto_ok(ctx->protocol))
		return 1;
	key.addr[2] = bpf_htonl(0x0000ffff);
	key.addr[3] = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)ctx->protocol;

	svc = bpf_map_lookup_elem(&kiln_services, &key);
	if (!svc)
		return 1;
	be = pick_svc(ctx, svc, &bid);
	if (!be || !is_v4mapped(be->addr)) {
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	ctx->user_ip4 = be->addr[3];
	ctx->user_port = be->port;
	remember(ctx, be, &key, connecting);
	return 1;
}

static __always_inline int forward6(struct bpf_sock_addr *ctx, int connecting)
{
	struct svc_key key = {};
	struct svc_val *svc;
	struct backend *be;
	__u32 bid = 0;

	if (!proto_ok(ctx->protocol))
		return 1;
	key.addr[0] = ctx->user_ip6[0];
	key.addr[1] = ctx->user_ip6[1];
	key.addr[2] = ctx->user_ip6[2];
	key.addr[3] = ctx->user_ip6[3];
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)ctx->protocol;

	svc = bpf_map_lookup_elem(&kiln_services, &key);
	if (!svc)
		return 1;
	be = pick_svc(ctx, svc, &bid);
	/* A v4 service reached as ::ffff:VIP gets ::ffff:backend, which a
	 * dual-stack socket connects to over IPv4. */
	if (!be || is_v4mapped(be->addr) != is_v4mapped(key.addr)) {
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	ctx->user_ip6[0] = be->addr[0];
	ctx->user_ip6[1] = be->addr[1];
	ctx->user_ip6[2] = be->addr[2];
	ctx->user_ip6[3] = be->addr[3];
	ctx->user_port = be->port;
	remember(ctx, be, &key, connecting);
	return 1;
}

static __always_inline void reverse4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4] = { 0, 0, bpf_htonl(0x0000ffff), ctx->user_ip4 };
	__u32 vip[4];
	__u16 port;

	if (!lookup_revnat(ctx, addr, (__u16)ctx->user_port, vip, &port) || !is_v4mapped(vip))
		return;
	ctx->user_ip4 = vip[3];
	ctx->user_port = port;
}

static __always_inline void reverse6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__u32 vip[4];
	__u16 port;

	if (!lookup_revnat(ctx, addr, (__u16)ctx->user_port, vip, &port))
		return;
	ctx->user_ip6[0] = vip[0];
	ctx->user_ip6[1] = vip[1];
	ctx->user_ip6[2] = vip[2];
	ctx->user_ip6[3] = vip[3];
	ctx->user_port = port;
}

SEC("cgroup/connect4")
int kiln_connect4(struct bpf_sock_addr *ctx)
{
	return forward4(ctx, 1);
}

SEC("cgroup/connect6")
int kiln_connect6(struct bpf_sock_addr *ctx)
{
	return forward6(ctx, 1);
}

SEC("cgroup/sendmsg4")
int kiln_sendmsg4(struct bpf_sock_addr *ctx)
{
	return forward4(ctx, 0);
}

SEC("cgroup/sendmsg6")
int kiln_sendmsg6(struct bpf_sock_addr *ctx)
{
	return forward6(ctx, 0);
}

SEC("cgroup/recvmsg4")
int kiln_recvmsg4(struct bpf_sock_addr *ctx)
{
	reverse4(ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int kiln_recvmsg6(struct bpf_sock_addr *ctx)
{
	reverse6(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int kiln_getpeername4(struct bpf_sock_addr *ctx)
{
	reverse4(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int kiln_getpeername6(struct bpf_sock_addr *ctx)
{
	reverse6(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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
 * removing slots, deleting removes the service before its slots.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

/* From <asm-generic/errno.h>, which needs an <asm/errno.h> of the target. */
#define ECONNREFUSED 111

#define MAX_REVNAT 131072

struct svc_val {
	__u32 id;               /* stable service id, 1..max */
	__u32 count;            /* number of valid slots; 0 refuses */
	__u32 flags;            /* SVC_F_* */
	__u32 affinity_timeout; /* seconds, with SVC_F_AFFINITY */
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_REVNAT);
	__type(key, struct revnat_key);
	__type(value, struct revnat_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_AFFINITY);
	__type(key, struct affinity_key);
	__type(value, struct affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_affinity SEC(".maps");

/*
 * pick returns the backend for svc and its id through backend_id, or NULL when
 * the service has no usable backend. With ClientIP affinity, the client is the
 * socket's network namespace (a pod), and the previous choice is reused while
 * it is younger than the timeout and its slot still names it.
 */
static __always_inline struct backend *pick(void *ctx, const struct svc_val *svc,
					    __u32 *backend_id)
{
	struct affinity_key akey = {};
	struct affinity_val *aff = NULL;
	struct slot_key skey = { .id = svc->id };
	struct backend *be;
	__u32 *bid;
	__u64 now = 0;

	if (svc->count == 0)
		return NULL;

	if (svc->flags & SVC_F_AFFINITY) {
		now = bpf_ktime_get_ns();
		akey.netns = bpf_get_netns_cookie(ctx);
		akey.id = svc->id;
		aff = bpf_map_lookup_elem(&kiln_affinity, &akey);
		if (aff && aff->slot < svc->count &&
		    now - aff->last_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			skey.slot = aff->slot;
			bid = bpf_map_lookup_elem(&kiln_slots, &skey);
			if (bid && *bid == aff->backend_id) {
				be = bpf_map_lookup_elem(&kiln_backends, bid);
				if (be) {
					aff->last_ns = now;
					*backend_id = *bid;
					return be;
				}
			}
		}
	}

	skey.slot = bpf_get_prandom_u32() % svc->count;
	bid = bpf_map_lookup_elem(&kiln_slots, &skey);
	if (!bid)
		return NULL;
	be = bpf_map_lookup_elem(&kiln_backends, bid);
	if (!be)
		return NULL;
	*backend_id = *bid;

	if (svc->flags & SVC_F_AFFINITY) {
		struct affinity_val nv = {
			.backend_id = *bid,
			.slot = skey.slot,
			.last_ns = now,
		};
		bpf_map_update_elem(&kiln_affinity, &akey, &nv, BPF_ANY);
	}
	return be;
}

static __always_inline void remember(void *ctx, const struct backend *be,
				     const struct svc_key *vip)
{
	struct revnat_key rk = {};
	struct revnat_val rv = {};

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, sizeof(rk.addr));
	rk.port = be->port;
	__builtin_memcpy(rv.addr, vip->addr, sizeof(rv.addr));
	rv.port = vip->port;
	bpf_map_update_elem(&kiln_revnat, &rk, &rv, BPF_ANY);
}

static __always_inline int proto_ok(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/*
 * forward4 and forward6 translate a destination. They return 1 to let the
 * call go on (translated or not) and 0 to refuse it with ECONNREFUSED.
 */
static __always_inline int forward4(struct bpf_sock_addr *ctx)
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
	be = pick(ctx, svc, &bid);
	if (!be || !is_v4mapped(be->addr)) {
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	ctx->user_ip4 = be->addr[3];
	ctx->user_port = be->port;
	remember(ctx, be, &key);
	return 1;
}

static __always_inline int forward6(struct bpf_sock_addr *ctx)
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
	be = pick(ctx, svc, &bid);
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
	remember(ctx, be, &key);
	return 1;
}

static __always_inline void reverse4(struct bpf_sock_addr *ctx)
{
	struct revnat_key rk = {};
	struct revnat_val *rv;

	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr[2] = bpf_htonl(0x0000ffff);
	rk.addr[3] = ctx->user_ip4;
	rk.port = (__u16)ctx->user_port;
	rv = bpf_map_lookup_elem(&kiln_revnat, &rk);
	if (!rv || !is_v4mapped(rv->addr))
		return;
	ctx->user_ip4 = rv->addr[3];
	ctx->user_port = rv->port;
}

static __always_inline void reverse6(struct bpf_sock_addr *ctx)
{
	struct revnat_key rk = {};
	struct revnat_val *rv;

	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr[0] = ctx->user_ip6[0];
	rk.addr[1] = ctx->user_ip6[1];
	rk.addr[2] = ctx->user_ip6[2];
	rk.addr[3] = ctx->user_ip6[3];
	rk.port = (__u16)ctx->user_port;
	rv = bpf_map_lookup_elem(&kiln_revnat, &rk);
	if (!rv)
		return;
	ctx->user_ip6[0] = rv->addr[0];
	ctx->user_ip6[1] = rv->addr[1];
	ctx->user_ip6[2] = rv->addr[2];
	ctx->user_ip6[3] = rv->addr[3];
	ctx->user_port = rv->port;
}

SEC("cgroup/connect4")
int kiln_connect4(struct bpf_sock_addr *ctx)
{
	return forward4(ctx);
}

SEC("cgroup/connect6")
int kiln_connect6(struct bpf_sock_addr *ctx)
{
	return forward6(ctx);
}

SEC("cgroup/sendmsg4")
int kiln_sendmsg4(struct bpf_sock_addr *ctx)
{
	return forward4(ctx);
}

SEC("cgroup/sendmsg6")
int kiln_sendmsg6(struct bpf_sock_addr *ctx)
{
	return forward6(ctx);
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

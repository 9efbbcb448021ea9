/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * What the socket programs (sock.c) and the TC programs (tc.c) share: the
 * slot tables and backends that both balance over. Both objects declare the
 * maps; the loader hands the TC object the socket object's maps, so there is
 * one copy of each in the kernel.
 *
 * Addresses are kept as 16 bytes in every map; an IPv4 address is stored in its
 * IPv4-mapped form (::ffff:a.b.c.d).
 */
#ifndef KILN_COMMON_H
#define KILN_COMMON_H

/* From <linux/in.h>, which needs a libc. */
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define SVC_F_AFFINITY (1U << 0) /* sessionAffinity: ClientIP */

#define BE_F_LOCAL (1U << 0) /* the backend runs on this node */

/* Sizes are defaults; the loader overrides max_entries before loading. */
#define MAX_SERVICES 16384
#define MAX_SLOTS 131072
#define MAX_BACKENDS 65536
#define MAX_AFFINITY 65536

struct svc_key {
	__u32 addr[4]; /* network order, IPv4 as ::ffff:a.b.c.d */
	__u16 port;    /* network order */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct slot_key {
	__u32 id;
	__u32 slot;
};

struct backend {
	__u32 addr[4]; /* as in svc_key */
	__u16 port;    /* network order */
	__u8 flags;    /* BE_F_* */
	__u8 pad;
};

struct affinity_val {
	__u32 backend_id;
	__u32 slot; /* where backend_id was found, re-checked before reuse */
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SLOTS);
	__type(key, struct slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_backends SEC(".maps");

static __always_inline int is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

#endif

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

/*
 * A slot table lists a service's backends by id, one per slot; a backend is
 * picked by slot. Its first INLINE_SLOTS slots travel in the map value that
 * names the table (a service or a frontend), so that a service with a few
 * backends is one map element and its count and slots change in one atomic
 * write; slots from INLINE_SLOTS on are in kiln_slots under (id, slot).
 */
#define INLINE_SLOTS 4

#define NSEC_PER_SEC 1000000000ULL

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

/* A backend id indexes kiln_backends; a removed backend keeps its address with
 * port 0, so that a reader racing the removal sees either the whole backend or
 * none. */
struct backend {
	__u32 addr[4]; /* as in svc_key */
	__u16 port;    /* network order; 0: no backend */
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

/* Indexed by backend id (1..MAX_BACKENDS); 0 is no backend. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS + 1);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kiln_backends SEC(".maps");

static __always_inline int is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* backend_of returns backend bid, or NULL if there is none. */
static __always_inline struct backend *backend_of(__u32 bid)
{
	struct backend *be;

	if (!bid)
		return NULL;
	be = bpf_map_lookup_elem(&kiln_backends, &bid);
	if (!be || !be->port)
		return NULL;
	return be;
}

/* slot_backend returns the backend id in slot of table id, whose inline slots
 * are inl; 0 for none. */
static __always_inline __u32 slot_backend(__u32 id, const __u32 *inl, __u32 slot)
{
	struct slot_key k = { .id = id, .slot = slot };
	__u32 *bid;

	if (slot < INLINE_SLOTS)
		return inl[slot];
	bid = bpf_map_lookup_elem(&kiln_slots, &k);
	return bid ? *bid : 0;
}

/* A slot table as a service or frontend value names it. */
struct table_ref {
	__u32 id;
	__u32 count; /* valid slots; 0: no backend */
	__u32 flags; /* SVC_F_AFFINITY */
	__u32 affinity_timeout;
	const __u32 *inl;
};

/*
 * A Maglev lookup table (tc.c's kiln_maglev): MAGLEV_M entries, each a backend
 * id, that a flow's hash indexes. M is prime (the permutations of the
 * population need it); 1009 is the largest prime whose table, with the hash
 * map element's header and key, fits a 4 KiB allocation (maglev.go, which
 * builds it, says more).
 */
#define MAGLEV_M 1009

/* An affinity entry's slot with this bit is an index into the Maglev table,
 * not a slot of the slot table. */
#define AFF_SLOT_MAGLEV (1U << 31)

/*
 * pick returns a backend of table t and its id through backend_id, or NULL
 * when there is none: a random slot's, or with ClientIP affinity the one that
 * the client (akey in aff_map) had, while it is younger than the timeout and
 * its slot still names it. Affinity entries are keyed by client and table id.
 */
static __always_inline struct backend *pick_mg(const struct table_ref *t, void *aff_map,
					       const void *akey, __u32 *backend_id,
					       const __u32 *mg, __u32 mg_idx);

static __always_inline struct backend *pick(const struct table_ref *t, void *aff_map,
					    const void *akey, __u32 *backend_id)
{
	return pick_mg(t, aff_map, akey, backend_id, NULL, 0);
}

/*
 * pick_mg is pick with a Maglev table: when mg is not NULL (MAGLEV_M backend
 * ids), a client without an affinity hit gets the backend of entry mg_idx
 * (mg_idx < MAGLEV_M), the random slot only when that names no backend.
 */
static __always_inline struct backend *pick_mg(const struct table_ref *t, void *aff_map,
					       const void *akey, __u32 *backend_id,
					       const __u32 *mg, __u32 mg_idx)
{
	struct affinity_val *aff;
	struct backend *be;
	__u32 slot = 0, bid;
	__u64 now = 0;

	if (t->count == 0)
		return NULL;
	if (t->flags & SVC_F_AFFINITY) {
		now = bpf_ktime_get_ns();
		aff = bpf_map_lookup_elem(aff_map, akey);
		if (aff) {
			/* Copies: the entry may change under us. */
			__u32 aslot = aff->slot, abid = aff->backend_id;
			__u64 last = aff->last_ns;

			__u64 timeout = (__u64)t->affinity_timeout * NSEC_PER_SEC;
			__u32 mi = aslot & ~AFF_SLOT_MAGLEV;
			int named;

			/* Without mg (the socket programs) this is the slot check
			 * alone: a slot with AFF_SLOT_MAGLEV is past any count. */
			if (mg && (aslot & AFF_SLOT_MAGLEV))
				named = mi < MAGLEV_M && now - last <= timeout && abid && mg[mi] == abid;
			else
				named = aslot < t->count && now - last <= timeout && abid &&
					slot_backend(t->id, t->inl, aslot) == abid;
			if (named) {
				be = backend_of(abid);
				if (be) {
					aff->last_ns = now;
					*backend_id = abid;
					return be;
				}
			}
		}
	}
	if (mg && mg_idx < MAGLEV_M) {
		bid = mg[mg_idx];
		be = backend_of(bid);
		if (be) {
			slot = AFF_SLOT_MAGLEV | mg_idx;
			goto found;
		}
	}
	if (t->count > 1)
		slot = bpf_get_prandom_u32() % t->count;
	bid = slot_backend(t->id, t->inl, slot);
	be = backend_of(bid);
	if (!be)
		return NULL;
found:
	*backend_id = bid;
	if (t->flags & SVC_F_AFFINITY) {
		struct affinity_val nv = { .backend_id = bid, .slot = slot, .last_ns = now };

		bpf_map_update_elem(aff_map, akey, &nv, BPF_ANY);
	}
	return be;
}

#endif

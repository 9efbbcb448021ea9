package serviceproxy

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
)

// ExternalLB is how a new flow to a frontend (a NodePort, externalIP or
// LoadBalancer IP) picks its backend. ClusterIP traffic is not affected: the
// socket programs pick at connect(2), on the client's own node.
type ExternalLB uint8

const (
	// ExternalRandom picks a random backend of the frontend's slot table. Each
	// node picks on its own, so a flow whose packets an ECMP load balancer
	// spreads over nodes (after a node joins or leaves, say) breaks.
	ExternalRandom ExternalLB = iota
	// ExternalMaglev hashes the flow (client address and port, frontend
	// address and port, protocol) into a Maglev lookup table that every node
	// builds alike from the same backends (Eisenbud et al., "Maglev: A Fast and
	// Reliable Software Network Load Balancer", NSDI 2016): a flow gets the
	// same backend on whichever node its packets arrive, and a change of
	// backends moves few flows.
	ExternalMaglev
)

func (a ExternalLB) String() string {
	switch a {
	case ExternalRandom:
		return "random"
	case ExternalMaglev:
		return "maglev"
	}
	return fmt.Sprintf("external-lb(%d)", uint8(a))
}

// ParseExternalLB is the inverse of ExternalLB.String.
func ParseExternalLB(s string) (ExternalLB, error) {
	switch s {
	case "random":
		return ExternalRandom, nil
	case "maglev":
		return ExternalMaglev, nil
	}
	return 0, fmt.Errorf("unknown external load-balancing algorithm %q (random or maglev)", s)
}

// maglevM is the size of a Maglev table, MAGLEV_M in bpf/common.h. It must be
// prime, so that every skip (1..M-1) is coprime with it and each backend's
// permutation visits every entry. The kernel allocates each element of a
// BPF_F_NO_PREALLOC hash map on its own, from a kmalloc size class: 48 bytes
// of element header, the key rounded to 8 and the value rounded to 8. 1009 is
// the largest prime for which that is at most 4,096 bytes (48 + 8 + 4,040),
// so a table costs 4 KiB; 1021, the largest prime whose value alone fits a
// page, would take 4,144 bytes and so an 8 KiB object. kiln_maglev thus holds
// at most 64 MiB (Limits.Services tables). Every backend gets ⌊M/N⌋ or ⌈M/N⌉
// entries: within 1% of a fair share up to about 10 backends, 10% at about
// 100. Removing one of N backends moves about M/N entries for small N and a
// few times that as N nears M/20 (maglev_test.go measures it), since Maglev's
// disruption bound needs M ≫ N. A service with more than M backends gets no
// table (its frontends pick at random).
const maglevM = 1009

// Fixed seeds of the two permutation hashes: every node must compute the same
// table. Changing them moves flows on a rolling upgrade.
var (
	maglevOffsetSeed = []byte("kiln-maglev-offset\x00")
	maglevSkipSeed   = []byte("kiln-maglev-skip\x00")
)

// maglevKey is the identity of a backend its permutation is computed from: the
// 16 address bytes (IPv4 mapped) and the port in network order.
func maglevKey(b netip.AddrPort) [18]byte {
	var k [18]byte
	a := b.Addr().Unmap().As16()
	copy(k[:], a[:])
	binary.BigEndian.PutUint16(k[16:], b.Port())
	return k
}

// maglevHash is FNV-1a (64 bits) of seed and key, with splitmix64's finalizer
// for avalanche: FNV-1a alone spreads the last bytes (the port) poorly.
func maglevHash(seed []byte, key []byte) uint64 {
	h := fnv.New64a()
	h.Write(seed)
	h.Write(key)
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// maglevTable returns a Maglev lookup table of m entries (m prime) over
// backends: entry i is the index in backends of the backend that owns it.
// The table depends on the set of backends only, not on their order: they are
// populated in the order of their keys. backends must be free of duplicates;
// none gives nil.
func maglevTable(backends []netip.AddrPort, m int) []int {
	n := len(backends)
	if n == 0 {
		return nil
	}
	type perm struct {
		idx                int // in backends
		key                [18]byte
		offset, skip, next uint64
	}
	ps := make([]perm, n)
	for i, b := range backends {
		k := maglevKey(b)
		ps[i] = perm{idx: i, key: k,
			offset: maglevHash(maglevOffsetSeed, k[:]) % uint64(m),
			skip:   maglevHash(maglevSkipSeed, k[:])%uint64(m-1) + 1}
	}
	slices.SortFunc(ps, func(a, b perm) int { return slices.Compare(a.key[:], b.key[:]) })
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	// Round robin: each backend in turn takes the next free entry of its
	// permutation (offset + j*skip mod m), until every entry is taken.
	for filled := 0; ; {
		for i := range ps {
			p := &ps[i]
			c := (p.offset + p.next*p.skip) % uint64(m)
			for table[c] >= 0 {
				p.next++
				c = (p.offset + p.next*p.skip) % uint64(m)
			}
			table[c] = p.idx
			p.next++
			if filled++; filled == m {
				return table
			}
		}
	}
}

// maglevValue is the kiln_maglev value for bes: their IDs laid out by
// maglevTable. ok is false when bes has no table (none, or more than maglevM).
func maglevValue(bes []*beEntry) (v tcMaglevVal, ok bool) {
	if len(bes) == 0 || len(bes) > maglevM {
		return v, false
	}
	addrs := make([]netip.AddrPort, len(bes))
	for i, be := range bes {
		addrs[i] = be.addr()
	}
	for i, idx := range maglevTable(addrs, maglevM) {
		v.Backends[i] = bes[idx].id
	}
	return v, true
}

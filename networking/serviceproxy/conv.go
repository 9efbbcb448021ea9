package serviceproxy

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"time"
)

// The map structs hold addresses and ports in network byte order, read by the BPF
// program as raw memory. The generated Go structs hold them as native integers, so
// each value is the native reading of the network-order bytes. bpf2go built the
// object for little-endian targets only (sock_bpfel.go), where this is a byte swap.

func addrWords(a netip.Addr) [4]uint32 {
	b := a.As16() // IPv4 as ::ffff:a.b.c.d
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

func wordsAddr(w [4]uint32) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	return netip.AddrFrom16(b).Unmap()
}

func portNet(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func netPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func toSvcKey(k ServiceKey) sockSvcKey {
	return sockSvcKey{Addr: addrWords(k.Addr), Port: portNet(k.Port), Proto: uint8(k.Proto)}
}

func fromSvcKey(k sockSvcKey) ServiceKey {
	return ServiceKey{Addr: wordsAddr(k.Addr), Port: netPort(k.Port), Proto: Proto(k.Proto)}
}

// toSvcVal is the services map value of a service with this ID, normalized
// affinity timeout and slot table, whose first slots it carries.
func toSvcVal(id uint32, affinity time.Duration, slots []uint32) sockSvcVal {
	v := sockSvcVal{Id: id, Count: uint32(len(slots))}
	copy(v.Slots[:], slots)
	if affinity > 0 {
		v.Flags |= flagAffinity
		v.AffinityTimeout = uint32(affinity / time.Second)
	}
	return v
}

// tombstone is the value a removed backend leaves in the backends array: its
// address with port 0, so that a reader racing the write sees the backend
// whole or not at all.
func tombstone(b sockBackend) sockBackend { return sockBackend{Addr: b.Addr} }

func toBackend(b netip.AddrPort, local bool) sockBackend {
	v := sockBackend{Addr: addrWords(b.Addr()), Port: portNet(b.Port())}
	if local {
		v.Flags = beFlagLocal
	}
	return v
}

func toFeKey(k ServiceKey) tcSvcKey { return tcSvcKey(toSvcKey(k)) }

// toFeVal is the frontends map value of f, a frontend of e (e.svc, e.slots and
// e.local up to date).
func toFeVal(e *svcEntry, f frontend) tcFeVal {
	v := tcFeVal{Id: e.id, Count: uint32(len(e.slots)), Flags: f.kind, Owner: e.id}
	copy(v.Slots[:], e.slots)
	if e.local != nil {
		v.Id, v.Count = e.local.id, uint32(len(e.local.slots))
		v.Slots = [inlineSlots]uint32{}
		copy(v.Slots[:], e.local.slots)
		v.Flags |= feFlagLocal
	}
	if e.svc.Affinity > 0 {
		v.Flags |= flagAffinity
		v.AffinityTimeout = uint32(e.svc.Affinity / time.Second)
	}
	if e.mgID != 0 {
		v.Flags |= feFlagMaglev
	}
	return v
}

// isLocal reports whether backend b of normalized s runs on this node.
func (s Service) isLocal(b netip.AddrPort) bool {
	_, found := slices.BinarySearchFunc(s.LocalBackends, b, netip.AddrPort.Compare)
	return found
}

func fromBackend(b sockBackend) netip.AddrPort {
	return netip.AddrPortFrom(wordsAddr(b.Addr), netPort(b.Port))
}

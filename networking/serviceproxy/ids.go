package serviceproxy

import "fmt"

// idAllocator hands out IDs 1..max. Released IDs wait in a FIFO free list, so an ID
// is reused as late as possible (a late affinity entry for the old owner is then
// likely gone), and IDs stay small and dense for the maps. Being dense, the IDs in
// use are kept as a bitmap, which grows with the highest ID handed out.
type idAllocator struct {
	max   uint32
	next  uint32 // lowest never-used ID
	free  []uint32
	used  []uint64 // bit id%64 of word id/64
	inuse int
}

func newIDAllocator(max uint32) *idAllocator {
	return &idAllocator{max: max, next: 1}
}

func (a *idAllocator) isUsed(id uint32) bool {
	w := int(id / 64)
	return w < len(a.used) && a.used[w]&(1<<(id%64)) != 0
}

func (a *idAllocator) setUsed(id uint32) {
	w := int(id / 64)
	if w >= len(a.used) {
		a.used = append(a.used, make([]uint64, w+1-len(a.used))...)
	}
	a.used[w] |= 1 << (id % 64)
	a.inuse++
}

func (a *idAllocator) alloc() (uint32, error) {
	var id uint32
	switch {
	case len(a.free) > 0:
		id, a.free = a.free[0], a.free[1:]
	case a.next <= a.max:
		id = a.next
		a.next++
	default:
		return 0, fmt.Errorf("all %d IDs in use", a.max)
	}
	a.setUsed(id)
	return id, nil
}

func (a *idAllocator) release(id uint32) {
	if !a.isUsed(id) {
		return
	}
	a.used[id/64] &^= 1 << (id % 64)
	a.inuse--
	a.free = append(a.free, id)
}

func (a *idAllocator) inUse() int { return a.inuse }

// adopt rebuilds the allocator from IDs found in pinned maps: every gap below the
// highest one goes to the free list.
func adoptIDs(max uint32, ids []uint32) (*idAllocator, error) {
	a := newIDAllocator(max)
	for _, id := range ids {
		if id == 0 || id > max {
			return nil, fmt.Errorf("pinned ID %d outside 1..%d", id, max)
		}
		if a.isUsed(id) {
			return nil, fmt.Errorf("pinned ID %d used twice", id)
		}
		a.setUsed(id)
		if id >= a.next {
			a.next = id + 1
		}
	}
	for id := uint32(1); id < a.next; id++ {
		if !a.isUsed(id) {
			a.free = append(a.free, id)
		}
	}
	return a, nil
}

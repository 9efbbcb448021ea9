package serviceproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// opKind is one batch of map writes. A plan runs its batches in the order of the
// constants, which is what keeps the datapath consistent (see the package comment).
type opKind int

const (
	opPutBackends opKind = iota
	opPutSlotsGrow
	opPutServices
	opPutSlotsShrink
	opDeleteSlotsShrink
	opDeleteServices
	opDeleteSlotsDeleted
	opDeleteBackends
	numOps
)

func (k opKind) String() string {
	return [...]string{"put backends", "put slots (grow)", "put services", "put slots (shrink)",
		"delete slots (shrink)", "delete services", "delete slots (deleted services)",
		"delete backends"}[k]
}

// op is one batch: the fields that its kind uses are set.
type op struct {
	kind     opKind
	beIDs    []uint32
	bes      []sockBackend
	slotKeys []sockSlotKey
	slotVals []uint32
	svcKeys  []sockSvcKey
	svcVals  []sockSvcVal
}

func (o *op) len() int { return len(o.beIDs) + len(o.slotKeys) + len(o.svcKeys) }

// snapshot is the content of the three maps that hold configuration.
type snapshot struct {
	services map[sockSvcKey]sockSvcVal
	slots    map[sockSlotKey]uint32
	backends map[uint32]sockBackend
}

// datapath is where a table's writes go: the pinned BPF maps, or a simulation in
// tests.
type datapath interface {
	apply(o *op) error
	snapshot() (*snapshot, error)
}

type svcEntry struct {
	id    uint32
	svc   Service  // normalized
	slots []uint32 // backend ID per slot
}

type beEntry struct {
	addr netip.AddrPort
	id   uint32
	refs int // services that have this backend
	// Marks for one update, reset at its end.
	touched, created bool
}

// table mirrors the programmed state in memory, turns desired changes into ordered
// map writes and keeps the mirror in step with the maps.
type table struct {
	limits Limits
	dp     datapath
	log    *slog.Logger

	svcs      map[ServiceKey]*svcEntry
	bes       map[netip.AddrPort]*beEntry
	slotsUsed int
	svcIDs    *idAllocator
	beIDs     *idAllocator
}

// newTable adopts what dp holds: it rebuilds the mirror from the maps, keeps every
// service whose slots are whole and removes what no service can reach (slots past a
// count or of an unknown service, unreferenced backends).
func newTable(dp datapath, limits Limits, log *slog.Logger) (*table, error) {
	t := &table{limits: limits, dp: dp, log: log}
	if err := t.adopt(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *table) adopt() error {
	snap, err := t.dp.snapshot()
	if err != nil {
		return fmt.Errorf("read pinned maps: %w", err)
	}
	t.svcs = make(map[ServiceKey]*svcEntry, len(snap.services))
	t.bes = make(map[netip.AddrPort]*beEntry, len(snap.backends))
	t.slotsUsed = 0
	byID := make(map[uint32]*svcEntry, len(snap.services))
	var gcSvcs []sockSvcKey
	var gcSlots []sockSlotKey
	var gcBes []uint32
	var fixSvcKeys []sockSvcKey
	var fixSvcVals []sockSvcVal

	for _, k := range slices.SortedFunc(maps.Keys(snap.services), cmpSvcKey) {
		v := snap.services[k]
		key := fromSvcKey(k)
		if byID[v.Id] != nil || v.Id == 0 || v.Id > t.limits.Services ||
			v.Count > t.limits.PerService {
			t.log.Warn("dropping malformed pinned service", "service", key, "id", v.Id, "count", v.Count)
			gcSvcs = append(gcSvcs, k)
			continue
		}
		e := &svcEntry{id: v.Id, svc: Service{ServiceKey: key}, slots: make([]uint32, v.Count)}
		if v.Flags&flagAffinity != 0 {
			e.svc.Affinity = time.Duration(v.AffinityTimeout) * time.Second
		}
		byID[v.Id] = e
		t.svcs[key] = e
	}
	filled := make(map[sockSlotKey]bool)
	for sk, bid := range snap.slots {
		e := byID[sk.Id]
		if e == nil || sk.Slot >= uint32(len(e.slots)) {
			gcSlots = append(gcSlots, sk)
			continue
		}
		if _, ok := snap.backends[bid]; !ok {
			// Cannot happen with ordered writes; treat the slot as missing.
			gcSlots = append(gcSlots, sk)
			continue
		}
		e.slots[sk.Slot] = bid
		filled[sk] = true
	}
	for key, e := range t.svcs {
		// Keep the whole prefix of slots; a hole (never left by ordered writes)
		// shrinks the service to it.
		n := 0
		for n < len(e.slots) && filled[sockSlotKey{Id: e.id, Slot: uint32(n)}] {
			n++
		}
		if n < len(e.slots) {
			t.log.Warn("pinned service has a hole in its slots; shrinking", "service", key, "count", len(e.slots), "whole", n)
			for i := n; i < len(e.slots); i++ {
				if filled[sockSlotKey{Id: e.id, Slot: uint32(i)}] {
					gcSlots = append(gcSlots, sockSlotKey{Id: e.id, Slot: uint32(i)})
				}
			}
			e.slots = e.slots[:n]
			v := toSvcVal(e.id, e.svc)
			v.Count = uint32(n)
			fixSvcKeys = append(fixSvcKeys, toSvcKey(key))
			fixSvcVals = append(fixSvcVals, v)
		}
		t.slotsUsed += len(e.slots)
	}
	refs := make(map[uint32]int)
	for _, e := range t.svcs {
		seen := make(map[uint32]bool, len(e.slots))
		for _, bid := range e.slots {
			if !seen[bid] {
				seen[bid] = true
				refs[bid]++
			}
		}
	}
	var beIDs []uint32
	for bid, b := range snap.backends {
		ap := fromBackend(b)
		if refs[bid] == 0 || t.bes[ap] != nil || bid == 0 || bid > t.limits.Backends {
			gcBes = append(gcBes, bid)
			continue
		}
		t.bes[ap] = &beEntry{addr: ap, id: bid, refs: refs[bid]}
		beIDs = append(beIDs, bid)
	}
	// The services' backend lists follow slot order; a backend ID dropped above as
	// a duplicate address leaves its services with fewer usable backends, which
	// the next Sync repairs.
	beAddr := make(map[uint32]netip.AddrPort, len(t.bes))
	for ap, b := range t.bes {
		beAddr[b.id] = ap
	}
	svcIDs := make([]uint32, 0, len(t.svcs))
	for _, e := range t.svcs {
		svcIDs = append(svcIDs, e.id)
		e.svc.Backends = make([]netip.AddrPort, 0, len(e.slots))
		for _, bid := range e.slots {
			if ap, ok := beAddr[bid]; ok {
				e.svc.Backends = append(e.svc.Backends, ap)
			}
		}
	}
	if t.svcIDs, err = adoptIDs(t.limits.Services, svcIDs); err != nil {
		return fmt.Errorf("adopt service IDs: %w", err)
	}
	if t.beIDs, err = adoptIDs(t.limits.Backends, beIDs); err != nil {
		return fmt.Errorf("adopt backend IDs: %w", err)
	}

	// Same order as a plan: the count fixes only ever shrink.
	gc := []*op{
		{kind: opPutServices, svcKeys: fixSvcKeys, svcVals: fixSvcVals},
		{kind: opDeleteServices, svcKeys: gcSvcs},
		{kind: opDeleteSlotsDeleted, slotKeys: gcSlots},
		{kind: opDeleteBackends, beIDs: gcBes},
	}
	for _, o := range gc {
		if o.len() == 0 {
			continue
		}
		if err := t.dp.apply(o); err != nil {
			return fmt.Errorf("garbage-collect pinned maps (%s): %w", o.kind, err)
		}
	}
	t.log.Info("adopted pinned service maps", "services", len(t.svcs), "backends", len(t.bes),
		"slots", t.slotsUsed, "removed_services", len(gcSvcs), "removed_slots", len(gcSlots),
		"removed_backends", len(gcBes))
	return nil
}

func cmpSvcKey(a, b sockSvcKey) int {
	return fromSvcKey(a).compare(fromSvcKey(b))
}

func (k ServiceKey) compare(o ServiceKey) int {
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	if k.Port != o.Port {
		return int(k.Port) - int(o.Port)
	}
	return int(k.Proto) - int(o.Proto)
}

// services returns the programmed services, sorted by key.
func (t *table) services() []Service {
	out := make([]Service, 0, len(t.svcs))
	for _, e := range t.svcs {
		s := e.svc
		s.Backends = slices.Clone(s.Backends)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Service) int { return a.ServiceKey.compare(b.ServiceKey) })
	return out
}

// update programs upserts and removes deletes. A service that is invalid or does not
// fit is reported in the returned error and keeps its last good state; the others
// are programmed. If a map write fails, the mirror is rebuilt from the maps.
func (t *table) update(upserts []Service, deletes []ServiceKey) error {
	var errs []error
	var ops [numOps]op
	for i := range ops {
		ops[i].kind = opKind(i)
	}
	var touched []*beEntry
	touch := func(be *beEntry) {
		if !be.touched {
			be.touched = true
			touched = append(touched, be)
		}
	}
	var releaseSvc []uint32

	for _, u := range upserts {
		n, err := u.normalize(t.limits.PerService)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		old := t.svcs[n.ServiceKey]
		if old != nil && equalService(old.svc, n) {
			continue
		}
		oldCount := 0
		if old != nil {
			oldCount = len(old.slots)
		} else if len(t.svcs) >= int(t.limits.Services) {
			errs = append(errs, fmt.Errorf("service %s: the services map is full (%d)", n.ServiceKey, t.limits.Services))
			continue
		}
		if t.slotsUsed-oldCount+len(n.Backends) > int(t.limits.Slots) {
			errs = append(errs, fmt.Errorf("service %s: the slots map is full (%d)", n.ServiceKey, t.limits.Slots))
			continue
		}
		need := 0
		for _, b := range n.Backends {
			if t.bes[b] == nil {
				need++
			}
		}
		if len(t.bes)+need > int(t.limits.Backends) {
			errs = append(errs, fmt.Errorf("service %s: the backends map is full (%d)", n.ServiceKey, t.limits.Backends))
			continue
		}
		e := old
		if e == nil {
			id, err := t.svcIDs.alloc()
			if err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", n.ServiceKey, err))
				continue
			}
			e = &svcEntry{id: id}
			t.svcs[n.ServiceKey] = e
		}
		want := make([]uint32, len(n.Backends))
		for i, b := range n.Backends {
			be := t.bes[b]
			if be == nil {
				id, err := t.beIDs.alloc()
				if err != nil {
					// Checked above: cannot run out here.
					panic(fmt.Sprintf("backend IDs: %v", err))
				}
				be = &beEntry{addr: b, id: id, created: true}
				t.bes[b] = be
				touch(be)
			}
			want[i] = be.id
		}
		var oldSet map[netip.AddrPort]bool
		if old != nil {
			oldSet = make(map[netip.AddrPort]bool, len(old.svc.Backends))
			for _, b := range old.svc.Backends {
				oldSet[b] = true
			}
		}
		for _, b := range n.Backends {
			if !oldSet[b] {
				be := t.bes[b]
				be.refs++
				touch(be)
			}
			delete(oldSet, b)
		}
		for b := range oldSet {
			be := t.bes[b]
			be.refs--
			touch(be)
		}

		slots := layout(e.slots, want)
		put := &ops[opPutSlotsGrow]
		if len(slots) < oldCount {
			put = &ops[opPutSlotsShrink]
		}
		for i, bid := range slots {
			if i < oldCount && e.slots[i] == bid {
				continue
			}
			put.slotKeys = append(put.slotKeys, sockSlotKey{Id: e.id, Slot: uint32(i)})
			put.slotVals = append(put.slotVals, bid)
		}
		for i := len(slots); i < oldCount; i++ {
			ops[opDeleteSlotsShrink].slotKeys = append(ops[opDeleteSlotsShrink].slotKeys, sockSlotKey{Id: e.id, Slot: uint32(i)})
		}
		ops[opPutServices].svcKeys = append(ops[opPutServices].svcKeys, toSvcKey(n.ServiceKey))
		ops[opPutServices].svcVals = append(ops[opPutServices].svcVals, toSvcVal(e.id, n))
		t.slotsUsed += len(slots) - oldCount
		e.svc, e.slots = n, slots
	}

	for _, k := range deletes {
		k.Addr = k.Addr.Unmap()
		e := t.svcs[k]
		if e == nil {
			continue
		}
		ops[opDeleteServices].svcKeys = append(ops[opDeleteServices].svcKeys, toSvcKey(k))
		for i := range e.slots {
			ops[opDeleteSlotsDeleted].slotKeys = append(ops[opDeleteSlotsDeleted].slotKeys, sockSlotKey{Id: e.id, Slot: uint32(i)})
		}
		for _, b := range e.svc.Backends {
			be := t.bes[b]
			be.refs--
			touch(be)
		}
		t.slotsUsed -= len(e.slots)
		delete(t.svcs, k)
		releaseSvc = append(releaseSvc, e.id)
	}

	var releaseBe []uint32
	for _, be := range touched {
		switch {
		case be.refs == 0 && be.created:
			delete(t.bes, be.addr)
			releaseBe = append(releaseBe, be.id)
		case be.refs == 0:
			ops[opDeleteBackends].beIDs = append(ops[opDeleteBackends].beIDs, be.id)
			delete(t.bes, be.addr)
			releaseBe = append(releaseBe, be.id)
		case be.created:
			ops[opPutBackends].beIDs = append(ops[opPutBackends].beIDs, be.id)
			ops[opPutBackends].bes = append(ops[opPutBackends].bes, toBackend(be.addr))
		}
		be.touched, be.created = false, false
	}

	for i := range ops {
		if ops[i].len() == 0 {
			continue
		}
		if err := t.dp.apply(&ops[i]); err != nil {
			err = fmt.Errorf("%s: %w", ops[i].kind, err)
			t.log.Error("service map update failed; re-reading the maps", "error", err)
			if aerr := t.adopt(); aerr != nil {
				err = errors.Join(err, fmt.Errorf("re-read maps after a failed update: %w", aerr))
			}
			return errors.Join(append(errs, err)...)
		}
	}
	// IDs are free for reuse only once nothing in the maps names them.
	for _, id := range releaseSvc {
		t.svcIDs.release(id)
	}
	for _, id := range releaseBe {
		t.beIDs.release(id)
	}
	return errors.Join(errs...)
}

// sync makes the programmed services equal desired: services not in it are removed.
func (t *table) sync(desired []Service) error {
	var errs []error
	want := make(map[ServiceKey]bool, len(desired))
	ups := make([]Service, 0, len(desired))
	for _, s := range desired {
		k := s.ServiceKey
		k.Addr = k.Addr.Unmap()
		if want[k] {
			errs = append(errs, fmt.Errorf("service %s: listed twice", k))
			continue
		}
		want[k] = true
		ups = append(ups, s)
	}
	var dels []ServiceKey
	for k := range t.svcs {
		if !want[k] {
			dels = append(dels, k)
		}
	}
	slices.SortFunc(dels, ServiceKey.compare)
	return errors.Join(append(errs, t.update(ups, dels))...)
}

// layout places want (backend IDs) in slots: a backend keeps the slot it had when
// that slot still exists, so a change rewrites as few slots as it can, and clients
// with affinity to an unaffected backend keep it. The others fill the free slots
// in the order given.
func layout(old, want []uint32) []uint32 {
	n := len(want)
	res := make([]uint32, n)
	filled := make([]bool, n)
	wanted := make(map[uint32]bool, n)
	for _, id := range want {
		wanted[id] = true
	}
	placed := make(map[uint32]bool, n)
	for i, id := range old {
		if i < n && wanted[id] && !placed[id] {
			res[i], filled[i], placed[id] = id, true, true
		}
	}
	j := 0
	for _, id := range want {
		if placed[id] {
			continue
		}
		for filled[j] {
			j++
		}
		res[j], filled[j], placed[id] = id, true, true
	}
	return res
}

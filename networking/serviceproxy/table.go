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
	// Frontends go with services: put in opPutServices, deleted in
	// opDeleteServices, as the entries that name slot tables.
	feKeys []tcSvcKey
	feVals []tcFeVal
}

func (o *op) len() int { return len(o.beIDs) + len(o.slotKeys) + len(o.svcKeys) + len(o.feKeys) }

// snapshot is the content of the maps that hold configuration.
type snapshot struct {
	services  map[sockSvcKey]sockSvcVal
	slots     map[sockSlotKey]uint32
	backends  map[uint32]sockBackend
	frontends map[tcSvcKey]tcFeVal
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
	// local is the slot table of the frontends under PolicyLocal: the local
	// backends only. Its ID comes from the service IDs.
	local *slotGroup
	fes   []frontend // programmed frontends
}

type slotGroup struct {
	id    uint32
	slots []uint32
}

type beEntry struct {
	addr  netip.AddrPort
	id    uint32
	refs  int  // services that have this backend
	local bool // runs on this node (beFlagLocal)
	// Marks for one update, reset at its end.
	touched, created, rewrite bool
}

// table mirrors the programmed state in memory, turns desired changes into ordered
// map writes and keeps the mirror in step with the maps.
type table struct {
	limits Limits
	dp     datapath
	log    *slog.Logger

	svcs      map[ServiceKey]*svcEntry
	fes       map[ServiceKey]*svcEntry // frontend key → owner
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
	t.fes = make(map[ServiceKey]*svcEntry, len(snap.frontends))
	t.bes = make(map[netip.AddrPort]*beEntry, len(snap.backends))
	t.slotsUsed = 0
	byID := make(map[uint32]*svcEntry, len(snap.services))
	// groups are the slot tables by ID: services' and local ones.
	groups := make(map[uint32]*[]uint32, len(snap.services))
	var gcSvcs []sockSvcKey
	var gcFes []tcSvcKey
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
		groups[v.Id] = &e.slots
		t.svcs[key] = e
	}
	// A frontend names its owner; under PolicyLocal it also names the owner's
	// local slot table, whose length is the largest count found.
	localOwner := make(map[uint32]*svcEntry)
	for _, k := range slices.SortedFunc(maps.Keys(snap.frontends), cmpFeKey) {
		v := snap.frontends[k]
		key := fromSvcKey(sockSvcKey(k))
		e := byID[v.Owner]
		ok := e != nil && t.fes[key] == nil && v.Count <= t.limits.PerService
		local := v.Flags&feFlagLocal != 0
		if ok && local {
			switch {
			case v.Id == 0 || v.Id > t.limits.Services || byID[v.Id] != nil:
				ok = false
			case e.local == nil && localOwner[v.Id] == nil:
				e.local = &slotGroup{id: v.Id}
				localOwner[v.Id] = e
				groups[v.Id] = &e.local.slots
			case e.local == nil || e.local.id != v.Id:
				ok = false
			}
		} else if ok && (v.Id != e.id || (e.local != nil)) {
			ok = false
		}
		if !ok {
			t.log.Warn("dropping malformed pinned frontend", "frontend", key, "id", v.Id, "owner", v.Owner)
			gcFes = append(gcFes, k)
			continue
		}
		if local && uint32(len(e.local.slots)) < v.Count {
			e.local.slots = make([]uint32, v.Count)
		}
		kind := v.Flags & (feFlagNodePort | feFlagExternal | feFlagLB)
		e.fes = append(e.fes, frontend{key: key, kind: kind})
		t.fes[key] = e
		if local {
			e.svc.ExternalPolicy = PolicyLocal
		}
		switch kind {
		case feFlagNodePort:
			e.svc.NodePort = key.Port
		case feFlagExternal:
			e.svc.ExternalIPs = append(e.svc.ExternalIPs, key.Addr)
		case feFlagLB:
			e.svc.LoadBalancerIPs = append(e.svc.LoadBalancerIPs, key.Addr)
		}
	}
	filled := make(map[sockSlotKey]bool)
	for sk, bid := range snap.slots {
		g := groups[sk.Id]
		if g == nil || sk.Slot >= uint32(len(*g)) {
			gcSlots = append(gcSlots, sk)
			continue
		}
		if _, ok := snap.backends[bid]; !ok {
			// Cannot happen with ordered writes; treat the slot as missing.
			gcSlots = append(gcSlots, sk)
			continue
		}
		(*g)[sk.Slot] = bid
		filled[sk] = true
	}
	// Keep the whole prefix of each slot table; a hole (never left by ordered
	// writes) shrinks the table to it.
	whole := func(key ServiceKey, id uint32, slots []uint32) []uint32 {
		n := 0
		for n < len(slots) && filled[sockSlotKey{Id: id, Slot: uint32(n)}] {
			n++
		}
		if n < len(slots) {
			t.log.Warn("pinned slot table has a hole; shrinking", "service", key, "id", id, "count", len(slots), "whole", n)
			for i := n; i < len(slots); i++ {
				if filled[sockSlotKey{Id: id, Slot: uint32(i)}] {
					gcSlots = append(gcSlots, sockSlotKey{Id: id, Slot: uint32(i)})
				}
			}
		}
		return slots[:n]
	}
	var fixFeKeys []tcSvcKey
	var fixFeVals []tcFeVal
	for key, e := range t.svcs {
		n := len(e.slots)
		if e.slots = whole(key, e.id, e.slots); len(e.slots) < n {
			fixSvcKeys = append(fixSvcKeys, toSvcKey(key))
			fixSvcVals = append(fixSvcVals, toSvcVal(e.id, e.svc, len(e.slots)))
		}
		t.slotsUsed += len(e.slots)
		if e.local != nil {
			e.local.slots = whole(key, e.local.id, e.local.slots)
			t.slotsUsed += len(e.local.slots)
		}
		// Frontends whose count is not the table's are rewritten: a count
		// above the whole prefix would name missing slots.
		for _, f := range e.fes {
			v := toFeVal(e, f)
			if snap.frontends[toFeKey(f.key)] != v {
				fixFeKeys = append(fixFeKeys, toFeKey(f.key))
				fixFeVals = append(fixFeVals, v)
			}
		}
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
		t.bes[ap] = &beEntry{addr: ap, id: bid, refs: refs[bid], local: b.Flags&beFlagLocal != 0}
		beIDs = append(beIDs, bid)
	}
	// The services' backend lists follow slot order; a backend ID dropped above as
	// a duplicate address leaves its services with fewer usable backends, which
	// the next Sync repairs. So does a local slot naming a backend the service
	// does not have.
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
				if t.bes[ap].local {
					e.svc.LocalBackends = append(e.svc.LocalBackends, ap)
				}
			}
		}
		slices.SortFunc(e.svc.LocalBackends, netip.AddrPort.Compare)
		e.svc.LocalBackends = slices.Compact(e.svc.LocalBackends)
		if e.local != nil {
			svcIDs = append(svcIDs, e.local.id)
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
		{kind: opPutServices, svcKeys: fixSvcKeys, svcVals: fixSvcVals, feKeys: fixFeKeys, feVals: fixFeVals},
		{kind: opDeleteServices, svcKeys: gcSvcs, feKeys: gcFes},
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
	t.log.Info("adopted pinned service maps", "services", len(t.svcs), "frontends", len(t.fes),
		"backends", len(t.bes), "slots", t.slotsUsed, "removed_services", len(gcSvcs),
		"removed_frontends", len(gcFes), "removed_slots", len(gcSlots), "removed_backends", len(gcBes))
	return nil
}

func cmpFeKey(a, b tcSvcKey) int { return cmpSvcKey(sockSvcKey(a), sockSvcKey(b)) }

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
		s.ExternalIPs = slices.Clone(s.ExternalIPs)
		s.LoadBalancerIPs = slices.Clone(s.LoadBalancerIPs)
		s.LocalBackends = slices.Clone(s.LocalBackends)
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
			old.svc.HealthCheckNodePort, old.svc.Name = n.HealthCheckNodePort, n.Name
			continue
		}
		if err := t.fits(old, n); err != nil {
			errs = append(errs, err)
			continue
		}
		e := old
		if e == nil {
			// fits checked that the IDs are there.
			id, _ := t.svcIDs.alloc()
			e = &svcEntry{id: id}
			t.svcs[n.ServiceKey] = e
		}
		want := make([]uint32, len(n.Backends))
		for i, b := range n.Backends {
			be := t.bes[b]
			if be == nil {
				id, err := t.beIDs.alloc()
				if err != nil {
					// Checked in fits: cannot run out here.
					panic(fmt.Sprintf("backend IDs: %v", err))
				}
				be = &beEntry{addr: b, id: id, created: true}
				t.bes[b] = be
				touch(be)
			}
			want[i] = be.id
			if local := n.isLocal(b); local != be.local {
				be.local, be.rewrite = local, true
				touch(be)
			}
		}
		if old == nil {
			for _, b := range n.Backends {
				be := t.bes[b]
				be.refs++
				touch(be)
			}
		} else {
			oldSet := make(map[netip.AddrPort]bool, len(old.svc.Backends))
			for _, b := range old.svc.Backends {
				oldSet[b] = true
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
		}

		e.slots = t.placeSlots(&ops, e.id, e.slots, want)
		switch {
		case n.usesLocalSlots():
			if e.local == nil {
				id, _ := t.svcIDs.alloc()
				e.local = &slotGroup{id: id}
			}
			wantLocal := make([]uint32, len(n.LocalBackends))
			for i, b := range n.LocalBackends {
				wantLocal[i] = t.bes[b].id
			}
			e.local.slots = t.placeSlots(&ops, e.local.id, e.local.slots, wantLocal)
		case e.local != nil:
			t.dropGroup(&ops, e.local)
			releaseSvc = append(releaseSvc, e.local.id)
			e.local = nil
		}
		ops[opPutServices].svcKeys = append(ops[opPutServices].svcKeys, toSvcKey(n.ServiceKey))
		ops[opPutServices].svcVals = append(ops[opPutServices].svcVals, toSvcVal(e.id, n, len(e.slots)))
		e.svc = n

		fes := n.frontends()
		for _, f := range e.fes {
			if !slices.ContainsFunc(fes, func(g frontend) bool { return g.key == f.key }) {
				ops[opDeleteServices].feKeys = append(ops[opDeleteServices].feKeys, toFeKey(f.key))
				delete(t.fes, f.key)
			}
		}
		for _, f := range fes {
			ops[opPutServices].feKeys = append(ops[opPutServices].feKeys, toFeKey(f.key))
			ops[opPutServices].feVals = append(ops[opPutServices].feVals, toFeVal(e, f))
			t.fes[f.key] = e
		}
		e.fes = fes
	}

	for _, k := range deletes {
		k.Addr = k.Addr.Unmap()
		e := t.svcs[k]
		if e == nil {
			continue
		}
		for _, f := range e.fes {
			ops[opDeleteServices].feKeys = append(ops[opDeleteServices].feKeys, toFeKey(f.key))
			delete(t.fes, f.key)
		}
		ops[opDeleteServices].svcKeys = append(ops[opDeleteServices].svcKeys, toSvcKey(k))
		t.dropGroup(&ops, &slotGroup{id: e.id, slots: e.slots})
		if e.local != nil {
			t.dropGroup(&ops, e.local)
			releaseSvc = append(releaseSvc, e.local.id)
		}
		for _, b := range e.svc.Backends {
			be := t.bes[b]
			be.refs--
			touch(be)
		}
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
		case be.created || be.rewrite:
			ops[opPutBackends].beIDs = append(ops[opPutBackends].beIDs, be.id)
			ops[opPutBackends].bes = append(ops[opPutBackends].bes, toBackend(be.addr, be.local))
		}
		be.touched, be.created, be.rewrite = false, false, false
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

// fits checks that n (replacing old, if not nil) fits in the maps and that no other
// service owns its frontends.
func (t *table) fits(old *svcEntry, n Service) error {
	oldCount, ids := 0, 0
	if old != nil {
		oldCount = len(old.slots)
		if old.local != nil {
			oldCount += len(old.local.slots)
		}
	} else {
		if len(t.svcs) >= int(t.limits.Services) {
			return fmt.Errorf("service %s: the services map is full (%d)", n.ServiceKey, t.limits.Services)
		}
		ids++
	}
	newCount := len(n.Backends)
	if n.usesLocalSlots() {
		newCount += len(n.LocalBackends)
		if old == nil || old.local == nil {
			ids++
		}
	}
	if t.svcIDs.inUse()+ids > int(t.limits.Services) {
		return fmt.Errorf("service %s: all %d service IDs are in use", n.ServiceKey, t.limits.Services)
	}
	if t.slotsUsed-oldCount+newCount > int(t.limits.Slots) {
		return fmt.Errorf("service %s: the slots map is full (%d)", n.ServiceKey, t.limits.Slots)
	}
	need := 0
	for _, b := range n.Backends {
		if t.bes[b] == nil {
			need++
		}
	}
	if len(t.bes)+need > int(t.limits.Backends) {
		return fmt.Errorf("service %s: the backends map is full (%d)", n.ServiceKey, t.limits.Backends)
	}
	fes := n.frontends()
	added := 0
	for _, f := range fes {
		switch owner := t.fes[f.key]; {
		case owner == nil:
			added++
		case owner != old:
			return fmt.Errorf("service %s: frontend %s belongs to service %s", n.ServiceKey, f.key, owner.svc.ServiceKey)
		}
	}
	if len(t.fes)+added > int(t.limits.Frontends) {
		return fmt.Errorf("service %s: the frontends map is full (%d)", n.ServiceKey, t.limits.Frontends)
	}
	return nil
}

// placeSlots lays want out over the slot table id that holds old, adds the writes
// to ops and returns the new table.
func (t *table) placeSlots(ops *[numOps]op, id uint32, old, want []uint32) []uint32 {
	slots := layout(old, want)
	put := &ops[opPutSlotsGrow]
	if len(slots) < len(old) {
		put = &ops[opPutSlotsShrink]
	}
	for i, bid := range slots {
		if i < len(old) && old[i] == bid {
			continue
		}
		put.slotKeys = append(put.slotKeys, sockSlotKey{Id: id, Slot: uint32(i)})
		put.slotVals = append(put.slotVals, bid)
	}
	for i := len(slots); i < len(old); i++ {
		ops[opDeleteSlotsShrink].slotKeys = append(ops[opDeleteSlotsShrink].slotKeys, sockSlotKey{Id: id, Slot: uint32(i)})
	}
	t.slotsUsed += len(slots) - len(old)
	return slots
}

// dropGroup deletes a slot table nothing names any more (after opDeleteServices).
func (t *table) dropGroup(ops *[numOps]op, g *slotGroup) {
	for i := range g.slots {
		ops[opDeleteSlotsDeleted].slotKeys = append(ops[opDeleteSlotsDeleted].slotKeys, sockSlotKey{Id: g.id, Slot: uint32(i)})
	}
	t.slotsUsed -= len(g.slots)
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

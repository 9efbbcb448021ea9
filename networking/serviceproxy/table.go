package serviceproxy

import (
	"cmp"
	"encoding/binary"
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
	opPutMaglev // before the frontends that name the tables get FE_F_MAGLEV
	opPutServices
	opPutSlotsShrink
	opDeleteSlotsShrink
	opDeleteServices
	opDeleteSlotsDeleted
	opDeleteMaglev // after the last frontend naming a table lost FE_F_MAGLEV
	opDeleteBackends
	numOps
)

func (k opKind) String() string {
	return [...]string{"put backends", "put slots (grow)", "put maglev tables", "put services", "put slots (shrink)",
		"delete slots (shrink)", "delete services", "delete slots (deleted services)",
		"delete maglev tables", "delete backends"}[k]
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
	// Maglev tables by slot table ID: whole values, one atomic write each.
	mgIDs  []uint32
	mgVals []tcMaglevVal
}

func (o *op) len() int {
	return len(o.beIDs) + len(o.slotKeys) + len(o.svcKeys) + len(o.feKeys) + len(o.mgIDs)
}

// snapshot is the content of the maps that hold configuration.
type snapshot struct {
	services  map[sockSvcKey]sockSvcVal
	slots     map[sockSlotKey]uint32
	backends  map[uint32]sockBackend
	frontends map[tcSvcKey]tcFeVal
	maglev    map[uint32]tcMaglevVal
}

// datapath is where a table's writes go: the pinned BPF maps, or a simulation in
// tests. apply must not keep o or its slices: the table reuses them.
type datapath interface {
	apply(o *op) error
	snapshot() (*snapshot, error)
}

type svcEntry struct {
	id    uint32
	svc   Service    // normalized
	bes   []*beEntry // the entries of svc.Backends, in that order
	slots []uint32   // backend ID per slot: the IDs of bes, in slot order
	// local is the slot table of the frontends under PolicyLocal: the local
	// backends only. Its ID comes from the service IDs.
	local *slotGroup
	fes   []frontend // programmed frontends
	// mgID is the slot table whose Maglev table is programmed for the
	// frontends (which then carry feFlagMaglev); 0 for none.
	mgID uint32

	// checked says that svc is what normalize makes of it, so that a desired
	// service equal to it field by field is unchanged. Adopted entries are not
	// checked until a Sync has confirmed or reprogrammed them.
	checked bool
	// stale says that the adopted slot tables name backends that bes does not
	// hold (duplicates, or backends dropped at adoption): the next upsert
	// rewrites them even if svc is what is asked for.
	stale bool
	gen   uint64 // the last sync that listed the service

	// Most services have a handful of endpoints: their slots and bes live here,
	// without allocations of their own.
	slotBuf [4]uint32
	beBuf   [4]*beEntry
}

type slotGroup struct {
	id    uint32
	slots []uint32
}

// beKey is a backend address and port as a map key: unlike netip.AddrPort it
// holds no pointer and hashes as plain memory. An IPv4 address is in its
// IPv4-mapped form; the mirror's backends are unmapped, so that is unique.
type beKey struct {
	addr [16]byte
	port uint16
}

func keyOf(b netip.AddrPort) beKey { return beKey{b.Addr().As16(), b.Port()} }

// beEntry is a backend in the mirror. It holds no pointers, so that the
// garbage collector need not scan the chunks of them.
type beEntry struct {
	key   beKey
	is4   bool // key.addr is an IPv4 address, not an IPv4-mapped IPv6 one
	local bool // runs on this node (beFlagLocal)
	// Marks for one update, reset at its end.
	touched, created, rewrite bool
	inOld                     bool // in the old backends of the service being upserted
	id                        uint32
	refs                      int32 // services that have this backend
}

func (b *beEntry) addr() netip.AddrPort {
	a := netip.AddrFrom16(b.key.addr)
	if b.is4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, b.key.port)
}

// value is the backends map value of b.
func (b *beEntry) value() sockBackend {
	v := sockBackend{Port: portNet(b.key.port)}
	for i := range v.Addr {
		v.Addr[i] = binary.NativeEndian.Uint32(b.key.addr[4*i:])
	}
	if b.local {
		v.Flags = beFlagLocal
	}
	return v
}

// newBeEntry is the entry of ap, whose key is k.
func newBeEntry(ap netip.AddrPort, k beKey) beEntry {
	return beEntry{key: k, is4: ap.Addr().Is4()}
}

// table mirrors the programmed state in memory, turns desired changes into ordered
// map writes and keeps the mirror in step with the maps.
type table struct {
	limits Limits
	dp     datapath
	log    *slog.Logger
	maglev bool // frontends get Maglev tables (ExternalMaglev)

	svcs      map[sockSvcKey]*svcEntry // by toSvcKey of the service's key
	fes       map[ServiceKey]*svcEntry // frontend key → owner
	bes       map[beKey]*beEntry
	slotsUsed int
	svcIDs    *idAllocator
	beIDs     *idAllocator
	gen       uint64              // of the current or last sync
	dropAll   bool                // the current update removes every service
	feDropped map[ServiceKey]bool // frontends the current update deletes

	// Per-update state, reused so that an update allocates little: the batches
	// (handed to dp.apply, which must not keep them), the touched backends, the
	// IDs to release after the writes, and scratch arrays.
	ops                   [numOps]op
	touched               []*beEntry
	releaseSvc, releaseBe []uint32
	beScratch             []*beEntry
	keyScratch            []beKey
	beSlab                []netip.AddrPort // see sync
	wantScratch           []uint32
	layScratch            []uint32

	// Entries come from arenas, and removed ones are reused.
	svcArena arena[svcEntry]
	beArena  arena[beEntry]
	deadSvc  []*svcEntry // removed by this update; free once it is written
	deadBe   []*beEntry

	// The sizes the mirror's maps were made for (Go maps never shrink).
	svcsCap, besCap int
}

// Entry chunk sizes: about 20 KiB and 4 KiB.
const (
	svcChunkLen = 64
	beChunkLen  = 128
)

// arena hands out zeroed entries. A program from scratch creates an entry per
// service and per backend; taking them from chunks instead of one allocation
// each halves the allocator's share of it. Removed entries go back on a free
// list (zeroed), and when the mirror empties every chunk is zeroed and handed
// out again: the chunks hold no more entries than the mirror's peak, and a
// program after emptying writes to memory that it has written before.
type arena[T any] struct {
	chunkLen int
	chunks   [][]T
	used     int // chunks[:used] have been handed out from
	cur      []T // what is left of chunks[used-1]
	free     []*T
}

func (a *arena[T]) get() *T {
	if n := len(a.free); n > 0 {
		e := a.free[n-1]
		a.free[n-1] = nil
		a.free = a.free[:n-1]
		return e
	}
	if len(a.cur) == 0 {
		if a.used == len(a.chunks) {
			a.chunks = append(a.chunks, make([]T, a.chunkLen))
		}
		a.cur = a.chunks[a.used]
		a.used++
	}
	e := &a.cur[0]
	a.cur = a.cur[1:]
	return e
}

// put takes back an entry nothing names any more.
func (a *arena[T]) put(e *T) {
	var zero T
	*e = zero
	a.free = append(a.free, e)
}

// putAll takes back every entry: none is in use any more.
func (a *arena[T]) putAll() {
	for _, c := range a.chunks[:a.used] {
		clear(c)
	}
	a.used, a.cur = 0, nil
	clear(a.free)
	a.free = a.free[:0]
}

func (t *table) newSvc() *svcEntry { return t.svcArena.get() }
func (t *table) newBe() *beEntry   { return t.beArena.get() }

// resetEntries forgets the arenas, so that their memory goes once the entries
// in use are gone.
func (t *table) resetEntries() {
	t.svcArena = arena[svcEntry]{chunkLen: svcChunkLen}
	t.beArena = arena[beEntry]{chunkLen: beChunkLen}
	t.deadSvc, t.deadBe = nil, nil
}

// newTable adopts what dp holds: it rebuilds the mirror from the maps, keeps every
// service whose slots are whole and removes what no service can reach (slots past a
// count or of an unknown service, unreferenced backends).
func newTable(dp datapath, limits Limits, log *slog.Logger) (*table, error) {
	return newTableLB(dp, limits, ExternalRandom, log)
}

// newTableLB is newTable for frontends balanced by lb: with ExternalMaglev,
// adoption also writes the Maglev tables that are missing or wrong, and
// without it, removes them.
func newTableLB(dp datapath, limits Limits, lb ExternalLB, log *slog.Logger) (*table, error) {
	t := &table{limits: limits, dp: dp, log: log, maglev: lb == ExternalMaglev}
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
	t.resetEntries()
	t.svcs = make(map[sockSvcKey]*svcEntry, len(snap.services))
	t.fes = make(map[ServiceKey]*svcEntry, len(snap.frontends))
	t.bes = make(map[beKey]*beEntry, len(snap.backends))
	t.svcsCap, t.besCap = len(snap.services), len(snap.backends)
	t.slotsUsed = 0
	byID := make(map[uint32]*svcEntry, len(snap.services))
	// groups are the slot tables by ID: services' and local ones.
	groups := make(map[uint32]*[]uint32, len(snap.services))
	var gcSvcs []sockSvcKey
	var gcFes []tcSvcKey
	var gcSlots []sockSlotKey
	var gcBes []uint32
	var gcBeVals []sockBackend
	var fixSvcKeys []sockSvcKey
	var fixSvcVals []sockSvcVal
	// filled marks the slots found: inline ones naming a backend, and those in
	// the slots map.
	filled := make(map[sockSlotKey]bool)
	fillInline := func(id uint32, slots []uint32, inline [inlineSlots]uint32) {
		for i := range min(len(slots), inlineSlots) {
			bid := inline[i]
			if _, ok := snap.backends[bid]; ok && bid != 0 {
				slots[i] = bid
				filled[sockSlotKey{Id: id, Slot: uint32(i)}] = true
			}
		}
	}

	for _, k := range slices.SortedFunc(maps.Keys(snap.services), cmpSvcKey) {
		v := snap.services[k]
		key := fromSvcKey(k)
		if byID[v.Id] != nil || v.Id == 0 || v.Id > t.limits.Services ||
			v.Count > t.limits.PerService {
			t.log.Warn("dropping malformed pinned service", "service", key, "id", v.Id, "count", v.Count)
			gcSvcs = append(gcSvcs, k)
			continue
		}
		e := t.newSvc()
		*e = svcEntry{id: v.Id, svc: Service{ServiceKey: key}, slots: make([]uint32, v.Count)}
		if v.Flags&flagAffinity != 0 {
			e.svc.Affinity = time.Duration(v.AffinityTimeout) * time.Second
		}
		fillInline(v.Id, e.slots, v.Slots)
		byID[v.Id] = e
		groups[v.Id] = &e.slots
		t.svcs[toSvcKey(key)] = e
	}
	// A frontend names its owner; under PolicyLocal it also names the owner's
	// local slot table, whose length is the largest count found, and whose
	// inline slots are taken from the frontend with that count.
	localOwner := make(map[uint32]*svcEntry)
	localInline := make(map[uint32][inlineSlots]uint32)
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
		if _, seen := localInline[v.Id]; local && (!seen || uint32(len(e.local.slots)) < v.Count) {
			e.local.slots = make([]uint32, v.Count)
			localInline[v.Id] = v.Slots
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
	for id, inline := range localInline {
		fillInline(id, *groups[id], inline)
	}
	for sk, bid := range snap.slots {
		g := groups[sk.Id]
		if g == nil || sk.Slot >= uint32(len(*g)) || sk.Slot < inlineSlots {
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
	for _, e := range t.svcs {
		key := e.svc.ServiceKey
		n := len(e.slots)
		if e.slots = whole(key, e.id, e.slots); len(e.slots) < n {
			fixSvcKeys = append(fixSvcKeys, toSvcKey(key))
			fixSvcVals = append(fixSvcVals, toSvcVal(e.id, e.svc.Affinity, e.slots))
		}
		t.slotsUsed += len(e.slots)
		if e.local != nil {
			e.local.slots = whole(key, e.local.id, e.local.slots)
			t.slotsUsed += len(e.local.slots)
		}
	}
	refs := make(map[uint32]int32)
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
		if refs[bid] == 0 || t.bes[keyOf(ap)] != nil || bid == 0 || bid > t.limits.Backends {
			gcBes = append(gcBes, bid)
			gcBeVals = append(gcBeVals, tombstone(b))
			continue
		}
		be := t.newBe()
		*be = newBeEntry(ap, keyOf(ap))
		be.id, be.refs, be.local = bid, int32(refs[bid]), b.Flags&beFlagLocal != 0
		t.bes[keyOf(ap)] = be
		beIDs = append(beIDs, bid)
	}
	// The services' backend lists follow slot order; a backend ID dropped above as
	// a duplicate address leaves its services with fewer usable backends, which
	// the next Sync repairs (the entry is stale, so it is rewritten even when
	// its backends are what is asked for). So does a local slot naming a backend
	// the service does not have.
	beByID := make(map[uint32]*beEntry, len(t.bes))
	for _, b := range t.bes {
		beByID[b.id] = b
	}
	svcIDs := make([]uint32, 0, len(t.svcs))
	for _, e := range t.svcs {
		svcIDs = append(svcIDs, e.id)
		e.svc.Backends = make([]netip.AddrPort, 0, len(e.slots))
		e.bes = make([]*beEntry, 0, len(e.slots))
		for _, bid := range e.slots {
			be := beByID[bid]
			if be == nil {
				continue
			}
			ap := be.addr()
			if be.inOld { // a second slot naming it
				continue
			}
			be.inOld = true
			e.bes = append(e.bes, be)
			e.svc.Backends = append(e.svc.Backends, ap)
			if be.local {
				e.svc.LocalBackends = append(e.svc.LocalBackends, ap)
			}
		}
		e.stale = len(e.bes) != len(e.slots)
		if e.local != nil {
			svcIDs = append(svcIDs, e.local.id)
			for _, bid := range e.local.slots {
				if be := beByID[bid]; be == nil || !be.inOld {
					e.stale = true
				}
			}
		}
		for _, be := range e.bes {
			be.inOld = false
		}
		slices.SortFunc(e.svc.LocalBackends, netip.AddrPort.Compare)
		e.svc.LocalBackends = slices.Compact(e.svc.LocalBackends)
	}
	// Maglev tables: each entry's frontends get the table its backends make
	// (written when the pinned one differs), or none; tables no entry claims
	// go after the frontends stop naming them.
	var mgIDs, gcMg []uint32
	var mgVals []tcMaglevVal
	claimed := make(map[uint32]bool)
	for _, e := range t.svcs {
		e.mgID = 0
		if !t.maglev || len(e.fes) == 0 {
			continue
		}
		id, slots := e.id, e.slots
		if e.local != nil {
			id, slots = e.local.id, e.local.slots
		}
		// Ordered writes leave no duplicate slots; a malformed table might.
		bes := make([]*beEntry, 0, len(slots))
		for _, bid := range slots {
			if be := beByID[bid]; be != nil && !be.inOld {
				be.inOld = true
				bes = append(bes, be)
			}
		}
		for _, be := range bes {
			be.inOld = false
		}
		v, ok := maglevValue(bes)
		if !ok {
			continue
		}
		e.mgID, claimed[id] = id, true
		if old, found := snap.maglev[id]; !found || old != v {
			mgIDs, mgVals = append(mgIDs, id), append(mgVals, v)
		}
	}
	for id := range snap.maglev {
		if !claimed[id] {
			gcMg = append(gcMg, id)
		}
	}
	slices.Sort(gcMg)
	// Frontends whose value is not what the entry makes are rewritten: a
	// count above the whole prefix would name missing slots, and the Maglev
	// flag follows the tables above.
	for _, e := range t.svcs {
		for _, f := range e.fes {
			v := toFeVal(e, f)
			if snap.frontends[toFeKey(f.key)] != v {
				fixFeKeys = append(fixFeKeys, toFeKey(f.key))
				fixFeVals = append(fixFeVals, v)
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
		{kind: opPutMaglev, mgIDs: mgIDs, mgVals: mgVals},
		{kind: opPutServices, svcKeys: fixSvcKeys, svcVals: fixSvcVals, feKeys: fixFeKeys, feVals: fixFeVals},
		{kind: opDeleteServices, svcKeys: gcSvcs, feKeys: gcFes},
		{kind: opDeleteSlotsDeleted, slotKeys: gcSlots},
		{kind: opDeleteMaglev, mgIDs: gcMg},
		{kind: opDeleteBackends, beIDs: gcBes, bes: gcBeVals},
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
		"removed_frontends", len(gcFes), "removed_slots", len(gcSlots), "removed_backends", len(gcBes),
		"maglev_tables", len(claimed), "rewritten_maglev_tables", len(mgIDs), "removed_maglev_tables", len(gcMg))
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
	t.begin(len(upserts), 0)
	// The batches hold one change per service: of a service upserted more than
	// once, the last upsert counts, and a deleted one is not upserted at all.
	var last map[ServiceKey]int
	if len(upserts) > 1 || len(upserts) > 0 && len(deletes) > 0 {
		last = make(map[ServiceKey]int, len(upserts)+len(deletes))
		for i := range upserts {
			last[unmappedKey(upserts[i].ServiceKey)] = i
		}
		for _, k := range deletes {
			last[unmappedKey(k)] = -1
		}
	}
	var errs []error
	for i := range upserts {
		u := &upserts[i]
		k := unmappedKey(u.ServiceKey)
		if last != nil && last[k] != i {
			continue
		}
		sk := toSvcKey(k)
		if _, err := t.upsert(u, sk, t.svcs[sk]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, k := range deletes {
		if e := t.svcs[toSvcKey(k)]; e != nil {
			t.remove(e)
		}
	}
	return t.commit(errs)
}

// sync makes the programmed services equal desired: services not in it are removed.
func (t *table) sync(desired []Service) error {
	// An empty mirror is sized for what it is about to hold, which spares a
	// program from scratch the map growth; Go maps never shrink, so maps made
	// for as much already are kept.
	if len(t.svcs) == 0 {
		nbes := 0
		for i := range desired {
			nbes += len(desired[i].Backends)
		}
		nbes = min(nbes, int(t.limits.Backends))
		if nsvcs := min(len(desired), int(t.limits.Services)); nsvcs > t.svcsCap || nbes > t.besCap {
			t.svcs = make(map[sockSvcKey]*svcEntry, nsvcs)
			t.bes = make(map[beKey]*beEntry, nbes)
			t.svcsCap, t.besCap = nsvcs, nbes
		}
		t.begin(len(desired), nbes)
		// One array for the backend lists of a program from scratch; the
		// services share it until they change.
		t.beSlab = make([]netip.AddrPort, nbes)
	} else {
		t.begin(len(desired), 0)
	}
	// Services listed in this sync carry its generation; the rest are deleted.
	t.gen++
	var errs []error
	var failedNew map[sockSvcKey]bool // listed, invalid and not programmed before
	listed := 0                       // entries in the mirror with this generation
	for i := range desired {
		u := &desired[i]
		k := toSvcKey(u.ServiceKey)
		old := t.svcs[k]
		if (old != nil && old.gen == t.gen) || failedNew[k] {
			errs = append(errs, refused(u.ServiceKey, RefusedInvalid, fmt.Errorf("service %s: listed twice", unmappedKey(u.ServiceKey))))
			continue
		}
		if old != nil {
			old.gen = t.gen
		}
		e, err := t.upsert(u, k, old)
		if err != nil {
			errs = append(errs, err)
		}
		switch {
		case e != nil:
			e.gen = t.gen
			listed++
		case failedNew == nil:
			failedNew = map[sockSvcKey]bool{k: true}
		default:
			failedNew[k] = true
		}
	}
	// When every service in the mirror was listed, there is nothing to delete.
	var dels []*svcEntry
	if listed < len(t.svcs) {
		for _, e := range t.svcs {
			if e.gen != t.gen {
				dels = append(dels, e)
			}
		}
	}
	// Removing every service empties the mirror, which commit then replaces
	// whole: the entries need not leave its maps one by one.
	t.dropAll = len(dels) > 0 && len(dels) == len(t.svcs)
	for _, e := range byID(dels, t.svcIDs.next) {
		t.remove(e)
	}
	t.beSlab = nil
	return t.commit(errs)
}

// byID sorts entries (IDs below max) by ID, so that the batches and the free list
// are deterministic. IDs are dense: many entries are placed by ID in linear time.
func byID(es []*svcEntry, max uint32) []*svcEntry {
	if len(es) < 256 {
		slices.SortFunc(es, func(a, b *svcEntry) int { return cmp.Compare(a.id, b.id) })
		return es
	}
	at := make([]*svcEntry, max)
	for _, e := range es {
		at[e.id] = e
	}
	es = es[:0]
	for _, e := range at {
		if e != nil {
			es = append(es, e)
		}
	}
	return es
}

func unmappedKey(k ServiceKey) ServiceKey {
	k.Addr = k.Addr.Unmap()
	return k
}

// begin starts an update: the batches are emptied (their arrays are reused) and
// grown for about services upserts and backends new backends.
func (t *table) begin(services, backends int) {
	for i := range t.ops {
		o := &t.ops[i]
		*o = op{kind: opKind(i), beIDs: o.beIDs[:0], bes: o.bes[:0], slotKeys: o.slotKeys[:0], slotVals: o.slotVals[:0],
			svcKeys: o.svcKeys[:0], svcVals: o.svcVals[:0], feKeys: o.feKeys[:0], feVals: o.feVals[:0],
			mgIDs: o.mgIDs[:0], mgVals: o.mgVals[:0]}
	}
	ps := &t.ops[opPutServices]
	ps.svcKeys, ps.svcVals = slices.Grow(ps.svcKeys, services), slices.Grow(ps.svcVals, services)
	if backends > 0 {
		// Slots go to the slots map only past the inline ones: few, as a rule.
		pb := &t.ops[opPutBackends]
		pb.beIDs, pb.bes = slices.Grow(pb.beIDs, backends), slices.Grow(pb.bes, backends)
	}
}

func (t *table) touch(be *beEntry) {
	if !be.touched {
		be.touched = true
		t.touched = append(t.touched, be)
	}
}

// upsert adds the writes that program u to the batches; key is toSvcKey of u's
// key and old the mirror's entry for it, if any. It returns the entry for u's key
// afterwards (nil if there is none).
func (t *table) upsert(u *Service, key sockSvcKey, old *svcEntry) (*svcEntry, error) {
	// The common case of a resync: what is asked is, field by field, what was
	// last programmed, so it is already normalized and unchanged.
	if old != nil && old.checked && sameAsMirror(&old.svc, u) {
		old.svc.HealthCheckNodePort, old.svc.Name = u.HealthCheckNodePort, u.Name
		return old, nil
	}
	n := *u
	var buf []netip.AddrPort
	if len(t.beSlab) >= len(u.Backends) {
		buf, t.beSlab = t.beSlab[:0:len(u.Backends)], t.beSlab[len(u.Backends):]
	}
	if err := n.normalizeInPlace(t.limits.PerService, buf); err != nil {
		return old, refused(u.ServiceKey, RefusedInvalid, err)
	}
	if old != nil && !old.stale && sameState(&old.svc, &n) {
		if !slices.Equal(old.svc.Backends, n.Backends) {
			// Keep the order asked for, so that the next resync takes the
			// shortcut above.
			for i, b := range n.Backends {
				old.bes[i] = t.bes[keyOf(b)]
			}
			old.svc.Backends = n.Backends
		}
		old.svc.HealthCheckNodePort, old.svc.Name = n.HealthCheckNodePort, n.Name
		old.checked = true
		return old, nil
	}

	// Each backend is looked up once; new ones are nil until created below.
	bes, keys := t.beScratch[:0], t.keyScratch[:0]
	need := 0
	for _, b := range n.Backends {
		k := keyOf(b)
		be := t.bes[k]
		if be == nil {
			need++
		}
		bes, keys = append(bes, be), append(keys, k)
	}
	t.beScratch, t.keyScratch = bes, keys
	useLocal := n.usesLocalSlots()
	if err := t.fits(old, &n, need, useLocal); err != nil {
		return old, err
	}
	e := old
	if e == nil {
		// fits checked that the IDs are there.
		id, _ := t.svcIDs.alloc()
		e = t.newSvc()
		e.id = id
		t.svcs[key] = e
	}
	for i, b := range n.Backends {
		be := bes[i]
		if be == nil {
			id, err := t.beIDs.alloc()
			if err != nil {
				// Checked in fits: cannot run out here.
				panic(fmt.Sprintf("backend IDs: %v", err))
			}
			be = t.newBe()
			*be = newBeEntry(b, keys[i])
			be.id, be.created = id, true
			t.bes[be.key] = be
			bes[i] = be
			t.touch(be)
		}
		if local := len(n.LocalBackends) > 0 && n.isLocal(b); local != be.local {
			be.local, be.rewrite = local, true
			t.touch(be)
		}
	}
	// References: +1 for a backend the service gains, -1 for one it loses.
	if old != nil {
		for _, be := range old.bes {
			be.inOld = true
		}
	}
	for _, be := range bes {
		if be.inOld {
			be.inOld = false
		} else {
			be.refs++
			t.touch(be)
		}
	}
	if old != nil {
		for _, be := range old.bes {
			if be.inOld {
				be.inOld = false
				be.refs--
				t.touch(be)
			}
		}
	}
	e.bes = append(ownedBuf(e.beBuf[:0], len(bes)), bes...)

	want := t.wantScratch[:0]
	for _, be := range bes {
		want = append(want, be.id)
	}
	t.wantScratch = want
	e.slots = t.placeSlots(e.id, e.slots, want, e.slotBuf[:0])
	switch {
	case useLocal:
		if e.local == nil {
			id, _ := t.svcIDs.alloc()
			e.local = &slotGroup{id: id}
		}
		want = want[:0]
		for _, b := range n.LocalBackends {
			want = append(want, t.bes[keyOf(b)].id)
		}
		e.local.slots = t.placeSlots(e.local.id, e.local.slots, want, nil)
	case e.local != nil:
		t.dropGroup(e.local)
		t.releaseSvc = append(t.releaseSvc, e.local.id)
		e.local = nil
	}
	t.placeMaglev(e, &n, useLocal)
	ps := &t.ops[opPutServices]
	ps.svcKeys = append(ps.svcKeys, key)
	ps.svcVals = append(ps.svcVals, toSvcVal(e.id, n.Affinity, e.slots))
	e.svc = n
	e.checked, e.stale = true, false

	if len(e.fes) == 0 && n.NodePort == 0 && len(n.ExternalIPs) == 0 && len(n.LoadBalancerIPs) == 0 {
		return e, nil
	}
	fes := n.frontends()
	for _, f := range e.fes {
		if !slices.ContainsFunc(fes, func(g frontend) bool { return g.key == f.key }) {
			// A dropped frontend is deleted with the deleted services, after
			// the service's slot table may have shrunk: until then it names
			// the table as it is now.
			ps.feKeys = append(ps.feKeys, toFeKey(f.key))
			ps.feVals = append(ps.feVals, toFeVal(e, f))
			ds := &t.ops[opDeleteServices]
			ds.feKeys = append(ds.feKeys, toFeKey(f.key))
			delete(t.fes, f.key)
			if t.feDropped == nil {
				t.feDropped = map[ServiceKey]bool{}
			}
			t.feDropped[f.key] = true
		}
	}
	for _, f := range fes {
		k := toFeKey(f.key)
		if t.feDropped[f.key] {
			// Another service dropped it in this update: not deleted after all.
			ds := &t.ops[opDeleteServices]
			ds.feKeys = slices.DeleteFunc(ds.feKeys, func(x tcSvcKey) bool { return x == k })
			delete(t.feDropped, f.key)
		}
		ps.feKeys = append(ps.feKeys, k)
		ps.feVals = append(ps.feVals, toFeVal(e, f))
		t.fes[f.key] = e
	}
	e.fes = fes
	return e, nil
}

// ownedBuf returns buf emptied when it holds n elements, else a new slice for n:
// the entry's inline array serves small services without an allocation.
func ownedBuf[T any](buf []T, n int) []T {
	if n <= cap(buf) {
		return buf[:0]
	}
	return make([]T, 0, n)
}

// sameAsMirror reports whether u, as given, equals m, a normalized service: then
// normalizing u would give m again.
func sameAsMirror(m, u *Service) bool {
	return u.ServiceKey == m.ServiceKey && u.Affinity == m.Affinity && u.NodePort == m.NodePort &&
		u.ExternalPolicy == m.ExternalPolicy && slices.Equal(u.Backends, m.Backends) &&
		slices.Equal(u.ExternalIPs, m.ExternalIPs) && slices.Equal(u.LoadBalancerIPs, m.LoadBalancerIPs) &&
		slices.Equal(u.LocalBackends, m.LocalBackends)
}

// sameState is equalService without its copies: a and b are normalized, so their
// backends are free of duplicates and equal lengths make containment equality.
func sameState(a, b *Service) bool {
	if len(a.Backends) != len(b.Backends) {
		return false
	}
	if !slices.Equal(a.Backends, b.Backends) {
		if len(a.Backends) > 32 {
			return equalService(*a, *b)
		}
		for _, x := range a.Backends {
			if !slices.Contains(b.Backends, x) {
				return false
			}
		}
	}
	x, y := *a, *b
	x.Backends, y.Backends = nil, nil
	return equalService(x, y)
}

// remove adds the writes that delete e's service to the batches.
func (t *table) remove(e *svcEntry) {
	ds := &t.ops[opDeleteServices]
	for _, f := range e.fes {
		ds.feKeys = append(ds.feKeys, toFeKey(f.key))
		if !t.dropAll {
			delete(t.fes, f.key)
		}
	}
	ds.svcKeys = append(ds.svcKeys, toSvcKey(e.svc.ServiceKey))
	if e.mgID != 0 {
		dm := &t.ops[opDeleteMaglev]
		dm.mgIDs = append(dm.mgIDs, e.mgID)
	}
	t.dropGroup(&slotGroup{id: e.id, slots: e.slots})
	if e.local != nil {
		t.dropGroup(e.local)
		t.releaseSvc = append(t.releaseSvc, e.local.id)
	}
	for _, be := range e.bes {
		be.refs--
		t.touch(be)
	}
	t.releaseSvc = append(t.releaseSvc, e.id)
	if t.dropAll {
		return
	}
	delete(t.svcs, toSvcKey(e.svc.ServiceKey))
	t.deadSvc = append(t.deadSvc, e)
}

// commit settles the backends the update touched, writes the batches in order and
// frees the IDs nothing names any more. errs are the services' own errors.
func (t *table) commit(errs []error) error {
	pb, db := &t.ops[opPutBackends], &t.ops[opDeleteBackends]
	for _, be := range t.touched {
		switch {
		case be.refs == 0:
			if be.created {
				// Created and dropped again by this update (a service
				// upserted twice, or upserted and deleted): slots written
				// before the drop name it, so it is written too.
				pb.beIDs = append(pb.beIDs, be.id)
				pb.bes = append(pb.bes, be.value())
			}
			db.beIDs = append(db.beIDs, be.id)
			db.bes = append(db.bes, tombstone(be.value()))
			t.releaseBe = append(t.releaseBe, be.id)
			if !t.dropAll {
				delete(t.bes, be.key)
				t.deadBe = append(t.deadBe, be)
			}
		case be.created || be.rewrite:
			pb.beIDs = append(pb.beIDs, be.id)
			pb.bes = append(pb.bes, be.value())
		}
		be.touched, be.created, be.rewrite = false, false, false
	}
	clear(t.touched)
	t.touched = t.touched[:0]
	clear(t.beScratch[:cap(t.beScratch)]) // keep no entries alive from scratch
	releaseSvc, releaseBe := t.releaseSvc, t.releaseBe
	t.releaseSvc, t.releaseBe = releaseSvc[:0], releaseBe[:0]
	dropAll := t.dropAll
	t.dropAll = false
	t.feDropped = nil

	for i := range t.ops {
		if t.ops[i].len() == 0 {
			continue
		}
		if err := t.dp.apply(&t.ops[i]); err != nil {
			err = fmt.Errorf("%s: %w", t.ops[i].kind, err)
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
	if dropAll || len(t.svcs) == 0 && len(t.bes) == 0 && len(t.fes) == 0 {
		// An emptied mirror keeps its memory, as its maps would anyway, for
		// the next program: all of its entries are free.
		clear(t.svcs)
		clear(t.bes)
		clear(t.fes)
		t.svcArena.putAll()
		t.beArena.putAll()
		clear(t.deadSvc)
		clear(t.deadBe)
		t.deadSvc, t.deadBe = t.deadSvc[:0], t.deadBe[:0]
		return errors.Join(errs...)
	}
	// Nothing names the removed entries any more.
	for _, e := range t.deadSvc {
		t.svcArena.put(e)
	}
	for _, be := range t.deadBe {
		t.beArena.put(be)
	}
	clear(t.deadSvc)
	clear(t.deadBe)
	t.deadSvc, t.deadBe = t.deadSvc[:0], t.deadBe[:0]
	return errors.Join(errs...)
}

// fits checks that n (replacing old, if not nil) fits in the maps and that no other
// service owns its frontends; need is the number of its backends not in the maps,
// useLocal whether its frontends use a local slot table.
func (t *table) fits(old *svcEntry, n *Service, need int, useLocal bool) error {
	oldCount, ids := 0, 0
	if old != nil {
		oldCount = len(old.slots)
		if old.local != nil {
			oldCount += len(old.local.slots)
		}
	} else {
		if len(t.svcs) >= int(t.limits.Services) {
			return refused(n.ServiceKey, RefusedFull, fmt.Errorf("service %s: the services map is full (%d)", n.ServiceKey, t.limits.Services))
		}
		ids++
	}
	newCount := len(n.Backends)
	if useLocal {
		newCount += len(n.LocalBackends)
		if old == nil || old.local == nil {
			ids++
		}
	}
	if t.svcIDs.inUse()+ids > int(t.limits.Services) {
		return refused(n.ServiceKey, RefusedFull, fmt.Errorf("service %s: all %d service IDs are in use", n.ServiceKey, t.limits.Services))
	}
	if t.slotsUsed-oldCount+newCount > int(t.limits.Slots) {
		return refused(n.ServiceKey, RefusedFull, fmt.Errorf("service %s: the slots map is full (%d)", n.ServiceKey, t.limits.Slots))
	}
	if len(t.bes)+need > int(t.limits.Backends) {
		return refused(n.ServiceKey, RefusedFull, fmt.Errorf("service %s: the backends map is full (%d)", n.ServiceKey, t.limits.Backends))
	}
	if n.NodePort == 0 && len(n.ExternalIPs) == 0 && len(n.LoadBalancerIPs) == 0 {
		return nil
	}
	added := 0
	for _, f := range n.frontends() {
		switch owner := t.fes[f.key]; {
		case owner == nil:
			added++
		case owner != old:
			return refused(n.ServiceKey, RefusedConflict, fmt.Errorf("service %s: frontend %s belongs to service %s", n.ServiceKey, f.key, owner.svc.ServiceKey))
		}
	}
	if len(t.fes)+added > int(t.limits.Frontends) {
		return refused(n.ServiceKey, RefusedFull, fmt.Errorf("service %s: the frontends map is full (%d)", n.ServiceKey, t.limits.Frontends))
	}
	return nil
}

// placeSlots lays want out over the slot table id that holds old, adds the writes
// to the batches and returns the new table, in buf's array when it fits there.
// want may be scratch memory; the result never is.
func (t *table) placeSlots(id uint32, old, want, buf []uint32) []uint32 {
	slots := want
	if len(old) > 0 {
		t.layScratch = layoutInto(t.layScratch, old, want)
		slots = t.layScratch
	}
	put := &t.ops[opPutSlotsGrow]
	if len(slots) < len(old) {
		put = &t.ops[opPutSlotsShrink]
	}
	// The first slots go with the value naming the table, written anyway.
	for i := inlineSlots; i < len(slots); i++ {
		bid := slots[i]
		if i < len(old) && old[i] == bid {
			continue
		}
		put.slotKeys = append(put.slotKeys, sockSlotKey{Id: id, Slot: uint32(i)})
		put.slotVals = append(put.slotVals, bid)
	}
	del := &t.ops[opDeleteSlotsShrink]
	for i := max(len(slots), inlineSlots); i < len(old); i++ {
		del.slotKeys = append(del.slotKeys, sockSlotKey{Id: id, Slot: uint32(i)})
	}
	t.slotsUsed += len(slots) - len(old)
	return append(ownedBuf(buf, len(slots)), slots...)
}

// placeMaglev writes the Maglev table of the frontends of e, whose service
// becomes n (e's slot tables and bes are n's already), when the table balances
// with Maglev and they have backends, and deletes the table they had when it
// is another one or none. The table goes before the frontends that name it,
// and an old one after the last frontend stops naming it.
func (t *table) placeMaglev(e *svcEntry, n *Service, useLocal bool) {
	if !t.maglev && e.mgID == 0 {
		return // the common case: not a 4 KiB zero table per service
	}
	var id uint32
	var v tcMaglevVal
	if t.maglev && (n.NodePort != 0 || len(n.ExternalIPs) > 0 || len(n.LoadBalancerIPs) > 0) {
		bes := e.bes
		id = e.id
		if useLocal {
			id, bes = e.local.id, make([]*beEntry, 0, len(n.LocalBackends))
			for _, b := range n.LocalBackends {
				bes = append(bes, t.bes[keyOf(b)])
			}
		}
		var ok bool
		if v, ok = maglevValue(bes); !ok {
			id = 0
		}
	}
	dm := &t.ops[opDeleteMaglev]
	if e.mgID != 0 && e.mgID != id {
		dm.mgIDs = append(dm.mgIDs, e.mgID)
	}
	if id != 0 {
		// Deleted earlier in this update (the service upserted twice):
		// not deleted after all.
		if len(dm.mgIDs) > 0 {
			dm.mgIDs = slices.DeleteFunc(dm.mgIDs, func(x uint32) bool { return x == id })
		}
		pm := &t.ops[opPutMaglev]
		pm.mgIDs, pm.mgVals = append(pm.mgIDs, id), append(pm.mgVals, v)
	}
	e.mgID = id
}

// dropGroup deletes a slot table nothing names any more (after opDeleteServices).
func (t *table) dropGroup(g *slotGroup) {
	del := &t.ops[opDeleteSlotsDeleted]
	for i := inlineSlots; i < len(g.slots); i++ {
		del.slotKeys = append(del.slotKeys, sockSlotKey{Id: g.id, Slot: uint32(i)})
	}
	t.slotsUsed -= len(g.slots)
}

// layout places want (backend IDs) in slots: a backend keeps the slot it had when
// that slot still exists, so a change rewrites as few slots as it can, and clients
// with affinity to an unaffected backend keep it. The others fill the free slots
// in the order given.
func layout(old, want []uint32) []uint32 { return layoutInto(nil, old, want) }

// layoutInto is layout with the result in res's array. Slot tables are short as a
// rule: up to smallLayout backends, linear searches beat building maps.
func layoutInto(res, old, want []uint32) []uint32 {
	const smallLayout = 16
	n := len(want)
	res = slices.Grow(res[:0], n)[:n]
	clear(res) // 0 is no backend ID: a free slot
	if n <= smallLayout {
		for i, id := range old {
			if i < n && id != 0 && slices.Contains(want, id) && !slices.Contains(res[:i], id) {
				res[i] = id
			}
		}
		j := 0
		for _, id := range want {
			if slices.Contains(res, id) {
				continue
			}
			for res[j] != 0 {
				j++
			}
			res[j] = id
		}
		return res
	}
	wanted := make(map[uint32]bool, n)
	for _, id := range want {
		wanted[id] = true
	}
	placed := make(map[uint32]bool, n)
	for i, id := range old {
		if i < n && id != 0 && wanted[id] && !placed[id] {
			res[i], placed[id] = id, true
		}
	}
	j := 0
	for _, id := range want {
		if placed[id] {
			continue
		}
		for res[j] != 0 {
			j++
		}
		res[j], placed[id] = id, true
	}
	return res
}

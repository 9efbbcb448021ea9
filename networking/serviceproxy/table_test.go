package serviceproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fakeDP simulates the three configuration maps. It applies a batch one element at
// a time, as the kernel does, and after every element checks what the BPF program
// relies on: every slot below a service's count exists and names a backend.
type fakeDP struct {
	t      *testing.T
	s      snapshot
	calls  int
	failAt int // fail the call with this number (1-based); 0 never
	kinds  []opKind
	lb     ExternalLB // what services() adopts the maps with
}

func newFakeDP(t *testing.T) *fakeDP {
	return &fakeDP{t: t, s: snapshot{
		services:  map[sockSvcKey]sockSvcVal{},
		slots:     map[sockSlotKey]uint32{},
		backends:  map[uint32]sockBackend{},
		frontends: map[tcSvcKey]tcFeVal{},
		maglev:    map[uint32]tcMaglevVal{},
	}}
}

var errInjected = errors.New("injected failure")

func (f *fakeDP) apply(o *op) error {
	f.calls++
	if f.calls == f.failAt {
		return errInjected
	}
	f.kinds = append(f.kinds, o.kind)
	del := func(ok bool, what string, k any) {
		if !ok {
			f.t.Errorf("%s: deleting %s %+v, which is not there", o.kind, what, k)
		}
	}
	switch o.kind {
	case opPutBackends:
		for i, k := range o.beIDs {
			f.s.backends[k] = o.bes[i]
			f.check(o.kind)
		}
	case opPutSlotsGrow, opPutSlotsShrink:
		for i, k := range o.slotKeys {
			f.s.slots[k] = o.slotVals[i]
			f.check(o.kind)
		}
	case opPutServices:
		for i, k := range o.svcKeys {
			f.s.services[k] = o.svcVals[i]
			f.check(o.kind)
		}
		for i, k := range o.feKeys {
			f.s.frontends[k] = o.feVals[i]
			f.check(o.kind)
		}
	case opDeleteSlotsShrink, opDeleteSlotsDeleted:
		for _, k := range o.slotKeys {
			_, ok := f.s.slots[k]
			del(ok, "slot", k)
			delete(f.s.slots, k)
			f.check(o.kind)
		}
	case opDeleteServices:
		for _, k := range o.feKeys {
			_, ok := f.s.frontends[k]
			del(ok, "frontend", k)
			delete(f.s.frontends, k)
			f.check(o.kind)
		}
		for _, k := range o.svcKeys {
			_, ok := f.s.services[k]
			del(ok, "service", k)
			delete(f.s.services, k)
			f.check(o.kind)
		}
	case opPutMaglev:
		for i, k := range o.mgIDs {
			for j, bid := range o.mgVals[i].Backends {
				if _, ok := f.s.backends[bid]; !ok {
					f.t.Errorf("%s: maglev table %d entry %d names missing backend %d", o.kind, k, j, bid)
					break
				}
			}
			f.s.maglev[k] = o.mgVals[i]
			f.check(o.kind)
		}
	case opDeleteMaglev:
		for _, k := range o.mgIDs {
			_, ok := f.s.maglev[k]
			del(ok, "maglev table", k)
			delete(f.s.maglev, k)
			f.check(o.kind)
		}
	case opDeleteBackends:
		named := map[uint32]uint32{} // backend → a maglev table naming it
		for id, v := range f.s.maglev {
			for _, bid := range v.Backends {
				named[bid] = id
			}
		}
		for _, k := range o.beIDs {
			if id, ok := named[k]; ok {
				f.t.Errorf("%s: deleting backend %d, which maglev table %d names", o.kind, k, id)
			}
			_, ok := f.s.backends[k]
			del(ok, "backend", k)
			delete(f.s.backends, k)
			f.check(o.kind)
		}
	}
	return nil
}

func (f *fakeDP) check(during opKind) {
	f.t.Helper()
	table := func(what string, id, count uint32, inline [inlineSlots]uint32) {
		f.t.Helper()
		for i := range count {
			bid, ok := f.s.slots[sockSlotKey{Id: id, Slot: i}]
			if i < inlineSlots { // the program does not look in the map
				bid, ok = inline[i], inline[i] != 0
			}
			if !ok {
				f.t.Errorf("during %s: %s count %d but slot %d missing", during, what, count, i)
				continue
			}
			if _, ok := f.s.backends[bid]; !ok {
				f.t.Errorf("during %s: %s slot %d names missing backend %d", during, what, i, bid)
			}
		}
	}
	for k, v := range f.s.services {
		table("service "+fromSvcKey(k).String(), v.Id, v.Count, v.Slots)
	}
	for k, v := range f.s.frontends {
		table("frontend "+fromSvcKey(sockSvcKey(k)).String(), v.Id, v.Count, v.Slots)
		if _, ok := f.s.maglev[v.Id]; v.Flags&feFlagMaglev != 0 && !ok {
			f.t.Errorf("during %s: frontend %s has the maglev flag but table %d has no maglev table", during, fromSvcKey(sockSvcKey(k)), v.Id)
		}
	}
}

// slot is the backend ID in slot i of table id, whose inline slots are inline.
func (f *fakeDP) slot(id, i uint32, inline [inlineSlots]uint32) uint32 {
	if i < inlineSlots {
		return inline[i]
	}
	return f.s.slots[sockSlotKey{Id: id, Slot: i}]
}

func (f *fakeDP) snapshot() (*snapshot, error) {
	return &snapshot{services: maps.Clone(f.s.services), slots: maps.Clone(f.s.slots), backends: maps.Clone(f.s.backends),
		frontends: maps.Clone(f.s.frontends), maglev: maps.Clone(f.s.maglev)}, nil
}

// datapathServices reads the services back out of the simulated maps.
func (f *fakeDP) services(t *testing.T) []Service {
	t.Helper()
	// Adopting a consistent state writes nothing: the copy fails on a write.
	tab, err := newTableLB(&fakeDP{t: t, s: f.s, failAt: 1}, DefaultLimits, f.lb, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	return tab.services()
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func svc(vip string, proto Proto, backends ...string) Service {
	s := Service{ServiceKey: ServiceKey{Addr: ap(vip).Addr(), Port: ap(vip).Port(), Proto: proto}}
	for _, b := range backends {
		s.Backends = append(s.Backends, ap(b))
	}
	return s
}

// cmpServices compares services with backends in any (slot) order.
var cmpServices = cmp.Options{
	cmpopts.SortSlices(func(a, b netip.AddrPort) bool { return a.Compare(b) < 0 }),
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

func newTestTable(t *testing.T, limits Limits) (*table, *fakeDP) {
	t.Helper()
	f := newFakeDP(t)
	tab, err := newTable(f, limits.withDefaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("newTable: %v", err)
	}
	return tab, f
}

func TestSyncSequence(t *testing.T) {
	a4 := svc("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080")
	a4grown := svc("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080")
	a4shrunk := svc("10.96.0.1:80", TCP, "10.0.0.4:8080")
	a4empty := svc("10.96.0.1:80", TCP)
	a4aff := a4grown
	a4aff.Affinity = 3 * time.Hour
	b4 := svc("10.96.0.2:53", UDP, "10.0.0.1:8080", "10.0.0.9:53") // shares a backend with a4
	c6 := svc("[fd00::1]:443", TCP, "[fd01::1]:8443", "[fd01::2]:8443")
	mapped := svc("[::ffff:10.96.0.3]:80", TCP, "[::ffff:10.0.0.5]:80")
	mappedWant := svc("10.96.0.3:80", TCP, "10.0.0.5:80")

	tab, f := newTestTable(t, Limits{})
	steps := []struct {
		name    string
		desired []Service
		want    []Service
	}{
		{"create", []Service{a4, b4, c6, mapped}, []Service{a4, b4, c6, mappedWant}},
		{"grow", []Service{a4grown, b4, c6, mappedWant}, []Service{a4grown, b4, c6, mappedWant}},
		{"affinity", []Service{a4aff, b4, c6, mappedWant}, []Service{a4aff, b4, c6, mappedWant}},
		{"shrink and delete", []Service{a4shrunk, c6}, []Service{a4shrunk, c6}},
		{"no endpoints", []Service{a4empty, c6}, []Service{a4empty, c6}},
		{"refill", []Service{a4, c6}, []Service{a4, c6}},
		{"delete all", nil, nil},
	}
	for _, st := range steps {
		if err := tab.sync(st.desired); err != nil {
			t.Fatalf("%s: sync: %v", st.name, err)
		}
		slices.SortFunc(st.want, func(a, b Service) int { return a.ServiceKey.compare(b.ServiceKey) })
		if diff := cmp.Diff(st.want, tab.services(), cmpServices); diff != "" {
			t.Errorf("%s: mirror (-want +got):\n%s", st.name, diff)
		}
		if diff := cmp.Diff(st.want, f.services(t), cmpServices); diff != "" {
			t.Errorf("%s: maps (-want +got):\n%s", st.name, diff)
		}
	}
	if len(f.s.services)+len(f.s.slots)+len(f.s.backends) != 0 {
		t.Errorf("maps not empty after deleting everything: %+v", f.s)
	}
}

func TestOrdering(t *testing.T) {
	// Six backends: slots 0-3 are inline in the service's value, 4 and 5 in
	// the slots map.
	be := func(n ...int) []string {
		var out []string
		for _, i := range n {
			out = append(out, fmt.Sprintf("10.0.0.%d:80", i))
		}
		return out
	}
	base := svc("10.96.0.1:80", TCP, be(1, 2, 3, 4, 5, 6)...)
	tests := []struct {
		name string
		to   []Service
		want []opKind
	}{
		{"grow: backends, slots, then count", []Service{svc("10.96.0.1:80", TCP, be(1, 2, 3, 4, 5, 6, 7)...)},
			[]opKind{opPutBackends, opPutSlotsGrow, opPutServices}},
		{"shrink: count, slots, then backends", []Service{svc("10.96.0.1:80", TCP, be(1, 2, 3, 4, 6)...)},
			[]opKind{opPutServices, opPutSlotsShrink, opDeleteSlotsShrink, opDeleteBackends}},
		{"shrink without moving slots", []Service{svc("10.96.0.1:80", TCP, be(1, 2, 3, 4, 5)...)},
			[]opKind{opPutServices, opDeleteSlotsShrink, opDeleteBackends}},
		{"shrink to inline slots", []Service{svc("10.96.0.1:80", TCP, be(1, 2)...)},
			[]opKind{opPutServices, opDeleteSlotsShrink, opDeleteBackends}},
		{"replace a backend", []Service{svc("10.96.0.1:80", TCP, be(1, 2, 3, 4, 5, 7)...)},
			[]opKind{opPutBackends, opPutSlotsGrow, opPutServices, opDeleteBackends}},
		{"replace an inline backend: with the count", []Service{svc("10.96.0.1:80", TCP, be(7, 2, 3, 4, 5, 6)...)},
			[]opKind{opPutBackends, opPutServices, opDeleteBackends}},
		{"delete: service, slots, then backends", nil,
			[]opKind{opDeleteServices, opDeleteSlotsDeleted, opDeleteBackends}},
		{"unchanged", []Service{svc("10.96.0.1:80", TCP, be(2, 1, 3, 4, 6, 5)...)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, f := newTestTable(t, Limits{})
			if err := tab.sync([]Service{base}); err != nil {
				t.Fatal(err)
			}
			f.kinds = nil
			if err := tab.sync(tt.to); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, f.kinds); diff != "" {
				t.Errorf("batches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStableIDs(t *testing.T) {
	tab, _ := newTestTable(t, Limits{})
	a, b, c := svc("10.96.0.1:80", TCP, "10.0.0.1:80"), svc("10.96.0.2:80", TCP, "10.0.0.1:80"), svc("10.96.0.3:80", TCP)
	if err := tab.sync([]Service{a, b, c}); err != nil {
		t.Fatal(err)
	}
	ids := func() map[string]uint32 {
		m := map[string]uint32{}
		for k, e := range tab.svcs {
			m[fromSvcKey(k).String()] = e.id
		}
		return m
	}
	first := ids()
	a.Backends = append(a.Backends, ap("10.0.0.2:80"))
	if err := tab.sync([]Service{a, c}); err != nil { // b deleted, a changed
		t.Fatal(err)
	}
	d := svc("10.96.0.4:80", TCP, "10.0.0.3:80")
	if err := tab.sync([]Service{a, c, d}); err != nil {
		t.Fatal(err)
	}
	got := ids()
	want := map[string]uint32{
		a.ServiceKey.String(): first[a.ServiceKey.String()],
		c.ServiceKey.String(): first[c.ServiceKey.String()],
		d.ServiceKey.String(): first[b.ServiceKey.String()], // b's ID, from the free list
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("service IDs (-want +got):\n%s", diff)
	}
}

func TestBadServicesKeepLastGoodState(t *testing.T) {
	good := svc("10.96.0.1:80", TCP, "10.0.0.1:80")
	other := svc("10.96.0.2:80", TCP, "10.0.0.2:80")
	tests := []struct {
		name    string
		limits  Limits
		bad     Service
		wantErr string
		reason  Refusal
	}{
		{"too many backends", Limits{PerService: 2}, svc("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), "more than the 2 a slot table holds", RefusedInvalid},
		{"slots map full", Limits{Slots: 3}, svc("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), "slots map is full", RefusedFull},
		{"backends map full", Limits{Backends: 2}, svc("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.7:80"), "backends map is full", RefusedFull},
		{"mixed families", Limits{}, svc("10.96.0.1:80", TCP, "[fd00::1]:80"), "other address family", RefusedInvalid},
		{"bad backend", Limits{}, Service{ServiceKey: good.ServiceKey, Backends: []netip.AddrPort{{}}}, "not an address and port", RefusedInvalid},
		{"bad protocol", Limits{}, Service{ServiceKey: ServiceKey{Addr: good.Addr, Port: 80, Proto: 132}}, "not TCP or UDP", RefusedInvalid},
		{"v4-mapped key", Limits{Backends: 2}, svc("[::ffff:10.96.0.1]:80", TCP, "10.0.0.1:80", "10.0.0.7:80"), "backends map is full", RefusedFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, f := newTestTable(t, tt.limits)
			if err := tab.sync([]Service{good, other}); err != nil {
				t.Fatal(err)
			}
			changed := svc("10.96.0.2:80", TCP, "10.0.0.2:80")
			changed.Affinity = time.Minute
			err := tab.sync([]Service{tt.bad, changed})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("sync = %v, want an error containing %q", err, tt.wantErr)
			}
			// One refusal, of the bad Service, under its unmapped key.
			var got []ServiceKey
			for _, se := range ServiceErrors(err) {
				got = append(got, se.Key)
				if se.Reason != tt.reason {
					t.Errorf("refusal of %s: reason %s, want %s (%v)", se.Key, se.Reason, tt.reason, se)
				}
			}
			if diff := cmp.Diff([]ServiceKey{unmappedKey(tt.bad.ServiceKey)}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("refused services (-want +got):\n%s", diff)
			}
			if !RefusalsOnly(err) {
				t.Errorf("RefusalsOnly(%v) = false, want true: nothing but the refusal went wrong", err)
			}
			var want []Service
			if unmappedKey(tt.bad.ServiceKey) == good.ServiceKey {
				want = []Service{good, changed}
			} else {
				want = []Service{changed} // the bad one never existed, good was deleted
			}
			if diff := cmp.Diff(want, f.services(t), cmpServices); diff != "" {
				t.Errorf("maps (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServicesMapFull(t *testing.T) {
	tab, _ := newTestTable(t, Limits{Services: 2})
	err := tab.sync([]Service{svc("10.96.0.1:80", TCP), svc("10.96.0.2:80", TCP), svc("10.96.0.3:80", TCP)})
	if err == nil || !strings.Contains(err.Error(), "services map is full") {
		t.Fatalf("sync = %v, want services map is full", err)
	}
	if ses := ServiceErrors(err); len(ses) != 1 || ses[0].Reason != RefusedFull || ses[0].Key.Addr != netip.MustParseAddr("10.96.0.3") {
		t.Errorf("refusals = %v, want one: 10.96.0.3:80/TCP, full", ses)
	}
	if got := len(tab.services()); got != 2 {
		t.Errorf("programmed %d services, want 2", got)
	}
}

func TestFailedWriteRereadsMaps(t *testing.T) {
	for failAt := 1; failAt <= 4; failAt++ {
		t.Run(fmt.Sprint("fail batch ", failAt), func(t *testing.T) {
			tab, f := newTestTable(t, Limits{})
			if err := tab.sync([]Service{svc("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.2:80"), svc("10.96.0.2:80", TCP, "10.0.0.3:80")}); err != nil {
				t.Fatal(err)
			}
			f.failAt = f.calls + failAt
			err := tab.sync([]Service{svc("10.96.0.1:80", TCP, "10.0.0.2:80", "10.0.0.4:80", "10.0.0.5:80")})
			if !errors.Is(err, errInjected) {
				t.Fatalf("sync = %v, want the injected error", err)
			}
			if RefusalsOnly(err) {
				t.Errorf("RefusalsOnly(%v) = true, want false: a map write failed", err)
			}
			if diff := cmp.Diff(f.services(t), tab.services(), cmpServices); diff != "" {
				t.Errorf("mirror differs from maps after a failed write (-maps +mirror):\n%s", diff)
			}
			f.failAt = 0
			want := []Service{svc("10.96.0.1:80", TCP, "10.0.0.2:80", "10.0.0.4:80", "10.0.0.5:80")}
			if err := tab.sync(want); err != nil {
				t.Fatalf("sync after failure: %v", err)
			}
			if diff := cmp.Diff(want, f.services(t), cmpServices); diff != "" {
				t.Errorf("maps after recovery (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAdoptCollectsGarbage(t *testing.T) {
	tab, f := newTestTable(t, Limits{})
	a := svc("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.2:80")
	a.Affinity = 10 * time.Second
	if err := tab.sync([]Service{a}); err != nil {
		t.Fatal(err)
	}
	id := tab.svcs[toSvcKey(a.ServiceKey)].id
	// What a crash in the middle of old, unordered writes could leave.
	f.s.slots[sockSlotKey{Id: id, Slot: 7}] = 1              // past the count
	f.s.slots[sockSlotKey{Id: id, Slot: 1}] = 1              // inline, not in the slots map
	f.s.slots[sockSlotKey{Id: 999, Slot: 0}] = 1             // unknown service
	f.s.backends[4242] = toBackend(ap("10.0.0.9:80"), false) // unreferenced

	adopted, err := newTable(f, DefaultLimits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Service{a}, adopted.services(), cmpServices); diff != "" {
		t.Errorf("adopted (-want +got):\n%s", diff)
	}
	// Both slots are inline.
	if len(f.s.slots) != 0 || len(f.s.backends) != 2 {
		t.Errorf("after adoption: %d slots, %d backends; want 0 and 2", len(f.s.slots), len(f.s.backends))
	}
	// The adopted table goes on with the same IDs.
	b := svc("10.96.0.2:80", TCP, "10.0.0.1:80")
	if err := adopted.sync([]Service{a, b}); err != nil {
		t.Fatal(err)
	}
	if got := adopted.svcs[toSvcKey(a.ServiceKey)].id; got != id {
		t.Errorf("adopted ID of %s = %d, want %d", a.ServiceKey, got, id)
	}
	if got := adopted.svcs[toSvcKey(b.ServiceKey)].id; got == id {
		t.Errorf("new service got the ID %d in use", got)
	}
}

func TestLayout(t *testing.T) {
	tests := []struct {
		old, want, got []uint32
	}{
		{nil, []uint32{1, 2}, []uint32{1, 2}},
		{[]uint32{1, 2, 3}, []uint32{3, 1}, []uint32{1, 3}},
		{[]uint32{1, 2, 3}, []uint32{3, 4}, []uint32{3, 4}}, // 3's slot is gone
		{[]uint32{1, 2, 3}, []uint32{2, 4}, []uint32{4, 2}},
		{[]uint32{1, 2}, []uint32{2, 1, 5, 6}, []uint32{1, 2, 5, 6}},
		{[]uint32{1, 2}, nil, []uint32{}},
	}
	for _, tt := range tests {
		if got := layout(tt.old, tt.want); !cmp.Equal(got, tt.got, cmpopts.EquateEmpty()) {
			t.Errorf("layout(%v, %v) = %v, want %v", tt.old, tt.want, got, tt.got)
		}
	}
}

func TestIDAllocator(t *testing.T) {
	a := newIDAllocator(3)
	var got []uint32
	for range 3 {
		id, err := a.alloc()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	if _, err := a.alloc(); err == nil {
		t.Error("alloc past max succeeded")
	}
	a.release(2)
	a.release(1)
	for range 2 {
		id, _ := a.alloc()
		got = append(got, id)
	}
	if diff := cmp.Diff([]uint32{1, 2, 3, 2, 1}, got); diff != "" {
		t.Errorf("IDs (-want +got):\n%s", diff)
	}
	b, err := adoptIDs(10, []uint32{5, 2})
	if err != nil {
		t.Fatal(err)
	}
	var next []uint32
	for range 4 {
		id, _ := b.alloc()
		next = append(next, id)
	}
	if diff := cmp.Diff([]uint32{1, 3, 4, 6}, next); diff != "" {
		t.Errorf("adopted IDs (-want +got):\n%s", diff)
	}
}

func TestConversions(t *testing.T) {
	for _, s := range []string{"10.96.0.1:80", "[fd00::1]:65535", "[::]:1", "255.255.255.255:443"} {
		b := ap(s)
		if got := fromBackend(toBackend(b, false)); got != b {
			t.Errorf("fromBackend(toBackend(%s)) = %s", b, got)
		}
	}
	k := toSvcKey(ServiceKey{Addr: netip.MustParseAddr("10.96.0.1"), Port: 0x1234, Proto: UDP})
	// The BPF side reads raw memory: ::ffff:10.96.0.1, port big-endian.
	raw := [...]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 96, 0, 1, 0x12, 0x34}
	var got []byte
	for _, w := range k.Addr {
		got = append(got, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	got = append(got, byte(k.Port), byte(k.Port>>8))
	if diff := cmp.Diff(raw[:], got); diff != "" {
		t.Errorf("svc key memory (-want +got):\n%s", diff)
	}
}

func TestFrontendSequence(t *testing.T) {
	base := svc("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	base.NodePort = 30080
	base.ExternalIPs = []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	base.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("203.0.113.2")}
	base.LocalBackends = []netip.AddrPort{ap("10.0.0.1:8080")}
	local := base
	local.ExternalPolicy = PolicyLocal
	localMore := local
	localMore.LocalBackends = []netip.AddrPort{ap("10.0.0.1:8080"), ap("10.0.0.3:8080")}
	localNone := local
	localNone.LocalBackends = nil
	noFrontends := svc("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	noFrontends.LocalBackends = base.LocalBackends
	other := svc("10.96.0.2:53", UDP, "10.0.0.9:53")
	other.NodePort = 30080 // same number, other protocol: no clash

	tab, f := newTestTable(t, Limits{})
	steps := []struct {
		name    string
		desired []Service
	}{
		{"create", []Service{base, other}},
		{"cluster to local", []Service{local, other}},
		{"more local backends", []Service{localMore, other}},
		{"no local backends", []Service{localNone, other}},
		{"local to cluster", []Service{base, other}},
		{"local again, then frontends go", []Service{local, other}},
		{"frontends gone", []Service{noFrontends, other}},
		{"back", []Service{localMore, other}},
		{"delete all", nil},
	}
	for _, st := range steps {
		if err := tab.sync(st.desired); err != nil {
			t.Fatalf("%s: sync: %v", st.name, err)
		}
		want := slices.Clone(st.desired)
		slices.SortFunc(want, func(a, b Service) int { return a.ServiceKey.compare(b.ServiceKey) })
		if diff := cmp.Diff(want, tab.services(), cmpServices); diff != "" {
			t.Errorf("%s: mirror (-want +got):\n%s", st.name, diff)
		}
		if diff := cmp.Diff(want, f.services(t), cmpServices); diff != "" {
			t.Errorf("%s: maps, adopted (-want +got):\n%s", st.name, diff)
		}
		for k, v := range f.s.frontends {
			if v.Flags&feFlagLocal != 0 {
				for i := range v.Count {
					bid := f.slot(v.Id, i, v.Slots)
					if f.s.backends[bid].Flags&beFlagLocal == 0 {
						t.Errorf("%s: local frontend %s slot %d names a backend that is not local", st.name, fromSvcKey(sockSvcKey(k)), i)
					}
				}
			}
		}
	}
	if n := len(f.s.services) + len(f.s.slots) + len(f.s.backends) + len(f.s.frontends); n != 0 {
		t.Errorf("maps not empty after deleting everything: %+v", f.s)
	}
	if tab.svcIDs.inUse() != 0 {
		t.Errorf("%d service IDs still in use", tab.svcIDs.inUse())
	}
}

func TestFrontendErrors(t *testing.T) {
	a := svc("10.96.0.1:80", TCP, "10.0.0.1:8080")
	a.NodePort = 30080
	clash := svc("10.96.0.2:80", TCP, "10.0.0.2:8080")
	clash.NodePort = 30080
	notMine := svc("10.96.0.3:80", TCP, "10.0.0.3:8080")
	notMine.LocalBackends = []netip.AddrPort{ap("10.0.0.9:8080")}
	v6ip := svc("10.96.0.4:80", TCP, "10.0.0.4:8080")
	v6ip.ExternalIPs = []netip.Addr{netip.MustParseAddr("fd00::1")}

	tab, _ := newTestTable(t, Limits{})
	err := tab.sync([]Service{a, clash, notMine, v6ip})
	for _, want := range []string{"frontend 0.0.0.0:30080/TCP belongs to service 10.96.0.1:80/TCP",
		"local backend 10.0.0.9:8080 is not one of its backends", "externalIP fd00::1 is of the other address family"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sync error = %v, want it to say %q", err, want)
		}
	}
	if diff := cmp.Diff([]Service{a}, tab.services(), cmpServices); diff != "" {
		t.Errorf("programmed (-want +got):\n%s", diff)
	}
	reasons := map[netip.Addr]Refusal{}
	for _, se := range ServiceErrors(err) {
		reasons[se.Key.Addr] = se.Reason
	}
	want := map[netip.Addr]Refusal{clash.Addr: RefusedConflict, notMine.Addr: RefusedInvalid, v6ip.Addr: RefusedInvalid}
	if diff := cmp.Diff(want, reasons, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("refusals (-want +got):\n%s", diff)
	}
}

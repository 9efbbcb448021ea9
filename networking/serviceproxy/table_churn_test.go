package serviceproxy

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRandomChurn(t *testing.T) {
	// Ten seeds keep make test short; each walks 300 random steps through sync, update,
	// restart (adoption from the fake maps) and delete-all against a plain map model.
	// With Maglev, restarts switch between the algorithms at random, so that
	// adoption writes and removes the Maglev tables too.
	for _, lb := range []ExternalLB{ExternalRandom, ExternalMaglev} {
		for seed := uint64(1); seed <= 10; seed++ {
			t.Run(fmt.Sprintf("%s/%d", lb, seed), func(t *testing.T) { randomChurn(t, seed, lb) })
		}
	}
}

func randomChurn(t *testing.T, seed uint64, lb ExternalLB) {
	r := rand.New(rand.NewPCG(seed, 7))
	f := newFakeDP(t)
	f.lb = lb
	tab, err := newTableLB(f, DefaultLimits, lb, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	model := map[ServiceKey]Service{}
	keys := make([]ServiceKey, 12)
	for i := range keys {
		keys[i] = ServiceKey{Addr: netip.AddrFrom4([4]byte{10, 96, 0, byte(i + 1)}), Port: 80, Proto: TCP}
	}
	bes := make([]netip.AddrPort, 40)
	for i := range bes {
		bes[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080)
	}
	// Locality belongs to the address: fixed per backend.
	isLocal := func(b netip.AddrPort) bool { return b.Addr().As4()[3]%3 == 0 }
	gen := func(i int) Service {
		s := Service{ServiceKey: keys[i]}
		if r.IntN(4) == 0 {
			s.Addr = netip.AddrFrom16(s.Addr.As16()) // mapped
		}
		n := r.IntN(25)
		if r.IntN(3) == 0 {
			n = r.IntN(4)
		}
		for range n {
			b := bes[r.IntN(len(bes))]
			if r.IntN(5) == 0 {
				b = netip.AddrPortFrom(netip.AddrFrom16(b.Addr().As16()), b.Port())
			}
			s.Backends = append(s.Backends, b) // duplicates allowed
		}
		if r.IntN(3) == 0 {
			s.Affinity = 10 * 1e9
		}
		if r.IntN(2) == 0 {
			s.NodePort = 30000 + uint16(i)
		}
		if r.IntN(3) == 0 {
			s.ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)})}
		}
		if r.IntN(2) == 0 && (s.NodePort != 0 || len(s.ExternalIPs) > 0) {
			s.ExternalPolicy = PolicyLocal
		}
		for _, b := range s.Backends {
			b = netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
			if isLocal(b) {
				s.LocalBackends = append(s.LocalBackends, b)
			}
		}
		return s
	}
	check := func(step int) {
		t.Helper()
		var want []Service
		for _, s := range model {
			n, err := s.normalize(DefaultLimits.PerService)
			if err != nil {
				t.Fatalf("step %d: model: %v", step, err)
			}
			want = append(want, n)
		}
		slices.SortFunc(want, func(a, b Service) int { return a.ServiceKey.compare(b.ServiceKey) })
		if diff := cmp.Diff(want, tab.services(), cmpServices); diff != "" {
			t.Fatalf("step %d: mirror (-want +got):\n%s", step, diff)
		}
		if diff := cmp.Diff(want, f.services(t), cmpServices); diff != "" {
			t.Fatalf("step %d: maps (-want +got):\n%s", step, diff)
		}
		// Reference counts and slot totals.
		refs := map[*beEntry]int{}
		slots, mapSlots := 0, 0
		for _, e := range tab.svcs {
			if len(e.bes) != len(e.svc.Backends) || len(e.slots) != len(e.bes) {
				t.Fatalf("step %d: %s: %d bes, %d backends, %d slots", step, e.svc.ServiceKey, len(e.bes), len(e.svc.Backends), len(e.slots))
			}
			for i, be := range e.bes {
				refs[be]++
				if be.addr() != e.svc.Backends[i] || tab.bes[keyOf(be.addr())] != be {
					t.Fatalf("step %d: %s: bes[%d] is %v, backend %v", step, e.svc.ServiceKey, i, be.addr(), e.svc.Backends[i])
				}
				if !slices.Contains(e.slots, be.id) {
					t.Fatalf("step %d: %s: backend %d not in slots", step, e.svc.ServiceKey, be.id)
				}
			}
			slots += len(e.slots)
			mapSlots += max(0, len(e.slots)-inlineSlots)
			if e.local != nil {
				slots += len(e.local.slots)
				mapSlots += max(0, len(e.local.slots)-inlineSlots)
			}
		}
		for _, be := range tab.bes {
			if int32(refs[be]) != be.refs || be.refs == 0 || be.touched || be.inOld || be.created || be.rewrite {
				t.Fatalf("step %d: backend %v: refs %d, counted %d, marks %v %v %v %v", step, be.addr(), be.refs, refs[be], be.touched, be.inOld, be.created, be.rewrite)
			}
		}
		if len(refs) != len(tab.bes) {
			t.Fatalf("step %d: %d backends referenced, %d in the mirror", step, len(refs), len(tab.bes))
		}
		if slots != tab.slotsUsed || mapSlots != len(f.s.slots) || len(tab.bes) != len(f.s.backends) || len(tab.svcs) != len(f.s.services) {
			t.Fatalf("step %d: slots %d mirror %d maps %d; backends %d maps %d", step, slots, tab.slotsUsed, len(f.s.slots), len(tab.bes), len(f.s.backends))
		}
		n := 0
		for _, e := range tab.svcs {
			n++
			if e.local != nil {
				n++
			}
		}
		if tab.svcIDs.inUse() != n || tab.beIDs.inUse() != len(tab.bes) {
			t.Fatalf("step %d: IDs in use %d/%d, want %d/%d", step, tab.svcIDs.inUse(), tab.beIDs.inUse(), n, len(tab.bes))
		}
		// Maglev tables: one per service whose frontends have backends,
		// with the content its backends make, when on; none when off.
		tables := 0
		for _, e := range tab.svcs {
			bes := e.bes
			if e.local != nil {
				bes = nil
				for _, b := range e.svc.LocalBackends {
					bes = append(bes, tab.bes[keyOf(b)])
				}
			}
			want, ok := maglevValue(bes)
			if !tab.maglev || len(e.fes) == 0 || !ok {
				if e.mgID != 0 {
					t.Fatalf("step %d: %s has maglev table %d, want none", step, e.svc.ServiceKey, e.mgID)
				}
				continue
			}
			tables++
			if got, found := f.s.maglev[e.mgID]; !found || got != want {
				t.Fatalf("step %d: %s: maglev table %d in the maps %v, not what its backends make", step, e.svc.ServiceKey, e.mgID, found)
			}
			for _, fe := range e.fes {
				if v := f.s.frontends[toFeKey(fe.key)]; v.Flags&feFlagMaglev == 0 || v.Id != e.mgID {
					t.Fatalf("step %d: frontend %s: flags %#x, table %d; want the maglev flag and table %d", step, fe.key, v.Flags, v.Id, e.mgID)
				}
			}
		}
		if tables != len(f.s.maglev) {
			t.Fatalf("step %d: %d maglev tables expected, %d in the maps", step, tables, len(f.s.maglev))
		}
	}
	for step := range 300 {
		op := r.IntN(10)
		f.t.Logf("step %d op %d", step, op)
		switch {
		case op < 4: // full sync with a random subset, sometimes a duplicate
			var desired []Service
			next := map[ServiceKey]Service{}
			for i := range keys {
				if r.IntN(3) == 0 {
					continue
				}
				var s Service
				if old, ok := model[keys[i]]; ok && r.IntN(2) == 0 {
					s = old // unchanged
				} else {
					s = gen(i)
				}
				desired = append(desired, s)
				next[keys[i]] = s
			}
			dup := r.IntN(4) == 0 && len(desired) > 0
			if dup {
				d := gen(int(desired[0].Addr.Unmap().As4()[3]) - 1)
				desired = append(desired, d)
			}
			r.Shuffle(len(desired), func(i, j int) { desired[i], desired[j] = desired[j], desired[i] })
			if dup {
				// The first of the two wins.
				seen := map[ServiceKey]bool{}
				next = map[ServiceKey]Service{}
				for _, s := range desired {
					k := unmappedKey(s.ServiceKey)
					if !seen[k] {
						seen[k] = true
						next[k] = s
					}
				}
			}
			err := tab.sync(desired)
			if (err != nil) != dup {
				t.Fatalf("step %d: sync: %v (duplicate %v)", step, err, dup)
			}
			model = next
		case op < 8: // update a few
			var ups []Service
			var dels []ServiceKey
			for range 1 + r.IntN(3) {
				i := r.IntN(len(keys))
				if r.IntN(3) == 0 {
					dels = append(dels, keys[i])
					continue
				}
				s := gen(i)
				ups = append(ups, s)
			}
			if err := tab.update(ups, dels); err != nil {
				t.Fatalf("step %d: update: %v", step, err)
			}
			for _, s := range ups {
				model[keys[s.Addr.Unmap().As4()[3]-1]] = s
			}
			for _, k := range dels {
				delete(model, k)
			}
		case op < 9: // restart: adopt the maps
			if lb == ExternalMaglev {
				f.lb = []ExternalLB{ExternalRandom, ExternalMaglev}[r.IntN(2)]
			}
			var err error
			tab, err = newTableLB(f, DefaultLimits, f.lb, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
		default: // delete all
			if err := tab.sync(nil); err != nil {
				t.Fatal(err)
			}
			model = map[ServiceKey]Service{}
		}
		// Model keys are unmapped.
		m := map[ServiceKey]Service{}
		for _, s := range model {
			m[unmappedKey(s.ServiceKey)] = s
		}
		model = m
		check(step)
	}
}

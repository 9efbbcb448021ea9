//go:build linux

package serviceproxy

import (
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// servicesN is n ClusterIPs from 10.100.0.0 (TCP port 80) with two backends each,
// as in the benchmark.
func servicesN(n int) []Service {
	out := make([]Service, n)
	for i := range out {
		vip := netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)})
		out[i] = Service{
			ServiceKey: ServiceKey{Addr: vip, Port: 80, Proto: TCP},
			Backends: []netip.AddrPort{
				netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200 + byte(i>>16), byte(i >> 8), byte(i)}), 8080),
				netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 210 + byte(i>>16), byte(i >> 8), byte(i)}), 8080),
			},
		}
	}
	return out
}

// BenchmarkProgram measures programming 10,000 Services (2 backends each) into empty
// maps (batch updates, Go-side diff included), with the mirror emptied before or
// new, and one endpoint change with 10,000 programmed. Budgets: 20 ms and 100 µs.
func BenchmarkProgram(b *testing.B) {
	s := newSandbox(b)
	p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Remove() })
	svcs := servicesN(10000)

	// program syncs the 10k Services into emptied maps; with fresh, into a new
	// mirror too, as when the agent starts on empty maps (otherwise the mirror
	// reuses the memory of the one it emptied).
	program := func(fresh bool) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			var cpu int64
			for b.Loop() {
				b.StopTimer()
				if err := p.Sync(nil); err != nil {
					b.Fatal(err)
				}
				if fresh {
					if p.tab, err = newTable(p.tab.dp, p.cfg.Limits, p.log); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				c := processCPU()
				if err := p.Sync(svcs); err != nil {
					b.Fatal(err)
				}
				cpu += processCPU() - c
			}
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		}
	}
	b.Run("10k-services", program(false))
	b.Run("10k-services-fresh", program(true))
	b.Run("10k-services-maps-only", func(b *testing.B) {
		// The same batches, computed once: the kernel's share of the above.
		b.ReportAllocs()
		rec := &recordDP{}
		tab, err := newTable(rec, DefaultLimits, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		if err := tab.sync(svcs); err != nil {
			b.Fatal(err)
		}
		if err := p.Sync(nil); err != nil {
			b.Fatal(err)
		}
		var undo []*op
		for _, o := range rec.ops {
			switch o.kind {
			case opPutBackends:
				tomb := make([]sockBackend, len(o.bes))
				for i, b := range o.bes {
					tomb[i] = tombstone(b)
				}
				undo = append(undo, &op{kind: opDeleteBackends, beIDs: o.beIDs, bes: tomb})
			case opPutSlotsGrow:
				undo = append(undo, &op{kind: opDeleteSlotsDeleted, slotKeys: o.slotKeys})
			case opPutServices:
				undo = append(undo, &op{kind: opDeleteServices, svcKeys: o.svcKeys})
			}
		}
		slices.Reverse(undo)
		var cpu int64
		for b.Loop() {
			c := processCPU()
			for _, o := range rec.ops {
				if err := p.tab.dp.apply(o); err != nil {
					b.Fatal(err)
				}
			}
			cpu += processCPU() - c
			b.StopTimer()
			for _, o := range undo {
				if err := p.tab.dp.apply(o); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	})
	// oneChange moves one Service of the 10k back and forth between two backend
	// lists; with cold, after filling the CPU caches with something else, as when
	// the agent has waited for the API between two changes.
	oneChange := func(cold bool) func(b *testing.B) {
		return func(b *testing.B) {
			if err := p.Sync(svcs); err != nil {
				b.Fatal(err)
			}
			one := svcs[4242]
			alt := one
			alt.Backends = []netip.AddrPort{one.Backends[0], netip.MustParseAddrPort("10.250.0.1:8080")}
			var evict []byte
			if cold {
				evict = make([]byte, 64<<20)
			} else {
				b.ReportAllocs()
				defer reportCPU(b, unix.RUSAGE_SELF)()
			}
			i := 0
			for b.Loop() {
				if cold {
					b.StopTimer()
					for j := 0; j < len(evict); j += 64 {
						evict[j]++
					}
					b.StartTimer()
				}
				next := one
				if i%2 == 0 {
					next = alt
				}
				i++
				if err := p.Upsert(next); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("one-change-at-10k", oneChange(false))
	b.Run("one-change-at-10k-cold", oneChange(true))
}

// BenchmarkConnect measures new TCP connections (connect, read 1 byte, close) from
// one thread to a server in the test's namespace: direct without the hooks, direct
// with the hooks attached (a miss in the services map) and through a ClusterIP, with
// 10,000 Services programmed. It reports the client thread's CPU per connection
// and the connect4 program's run time per connection.
func BenchmarkConnect(b *testing.B) {
	s := newSandbox(b)
	backend := netip.MustParseAddrPort("127.0.0.2:8080")
	l, err := net.Listen("tcp", backend.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{'x'})
			c.Close()
		}
	}()
	p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Remove() })
	vip := netip.AddrPortFrom(vip4, 80)
	svcs := append(servicesN(10000), Service{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: []netip.AddrPort{backend}})
	if err := p.Sync(svcs); err != nil {
		b.Fatal(err)
	}

	// The kernel counts the programs' own run time while stats is open: a
	// measure of the datapath's share of a connection that the machine's
	// noise does not drown.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time stats: %v", err)
	}
	b.Cleanup(func() { stats.Close() })

	for _, c := range []struct {
		name  string
		dst   netip.AddrPort
		hooks bool
	}{
		{"direct-no-hooks", backend, false},
		{"direct", backend, true},
		{"clusterip", vip, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			if c.hooks {
				s.enter()
				defer s.leave()
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			sa := &unix.SockaddrInet4{Port: int(c.dst.Port()), Addr: c.dst.Addr().As4()}
			buf := make([]byte, 1)
			defer reportCPU(b, unix.RUSAGE_THREAD)()
			defer reportProgram(b, p.objs.KilnConnect4, "connect4-ns/conn")()
			for b.Loop() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				if err := unix.Connect(fd, sa); err != nil {
					b.Fatalf("connect %s: %v", c.dst, err)
				}
				if _, err := unix.Read(fd, buf); err != nil {
					b.Fatalf("read: %v", err)
				}
				unix.Close(fd)
			}
		})
	}
}

// reportCPU reports CPU time per iteration of the process (RUSAGE_SELF) or of the
// calling, locked thread (RUSAGE_THREAD) from now until the returned function runs:
// on a shared, busy machine it says more than wall time. It includes timer-stopped
// work.
func reportCPU(b *testing.B, who int) func() {
	var before unix.Rusage
	unix.Getrusage(who, &before)
	return func() {
		var after unix.Rusage
		unix.Getrusage(who, &after)
		cpu := after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano()
		name := "cpu-ns/op"
		if who == unix.RUSAGE_THREAD {
			name = "client-cpu-ns/conn"
		}
		b.ReportMetric(float64(cpu)/float64(b.N), name)
	}
}

// reportProgram reports prog's run time per iteration from now until the
// returned function runs (BPF run-time stats must be on).
func reportProgram(b *testing.B, prog *ebpf.Program, name string) func() {
	before, err := prog.Stats()
	if err != nil {
		b.Fatalf("program stats: %v", err)
	}
	return func() {
		after, err := prog.Stats()
		if err != nil {
			b.Fatalf("program stats: %v", err)
		}
		b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(b.N), name)
	}
}

// BenchmarkTable is BenchmarkProgram's Go side alone, without root or BPF: the
// table computes the same batches and hands them to a datapath that drops them.
// Its allocations and instructions do not depend on the machine's load, so it
// is what to compare across changes on a shared machine (with
// GOGC=off GOMAXPROCS=1 under valgrind --tool=callgrind for instruction counts).
func BenchmarkTable(b *testing.B) {
	svcs := servicesN(10000)
	newTab := func(b *testing.B) *table {
		tab, err := newTable(nullDP{}, DefaultLimits, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		return tab
	}
	tab := newTab(b)
	// As BenchmarkProgram/10k-services: the mirror held the same services before.
	b.Run("10k-services", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			if err := tab.sync(nil); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := tab.sync(svcs); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A new table, as when the agent starts on empty maps.
	b.Run("10k-services-fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			tab := newTab(b)
			b.StartTimer()
			if err := tab.sync(svcs); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A resync that changes nothing, as after an informer's relist.
	b.Run("10k-services-unchanged", func(b *testing.B) {
		b.ReportAllocs()
		if err := tab.sync(svcs); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := tab.sync(svcs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("10k-delete-all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			if err := tab.sync(svcs); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := tab.sync(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-change-at-10k", func(b *testing.B) {
		b.ReportAllocs()
		if err := tab.sync(svcs); err != nil {
			b.Fatal(err)
		}
		one := svcs[4242]
		alt := one
		alt.Backends = []netip.AddrPort{one.Backends[0], netip.MustParseAddrPort("10.250.0.1:8080")}
		i := 0
		for b.Loop() {
			next := one
			if i%2 == 0 {
				next = alt
			}
			i++
			if err := tab.update([]Service{next}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// nullDP takes every batch and writes nothing.
type nullDP struct{}

func (nullDP) apply(*op) error              { return nil }
func (nullDP) snapshot() (*snapshot, error) { return (&recordDP{}).snapshot() }

// processCPU is the CPU time the process has used (user and system, all threads):
// on a shared, busy machine it says more than wall time.
func processCPU() int64 {
	var u unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &u)
	return u.Utime.Nano() + u.Stime.Nano()
}

// recordDP keeps (copies of) the batches a table writes.
type recordDP struct{ ops []*op }

func (r *recordDP) apply(o *op) error {
	r.ops = append(r.ops, &op{kind: o.kind, beIDs: slices.Clone(o.beIDs), bes: slices.Clone(o.bes),
		slotKeys: slices.Clone(o.slotKeys), slotVals: slices.Clone(o.slotVals), svcKeys: slices.Clone(o.svcKeys),
		svcVals: slices.Clone(o.svcVals), feKeys: slices.Clone(o.feKeys), feVals: slices.Clone(o.feVals)})
	return nil
}

func (r *recordDP) snapshot() (*snapshot, error) {
	return &snapshot{services: map[sockSvcKey]sockSvcVal{}, slots: map[sockSlotKey]uint32{}, backends: map[uint32]sockBackend{},
		frontends: map[tcSvcKey]tcFeVal{}}, nil
}

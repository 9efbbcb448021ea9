//go:build linux

package serviceproxy

import (
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"

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
// maps (batch updates, Go-side diff included), and one endpoint change with 10,000
// programmed. Budgets: 20 ms and 100 µs.
func BenchmarkProgram(b *testing.B) {
	s := newSandbox(b)
	p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Remove() })
	svcs := servicesN(10000)

	b.Run("10k-services", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if err := p.Sync(nil); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := p.Sync(svcs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("10k-services-maps-only", func(b *testing.B) {
		// The same batches, computed once: the kernel's share of the above.
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
				undo = append(undo, &op{kind: opDeleteBackends, beIDs: o.beIDs})
			case opPutSlotsGrow:
				undo = append(undo, &op{kind: opDeleteSlotsDeleted, slotKeys: o.slotKeys})
			case opPutServices:
				undo = append(undo, &op{kind: opDeleteServices, svcKeys: o.svcKeys})
			}
		}
		slices.Reverse(undo)
		for b.Loop() {
			for _, o := range rec.ops {
				if err := p.tab.dp.apply(o); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			for _, o := range undo {
				if err := p.tab.dp.apply(o); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
	})
	b.Run("one-change-at-10k", func(b *testing.B) {
		if err := p.Sync(svcs); err != nil {
			b.Fatal(err)
		}
		one := svcs[4242]
		alt := one
		alt.Backends = []netip.AddrPort{one.Backends[0], netip.MustParseAddrPort("10.250.0.1:8080")}
		i := 0
		defer reportCPU(b, unix.RUSAGE_SELF)()
		for b.Loop() {
			next := one
			if i%2 == 0 {
				next = alt
			}
			i++
			if err := p.Upsert(next); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkConnect measures new TCP connections (connect, read 1 byte, close) from
// one thread to a server in the test's namespace: direct without the hooks, direct
// with the hooks attached (a miss in the services map) and through a ClusterIP, with
// 10,000 Services programmed. It reports the client thread's CPU per connection.
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

// recordDP keeps the batches a table writes.
type recordDP struct{ ops []*op }

func (r *recordDP) apply(o *op) error {
	c := *o
	r.ops = append(r.ops, &c)
	return nil
}

func (r *recordDP) snapshot() (*snapshot, error) {
	return &snapshot{services: map[sockSvcKey]sockSvcVal{}, slots: map[sockSlotKey]uint32{}, backends: map[uint32]sockBackend{},
		frontends: map[tcSvcKey]tcFeVal{}}, nil
}

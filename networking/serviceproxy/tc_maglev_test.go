//go:build linux

package serviceproxy

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
)

// maglevNode is one node of TestTCMaglev: a Proxy in a sandbox of its own,
// whose external link (testIfindex) has the node's addresses.
type maglevNode struct {
	p           *Proxy
	addr, addr6 netip.Addr
}

func newMaglevNode(t *testing.T, lb ExternalLB, addr, addr6 netip.Addr, svcs []Service) *maglevNode {
	t.Helper()
	s := newSandbox(t)
	p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir, ExternalLB: lb,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Remove() })
	if err := p.tcObjs.KilnLinks.Put(uint32(testIfindex), tcLinkCfg{Snat4: addrWords(addr)[3], Snat6: addrWords(addr6)}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{addr, addr6} {
		if err := p.tcObjs.KilnNodeAddrs.Put(tcNodeAddr{Addr: addrWords(a)}, uint32(testIfindex)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Sync(svcs); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return &maglevNode{p: p, addr: addr, addr6: addr6}
}

// send runs a new flow's first packet from client to dst through the node's
// ingress program and returns the backend it was sent to.
func (n *maglevNode) send(t *testing.T, client, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	ret, out := run(t, n.p.tcObjs.KilnTcIngress, testIfindex, pkt{Proto: TCP, Src: client, Dst: dst}.build())
	if ret != tcxPass && ret != tcxRedirect {
		t.Fatalf("%s -> %s: verdict %d, want it translated", client, dst, ret)
	}
	return parse(t, out).Dst
}

// TestTCMaglev programs two nodes with the same Services, their backends listed
// in other orders (and so with other backend IDs): with ExternalMaglev, a new
// flow gets the same backend on either node, the one that the table maglev.go
// builds names at the flow's hash, and flows spread over all backends.
func TestTCMaglev(t *testing.T) {
	bes4 := maglevBackends(5, false)
	bes6 := maglevBackends(5, true)
	extIP := netip.MustParseAddr("203.0.113.7")
	extIP6 := netip.MustParseAddr("2001:db8:ff::7")
	services := func(reverse bool) []Service {
		b4, b6 := slices.Clone(bes4), slices.Clone(bes6)
		svcs := []Service{
			{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.1"), 80, TCP}, Backends: b4, NodePort: 30080, ExternalIPs: []netip.Addr{extIP}},
			{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::1"), 80, TCP}, Backends: b6, NodePort: 30080, ExternalIPs: []netip.Addr{extIP6}},
			{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.2"), 80, TCP}, Backends: b4[:3], NodePort: 30081, Affinity: time.Hour},
		}
		if reverse {
			slices.Reverse(b4)
			slices.Reverse(b6)
			// Other backends first: the backend IDs differ from node a's.
			svcs = append([]Service{{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.9"), 80, TCP},
				Backends: []netip.AddrPort{netip.MustParseAddrPort("10.9.0.1:80"), netip.MustParseAddrPort("10.9.0.2:80")}}}, svcs...)
			slices.Reverse(svcs[1:])
		}
		return svcs
	}
	a := newMaglevNode(t, ExternalMaglev, netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("fd00:1::1"), services(false))
	b := newMaglevNode(t, ExternalMaglev, netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("fd00:1::2"), services(true))
	if n := a.p.Stats().Services; n != 3 {
		t.Fatalf("node a has %d services, want 3", n)
	}

	// want is the backend of the table maglev.go builds for bes at the
	// flow's hash: the frontend key's address (unspecified for a NodePort).
	want := func(bes []netip.AddrPort, client, fe netip.AddrPort) netip.AddrPort {
		return bes[maglevTable(bes, maglevM)[flowHash(client, fe, TCP)%maglevM]]
	}
	for _, tc := range []struct {
		name   string
		bes    []netip.AddrPort
		client func(i int) netip.AddrPort
		dst    func(n *maglevNode) netip.AddrPort
		fe     netip.AddrPort
	}{
		{"IPv4 NodePort", bes4,
			func(i int) netip.AddrPort {
				return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i%7)}), uint16(40000+i))
			},
			func(n *maglevNode) netip.AddrPort { return netip.AddrPortFrom(n.addr, 30080) },
			netip.MustParseAddrPort("0.0.0.0:30080")},
		{"IPv4 externalIP", bes4,
			func(i int) netip.AddrPort {
				return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 50000)
			},
			func(*maglevNode) netip.AddrPort { return netip.AddrPortFrom(extIP, 80) },
			netip.AddrPortFrom(extIP, 80)},
		{"IPv6 NodePort", bes6,
			func(i int) netip.AddrPort {
				return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i % 5)}), uint16(40000+i))
			},
			func(n *maglevNode) netip.AddrPort { return netip.AddrPortFrom(n.addr6, 30080) },
			netip.MustParseAddrPort("[::]:30080")},
		{"IPv6 externalIP", bes6,
			func(i int) netip.AddrPort {
				return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 15: byte(i)}), 50000)
			},
			func(*maglevNode) netip.AddrPort { return netip.AddrPortFrom(extIP6, 80) },
			netip.AddrPortFrom(extIP6, 80)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[netip.AddrPort]int{}
			for i := range 60 {
				client := tc.client(i)
				ga, gb := a.send(t, client, tc.dst(a)), b.send(t, client, tc.dst(b))
				if ga != gb {
					t.Errorf("flow %s: backend %s on node a, %s on node b", client, ga, gb)
				}
				if w := want(tc.bes, client, tc.fe); ga != w {
					t.Errorf("flow %s: backend %s, want %s (the table's entry at the flow's hash)", client, ga, w)
				}
				seen[ga]++
			}
			if len(seen) != len(tc.bes) {
				t.Errorf("60 flows went to %d of %d backends: %v", len(seen), len(tc.bes), seen)
			}
		})
	}

	t.Run("affinity", func(t *testing.T) {
		// The client's first flow picks by Maglev; its next flows, from
		// other ports, keep that backend while the affinity lasts.
		client := netip.MustParseAddr("192.0.2.77")
		fe := netip.AddrPortFrom(a.addr, 30081)
		first := a.send(t, netip.AddrPortFrom(client, 41000), fe)
		if w := want(bes4[:3], netip.AddrPortFrom(client, 41000), netip.MustParseAddrPort("0.0.0.0:30081")); first != w {
			t.Errorf("first flow: backend %s, want %s", first, w)
		}
		for port := uint16(41001); port < 41020; port++ {
			if got := a.send(t, netip.AddrPortFrom(client, port), fe); got != first {
				t.Errorf("flow from port %d: backend %s, want %s (affinity)", port, got, first)
			}
		}
	})

	t.Run("table missing", func(t *testing.T) {
		// Without its table a flagged frontend picks at random: still one
		// of the backends.
		var id uint32
		for _, e := range a.p.tab.svcs {
			if e.svc.NodePort == 30080 && e.svc.Addr.Is4() {
				id = e.mgID
			}
		}
		var v tcMaglevVal
		if err := a.p.tcObjs.KilnMaglev.Lookup(id, &v); err != nil {
			t.Fatalf("maglev table %d: %v", id, err)
		}
		if err := a.p.tcObjs.KilnMaglev.Delete(id); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.p.tcObjs.KilnMaglev.Put(id, &v) })
		seen := map[netip.AddrPort]bool{}
		for i := range 40 {
			got := a.send(t, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.99"), uint16(45000+i)), netip.AddrPortFrom(a.addr, 30080))
			if !slices.Contains(bes4, got) {
				t.Fatalf("backend %s is not one of the service's", got)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Errorf("40 flows without the table all went to %v; want a random spread", seen)
		}
	})

	t.Run("off by default", func(t *testing.T) {
		c := newMaglevNode(t, ExternalRandom, netip.MustParseAddr("10.1.0.3"), netip.MustParseAddr("fd00:1::3"), services(false))
		var k uint32
		if err := c.p.tcObjs.KilnMaglev.NextKey(nil, &k); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("maglev tables with the default algorithm: first key %d, %v", k, err)
		}
		var fk tcSvcKey
		var fv tcFeVal
		it := c.p.tcObjs.KilnFrontends.Iterate()
		for it.Next(&fk, &fv) {
			if fv.Flags&feFlagMaglev != 0 {
				t.Errorf("frontend %s has the maglev flag", fromSvcKey(sockSvcKey(fk)))
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		// The random pick: one client's flows from other ports spread.
		seen := map[netip.AddrPort]bool{}
		for i := range 40 {
			seen[c.send(t, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), uint16(40000+i)), netip.AddrPortFrom(c.addr, 30080))] = true
		}
		if len(seen) < 2 {
			t.Errorf("40 flows went to %v; want a random spread", seen)
		}
	})
}

// TestOpenSwitchesExternalLB reopens a pinned datapath with the other
// algorithm: Open writes the Maglev tables and flags the frontends, or removes
// both, and Remove unpins kiln_maglev.
func TestOpenSwitchesExternalLB(t *testing.T) {
	s := newSandbox(t)
	svcs := []Service{
		{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: maglevBackends(3, false), NodePort: 30080},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.11"), 80, TCP}, Backends: maglevBackends(2, false),
			LocalBackends: maglevBackends(1, false), NodePort: 30081, ExternalPolicy: PolicyLocal},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.12"), 80, TCP}, Backends: maglevBackends(2, false)},
	}
	state := func(p *Proxy) (tables int, flagged []string) {
		var id uint32
		var v tcMaglevVal
		it := p.tcObjs.KilnMaglev.Iterate()
		for it.Next(&id, &v) {
			tables++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		var fk tcSvcKey
		var fv tcFeVal
		fit := p.tcObjs.KilnFrontends.Iterate()
		for fit.Next(&fk, &fv) {
			if fv.Flags&feFlagMaglev != 0 {
				flagged = append(flagged, fromSvcKey(sockSvcKey(fk)).String())
			}
		}
		if err := fit.Err(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(flagged)
		return tables, flagged
	}
	open := func(lb ExternalLB) *Proxy {
		p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir, ExternalLB: lb, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
		if err != nil {
			t.Fatalf("Open(%s): %v", lb, err)
		}
		return p
	}
	allFlagged := []string{"0.0.0.0:30080/TCP", "0.0.0.0:30081/TCP"}
	p := open(ExternalRandom)
	if err := p.Sync(svcs); err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		lb         ExternalLB
		wantTables int
		wantFlags  []string
	}{
		{ExternalMaglev, 2, allFlagged},
		{ExternalMaglev, 2, allFlagged},
		{ExternalRandom, 0, nil},
		{ExternalMaglev, 2, allFlagged},
	} {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		p = open(step.lb)
		tables, flagged := state(p)
		if tables != step.wantTables {
			t.Errorf("step %d (%s): %d maglev tables, want %d", i, step.lb, tables, step.wantTables)
		}
		if diff := cmp.Diff(step.wantFlags, flagged); diff != "" {
			t.Errorf("step %d (%s): frontends with the maglev flag (-want +got):\n%s", i, step.lb, diff)
		}
		// A Sync of the same services after adoption changes nothing.
		if err := p.Sync(svcs); err != nil {
			t.Fatal(err)
		}
		if t2, f2 := state(p); t2 != tables || !slices.Equal(f2, flagged) {
			t.Errorf("step %d: Sync after adoption changed the maglev state: %d tables %v", i, t2, f2)
		}
	}
	if err := p.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.PinDir, tcMapKilnMaglev)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove, %s: %v; want it unpinned", tcMapKilnMaglev, err)
	}
}

package networking

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/networking/dhcp"
)

// fakeDHCP stands in for the DHCPv4 runners of a Controller on the fake
// kernel: a runner binds its lease at once and, when stopped, loses it as
// dhcp.Client.Run does after its DHCPRELEASE.
type fakeDHCP struct {
	t     *testing.T
	c     *Controller
	f     *fakeKernel
	lease dhcp.Lease
	link  string // the link an automatic runner takes
	// atStop is the addresses of the runner's link when each runner stopped.
	atStop [][]string
}

func (d *fakeDHCP) start(key, _ string) *dhcpRun {
	name := key
	if key == autoKey {
		name = d.link
	}
	ls := d.lease
	if err := d.c.bound(name, &ls); err != nil {
		d.t.Errorf("bound(%s): %v", name, err)
	}
	var once sync.Once
	done := make(chan struct{})
	return &dhcpRun{done: done, cancel: func() {
		once.Do(func() {
			_, addrs, _ := fakeState(d.f)
			d.atStop = append(d.atStop, addrs[name])
			d.c.lost(name, &ls)
			close(done)
		})
	}}
}

// qemuLease is what QEMU's user network hands out.
var qemuLease = dhcp.Lease{
	Addr: pfx("10.0.2.15/24"), Router: ip("10.0.2.2"), DNS: []netip.Addr{ip("10.0.2.3")},
	ServerID: ip("10.0.2.2"), Duration: 24 * time.Hour, T1: 12 * time.Hour, T2: 21 * time.Hour,
}

func newFakeController(t *testing.T, f *fakeKernel) (*Controller, *CountingKernel, *fakeDHCP) {
	t.Helper()
	k := Counting(f)
	c := New(Options{Kernel: k, ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), Log: testLog(t)})
	t.Cleanup(c.Close)
	d := &fakeDHCP{t: t, c: c, f: f, lease: qemuLease, link: "eth0"}
	c.startV4 = d.start
	return c, k, d
}

// dynamicAddrs lists the addresses of a link with a finite lifetime.
func dynamicAddrs(f *fakeKernel, name string) []string {
	var out []string
	for _, a := range f.addrs[f.byName(name).Attrs().Index] {
		if dynamicAddr(a) {
			out = append(out, a.IPNet.String())
		}
	}
	return out
}

// TestControllerDHCPToStatic is the switch TestNetworkDHCPThenStaticLive makes
// on a QEMU node, on the fake kernel: the link's address came by DHCP; the new
// Spec turns DHCP off and claims the leased address as static plus a second
// one in the same subnet (a secondary) and a default route. The runner must
// stop before the static Spec is reconciled and leave the claimed address;
// the end state is exactly the Spec, whether or not the kernel promotes
// secondaries (the fake can ignore promote_secondaries, and then deleting
// the primary would take the secondary and every route with it).
func TestControllerDHCPToStatic(t *testing.T) {
	static := Spec{
		Interfaces: []Interface{{Name: "eth0",
			Addresses: []netip.Prefix{pfx("10.0.2.15/24"), pfx("10.0.2.20/24")},
			Routes:    []Route{{Dst: pfx("0.0.0.0/0"), Gateway: ip("10.0.2.2")}}}},
		Nameservers: []netip.Addr{ip("10.0.2.3")},
	}
	for _, tt := range []struct {
		name      string
		noPromote bool
	}{
		{"kernel promotes secondaries", false},
		{"kernel ignores promote_secondaries", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKernel("eth0")
			f.noPromote = tt.noPromote
			c, k, d := newFakeController(t, f)
			ctx := context.Background()

			if err := c.Apply(ctx, Spec{}); err != nil {
				t.Fatalf("Apply (DHCP): %v", err)
			}
			_, addrs, routes := fakeState(f)
			if diff := cmp.Diff([]string{"10.0.2.15/24"}, addrs["eth0"]); diff != "" {
				t.Fatalf("eth0 after DHCP (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"eth0 0.0.0.0/0 via 10.0.2.2 src 10.0.2.15 (foreign)"}, routes); diff != "" {
				t.Fatalf("routes after DHCP (-want +got):\n%s", diff)
			}

			if err := c.Apply(ctx, static); err != nil {
				t.Fatalf("Apply (static): %v", err)
			}
			// The claimed address was never deleted (a client's connection
			// to it lives on), and the runner stopped before the static
			// addresses went in.
			if len(f.deleted) != 0 {
				t.Errorf("addresses deleted on the way: %v, want none", f.deleted)
			}
			if diff := cmp.Diff([][]string{{"10.0.2.15/24"}}, d.atStop); diff != "" {
				t.Errorf("eth0's addresses when the runner stopped (-want +got):\n%s", diff)
			}
			_, addrs, routes = fakeState(f)
			if diff := cmp.Diff([]string{"10.0.2.15/24", "10.0.2.20/24"}, addrs["eth0"]); diff != "" {
				t.Errorf("eth0 after the static Spec (-want +got):\n%s", diff)
			}
			if got := dynamicAddrs(f, "eth0"); len(got) != 0 {
				t.Errorf("addresses with a lease's lifetime after the static Spec: %v", got)
			}
			if diff := cmp.Diff([]string{"eth0 0.0.0.0/0 via 10.0.2.2"}, routes); diff != "" {
				t.Errorf("routes after the static Spec (-want +got):\n%s", diff)
			}
			if ls := c.Leases(); len(ls) != 0 {
				t.Errorf("Leases() = %v, want none", ls)
			}
			st, err := c.Status()
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range st.Addresses {
				if a.Link == "eth0" && (a.Source != SourceConfig || a.Dynamic) {
					t.Errorf("%s on eth0: source %q dynamic %v, want config, permanent", a.Prefix, a.Source, a.Dynamic)
				}
			}
			for _, key := range []string{"all", "default", "eth0"} {
				if v := f.sysctls[promoteKey(key)]; v != "1" {
					t.Errorf("%s = %q, want 1", promoteKey(key), v)
				}
			}

			before := k.Writes()
			if err := c.Apply(ctx, static); err != nil {
				t.Fatalf("Apply (static, again): %v", err)
			}
			if n := k.Writes() - before; n != 0 {
				t.Errorf("a repeated Apply made %d writes, want 0", n)
			}
		})
	}
}

// TestControllerDHCPToOtherStatic: when the static Spec does not claim the
// leased address, the stopped runner removes it and its route, and the
// static ones are there.
func TestControllerDHCPToOtherStatic(t *testing.T) {
	f := newFakeKernel("eth0")
	c, _, _ := newFakeController(t, f)
	ctx := context.Background()
	if err := c.Apply(ctx, Spec{Interfaces: []Interface{{Name: "eth0", DHCP: true}}}); err != nil {
		t.Fatalf("Apply (DHCP): %v", err)
	}
	if err := c.Apply(ctx, Spec{Interfaces: []Interface{{Name: "eth0",
		Addresses: []netip.Prefix{pfx("10.0.2.30/24")},
		Routes:    []Route{{Dst: pfx("0.0.0.0/0"), Gateway: ip("10.0.2.2"), Metric: 1024}}}}}); err != nil {
		t.Fatalf("Apply (static): %v", err)
	}
	_, addrs, routes := fakeState(f)
	if diff := cmp.Diff([]string{"10.0.2.30/24"}, addrs["eth0"]); diff != "" {
		t.Errorf("eth0 after the static Spec (-want +got):\n%s", diff)
	}
	// Metric 1024 is the lease route's: claimed by the Spec, then Kiln's.
	if diff := cmp.Diff([]string{"eth0 0.0.0.0/0 via 10.0.2.2"}, routes); diff != "" {
		t.Errorf("routes after the static Spec (-want +got):\n%s", diff)
	}
}

// TestControllerLeaseLeavesClaims: while a runner holds a lease, an address and
// a route the Spec claims too are the Spec's: bound neither gives them the
// lease's lifetime nor replaces the route, and when the lease ends (Close
// here) lost leaves them.
func TestControllerLeaseLeavesClaims(t *testing.T) {
	f := newFakeKernel("eth0")
	c, _, _ := newFakeController(t, f)
	spec := Spec{Interfaces: []Interface{{Name: "eth0", DHCP: true,
		Addresses: []netip.Prefix{pfx("10.0.2.15/24")},
		Routes:    []Route{{Dst: pfx("0.0.0.0/0"), Gateway: ip("10.0.2.2"), Metric: dhcpRouteMetric}}}}}
	if err := c.Apply(context.Background(), spec); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	_, addrs, routes := fakeState(f)
	if diff := cmp.Diff([]string{"10.0.2.15/24"}, addrs["eth0"]); diff != "" {
		t.Errorf("eth0 (-want +got):\n%s", diff)
	}
	if got := dynamicAddrs(f, "eth0"); len(got) != 0 {
		t.Errorf("the lease gave the claimed address a lifetime: %v", got)
	}
	if diff := cmp.Diff([]string{"eth0 0.0.0.0/0 via 10.0.2.2"}, routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if _, ok := c.Leases()["eth0"]; !ok {
		t.Error("no lease on eth0")
	}
	c.Close()
	_, addrs, routes = fakeState(f)
	if diff := cmp.Diff([]string{"10.0.2.15/24"}, addrs["eth0"]); diff != "" {
		t.Errorf("eth0 after Close (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"eth0 0.0.0.0/0 via 10.0.2.2"}, routes); diff != "" {
		t.Errorf("routes after Close (-want +got):\n%s", diff)
	}
}

// TestFakeKernelSecondaries pins the kernel behaviour the controller tests
// rely on: deleting a subnet's primary IPv4 address deletes its secondaries
// and the routes through them unless promote_secondaries is set.
func TestFakeKernelSecondaries(t *testing.T) {
	for _, tt := range []struct {
		name       string
		promote    string // the key set to 1, if any
		wantAddrs  []string
		wantRoutes []string
	}{
		{"no promotion", "", nil, nil},
		{"all", promoteKey("all"), []string{"10.0.2.20/24"}, []string{"eth0 0.0.0.0/0 via 10.0.2.2"}},
		{"on the link", promoteKey("eth0"), []string{"10.0.2.20/24"}, []string{"eth0 0.0.0.0/0 via 10.0.2.2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKernel("eth0")
			if tt.promote != "" {
				if err := f.SetSysctl(tt.promote, "1"); err != nil {
					t.Fatal(err)
				}
			}
			eth0 := f.byName("eth0")
			for _, p := range []string{"10.0.2.15/24", "10.0.2.20/24", "192.0.2.1/24"} {
				if err := f.AddrAdd(eth0, &netlink.Addr{IPNet: toIPNet(pfx(p))}); err != nil {
					t.Fatal(err)
				}
			}
			routes := []*netlink.Route{
				{LinkIndex: eth0.Attrs().Index, Dst: toIPNet(pfx("0.0.0.0/0")), Gw: ip("10.0.2.2").AsSlice(), Protocol: RouteProtocol},
				{LinkIndex: eth0.Attrs().Index, Dst: toIPNet(pfx("198.51.100.0/24")), Src: ip("10.0.2.15").AsSlice(), Protocol: RouteProtocol},
			}
			for _, r := range routes {
				if err := f.RouteReplace(r); err != nil {
					t.Fatal(err)
				}
			}
			// A primary of another subnet keeps the link's IPv4 routes
			// alive; remove it first, then the primary of 10.0.2.0/24.
			for _, p := range []string{"192.0.2.1/24", "10.0.2.15/24"} {
				if err := f.AddrDel(eth0, &netlink.Addr{IPNet: toIPNet(pfx(p))}); err != nil {
					t.Fatal(err)
				}
			}
			_, addrs, got := fakeState(f)
			if diff := cmp.Diff(tt.wantAddrs, addrs["eth0"]); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRoutes, got); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReconcileMarksUnmarkedLink: a bond of the Spec's name and mode without
// an alias (Kiln made it and stopped before marking it, or an older Kiln made
// it) is marked, once, and so removed when the Spec drops it.
func TestReconcileMarksUnmarkedLink(t *testing.T) {
	f := newFakeKernel("eth1")
	b := netlink.NewLinkBond(netlink.LinkAttrs{Name: "bond0"})
	b.Mode = netlink.BOND_MODE_ACTIVE_BACKUP
	if err := f.LinkAdd(b); err != nil {
		t.Fatal(err)
	}
	k := Counting(f)
	r := NewReconciler(k, testLog(t))
	spec := Spec{Interfaces: []Interface{{Name: "bond0", Bond: &Bond{Mode: config.BondActiveBackup, Members: []string{"eth1"}}}}}
	if _, err := r.Reconcile(spec); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if !managedLink(f.byName("bond0")) {
		t.Fatal("bond0 is not marked as Kiln's")
	}
	before := k.Writes()
	if _, err := r.Reconcile(spec); err != nil {
		t.Fatal(err)
	}
	if n := k.Writes() - before; n != 0 {
		t.Errorf("second Reconcile made %d writes, want 0", n)
	}
	if _, err := r.Reconcile(Spec{Interfaces: []Interface{{Name: "eth1"}}}); err != nil {
		t.Fatal(err)
	}
	links, _, _ := fakeState(f)
	if slices.ContainsFunc(links, func(l fakeLink) bool { return l.Name == "bond0" }) {
		t.Error("bond0 still exists after it left the Spec")
	}
}

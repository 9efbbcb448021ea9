package networking

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/machined/config"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// fakeState is what a test compares: links with kind, master, MTU and up,
// addresses and Kiln's routes.
type fakeLink struct {
	Name, Type, Master, Parent string
	VLAN                       int
	BondMode                   string
	MTU                        int
	Up, Managed                bool
}

func fakeState(f *fakeKernel) (links []fakeLink, addrs map[string][]string, routes []string) {
	names := map[int]string{}
	for _, l := range f.links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs = map[string][]string{}
	for _, l := range f.links {
		a := l.Attrs()
		fl := fakeLink{Name: a.Name, Type: l.Type(), Master: names[a.MasterIndex], Parent: names[a.ParentIndex],
			MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, Managed: managedLink(l)}
		switch v := l.(type) {
		case *netlink.Vlan:
			fl.VLAN = v.VlanId
		case *netlink.Bond:
			fl.BondMode = v.Mode.String()
		}
		links = append(links, fl)
		for _, ad := range f.addrs[a.Index] {
			addrs[a.Name] = append(addrs[a.Name], ad.IPNet.String())
		}
	}
	for _, r := range f.routes {
		k := keyOf(r)
		s := names[r.LinkIndex] + " " + k.dst.String()
		if k.gateway.IsValid() {
			s += " via " + k.gateway.String()
		}
		if k.source.IsValid() {
			s += " src " + k.source.String()
		}
		if r.Protocol != RouteProtocol {
			s += " (foreign)"
		}
		routes = append(routes, s)
	}
	slices.Sort(routes)
	return links, addrs, routes
}

// TestReconcileVLANBondIdempotent drives the reconciler through a fake kernel
// (the build host's kernel has neither VLANs nor bonds): VLANs and bonds are
// created and marked, members enslaved, MTU and up/down set, selectors by MAC
// and driver resolved; a second pass writes nothing; a changed Spec removes
// what it no longer asks for and leaves foreign links, addresses and routes.
func TestReconcileVLANBondIdempotent(t *testing.T) {
	f := newFakeKernel("eth0", "eth1", "eth2", "eth3", "eth4")
	f.drivers["eth3"] = "e1000e"
	// Not Kiln's: an operator's address and route on eth0 and a VLAN of its own.
	eth0 := f.byName("eth0")
	if err := f.AddrAdd(eth0, &netlink.Addr{IPNet: toIPNet(pfx("198.51.100.99/24"))}); err != nil {
		t.Fatal(err)
	}
	f.routes = append(f.routes, netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: toIPNet(pfx("198.51.100.0/24")), Protocol: 2})
	if err := f.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth0.99", ParentIndex: eth0.Attrs().Index}, VlanId: 99}); err != nil {
		t.Fatal(err)
	}

	k := Counting(f)
	r := NewReconciler(k, nil)
	first := Spec{Interfaces: []Interface{
		{Name: "eth0", MTU: 9000, Addresses: []netip.Prefix{pfx("10.0.0.2/24")},
			VLANs: []VLAN{{ID: 10, Addresses: []netip.Prefix{pfx("10.10.0.2/24")},
				Routes: []Route{{Dst: pfx("10.20.0.0/16"), Gateway: ip("10.10.0.1"), Metric: 50}}}}},
		{Name: "bond0", Bond: &Bond{Mode: config.BondActiveBackup, Members: []string{"eth1", "eth2"}},
			Addresses: []netip.Prefix{pfx("192.0.2.2/24"), pfx("2001:db8::2/64")},
			Routes: []Route{
				{Dst: pfx("0.0.0.0/0"), Gateway: ip("192.0.2.1"), Source: ip("192.0.2.2")},
				{Dst: pfx("::/0"), Gateway: ip("2001:db8::1")},
			}},
		{Driver: "e1000e", Addresses: []netip.Prefix{pfx("203.0.113.2/24")}},
		{HardwareAddr: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 5}, Down: true},
	}}
	if _, err := r.Reconcile(first); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	links, addrs, routes := fakeState(f)
	wantLinks := []fakeLink{
		{Name: "lo", Type: "device", MTU: 65536, Up: true},
		{Name: "eth0", Type: "device", MTU: 9000, Up: true},
		{Name: "eth1", Type: "device", Master: "bond0", MTU: 1500, Up: true},
		{Name: "eth2", Type: "device", Master: "bond0", MTU: 1500, Up: true},
		{Name: "eth3", Type: "device", MTU: 1500, Up: true},
		{Name: "eth4", Type: "device", MTU: 1500},
		{Name: "eth0.99", Type: "vlan", Parent: "eth0", VLAN: 99, MTU: 1500},
		{Name: "bond0", Type: "bond", BondMode: "active-backup", MTU: 1500, Up: true, Managed: true},
		{Name: "eth0.10", Type: "vlan", Parent: "eth0", VLAN: 10, MTU: 1500, Up: true, Managed: true},
	}
	if diff := cmp.Diff(wantLinks, links); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
	wantAddrs := map[string][]string{
		"eth0":    {"198.51.100.99/24", "10.0.0.2/24"},
		"eth0.10": {"10.10.0.2/24"},
		"bond0":   {"192.0.2.2/24", "2001:db8::2/64"},
		"eth3":    {"203.0.113.2/24"},
	}
	if diff := cmp.Diff(wantAddrs, addrs); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{
		"bond0 0.0.0.0/0 via 192.0.2.1 src 192.0.2.2",
		"bond0 ::/0 via 2001:db8::1",
		"eth0 198.51.100.0/24 (foreign)",
		"eth0.10 10.20.0.0/16 via 10.10.0.1",
	}
	if diff := cmp.Diff(wantRoutes, routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}

	before := k.Writes()
	if _, err := r.Reconcile(first); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if n := k.Writes() - before; n != 0 {
		t.Errorf("second Reconcile made %d writes, want 0", n)
	}

	// Bond mode changed (the bond is made again), eth2 leaves it, the VLAN
	// and eth3's entry go, eth4 comes up.
	second := Spec{Interfaces: []Interface{
		{Name: "eth0", Addresses: []netip.Prefix{pfx("10.0.0.2/24")}},
		{Name: "bond0", Bond: &Bond{Mode: config.Bond8023AD, Members: []string{"eth1"}},
			Addresses: []netip.Prefix{pfx("192.0.2.2/24")}},
		{Name: "eth4"},
	}}
	if _, err := r.Reconcile(second); err != nil {
		t.Fatalf("Reconcile second: %v", err)
	}
	links, addrs, routes = fakeState(f)
	wantLinks = []fakeLink{
		{Name: "lo", Type: "device", MTU: 65536, Up: true},
		{Name: "eth0", Type: "device", MTU: 9000, Up: true},
		{Name: "eth1", Type: "device", Master: "bond0", MTU: 1500, Up: true},
		{Name: "eth2", Type: "device", MTU: 1500, Up: true}, // released, left as it was
		{Name: "eth3", Type: "device", MTU: 1500, Up: true},
		{Name: "eth4", Type: "device", MTU: 1500, Up: true},
		{Name: "eth0.99", Type: "vlan", Parent: "eth0", VLAN: 99, MTU: 1500},
		{Name: "bond0", Type: "bond", BondMode: "802.3ad", MTU: 1500, Up: true, Managed: true},
	}
	if diff := cmp.Diff(wantLinks, links); diff != "" {
		t.Errorf("links after the second Spec (-want +got):\n%s", diff)
	}
	wantAddrs = map[string][]string{
		"eth0":  {"198.51.100.99/24", "10.0.0.2/24"},
		"bond0": {"192.0.2.2/24"},
	}
	if diff := cmp.Diff(wantAddrs, addrs); diff != "" {
		t.Errorf("addresses after the second Spec (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"eth0 198.51.100.0/24 (foreign)"}, routes); diff != "" {
		t.Errorf("routes after the second Spec (-want +got):\n%s", diff)
	}
	before = k.Writes()
	if _, err := r.Reconcile(second); err != nil {
		t.Fatal(err)
	}
	if n := k.Writes() - before; n != 0 {
		t.Errorf("repeated second Spec made %d writes, want 0", n)
	}
}

func TestVLANName(t *testing.T) {
	for _, tt := range []struct {
		parent string
		id     int
		want   string
	}{
		{"eth0", 10, "eth0.10"},
		{"enp0s31f6", 4094, "enp0s31f6.4094"},
		{"enx525400123456", 100, "enx52540012.100"},
	} {
		if got := vlanName(tt.parent, tt.id); got != tt.want || len(got) > maxLinkName {
			t.Errorf("vlanName(%q, %d) = %q, want %q", tt.parent, tt.id, got, tt.want)
		}
	}
}

// TestReconcileForeignLinkOfConfiguredName: a bond of the configured name that Kiln
// did not make (as the kernel's built-in bonding made bond0 before the boards set
// bonding.max_bonds=0) and in another mode is left alone, and the reconciler says
// so; one in the configured mode is taken over (marked).
func TestReconcileForeignLinkOfConfiguredName(t *testing.T) {
	for _, tt := range []struct {
		name        string
		mode        netlink.BondMode
		wantMode    string
		wantManaged bool
		wantWarning bool
	}{
		{"another mode", netlink.BOND_MODE_BALANCE_RR, "balance-rr", false, true},
		{"the configured mode", netlink.BOND_MODE_ACTIVE_BACKUP, "active-backup", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKernel("eth0", "eth1")
			if err := f.LinkAdd(&netlink.Bond{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}, Mode: tt.mode}); err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			r := NewReconciler(f, slog.New(slog.NewTextHandler(&logs, nil)))
			spec := Spec{Interfaces: []Interface{
				{Name: "bond0", Bond: &Bond{Mode: config.BondActiveBackup, Members: []string{"eth0", "eth1"}}},
			}}
			if _, err := r.Reconcile(spec); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			links, _, _ := fakeState(f)
			i := slices.IndexFunc(links, func(l fakeLink) bool { return l.Name == "bond0" })
			if i < 0 {
				t.Fatalf("no bond0 after Reconcile: %+v", links)
			}
			if got := links[i]; got.BondMode != tt.wantMode || got.Managed != tt.wantManaged {
				t.Errorf("bond0 = mode %s, Kiln's %v; want mode %s, Kiln's %v", got.BondMode, got.Managed, tt.wantMode, tt.wantManaged)
			}
			warnings := func() int { return strings.Count(logs.String(), "level=WARN msg=\"a link of the configured name") }
			if got, want := warnings(), b2i(tt.wantWarning); got != want {
				t.Fatalf("warnings logged = %d, want %d; log:\n%s", got, want, logs.String())
			}
			// The warning comes once for as long as nothing changes ...
			if _, err := r.Reconcile(spec); err != nil {
				t.Fatalf("second Reconcile: %v", err)
			}
			if got, want := warnings(), b2i(tt.wantWarning); got != want {
				t.Errorf("warnings logged after a second Reconcile = %d, want %d; log:\n%s", got, want, logs.String())
			}
			if !tt.wantWarning {
				return
			}
			// ... and again when the link is made anew.
			if err := f.LinkDel(f.byName("bond0")); err != nil {
				t.Fatal(err)
			}
			if err := f.LinkAdd(&netlink.Bond{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}, Mode: tt.mode}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Reconcile(spec); err != nil {
				t.Fatalf("third Reconcile: %v", err)
			}
			if got := warnings(); got != 2 {
				t.Errorf("warnings logged after the link was made anew = %d, want 2; log:\n%s", got, logs.String())
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

package networking

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/netnstest"
)

// hang protects the tests against deadlocks; it is not a timing assertion.
const hang = 60 * time.Second

// Addresses from the documentation ranges (RFC 5737, RFC 3849); they exist only inside
// the test's namespaces.
var (
	serverIP = net.IPv4(192, 0, 2, 1)
	leaseIP  = net.IPv4(192, 0, 2, 10)
	dnsIP    = net.IPv4(192, 0, 2, 53)
)

// dhcpServer answers DISCOVER and REQUEST with one lease and counts renewals.
type dhcpServer struct {
	lease    time.Duration
	mu       sync.Mutex
	renew    int      // REQUESTs from a client that already has the address
	released []net.IP // the addresses of RELEASEs
}

func (s *dhcpServer) releases() []net.IP {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.released)
}

func (s *dhcpServer) renewals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renew
}

func (s *dhcpServer) handle(t *testing.T) server4.Handler {
	return func(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
		var typ dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
			if m.ClientIPAddr.Equal(leaseIP) {
				s.mu.Lock()
				s.renew++
				s.mu.Unlock()
			}
		case dhcpv4.MessageTypeRelease:
			s.mu.Lock()
			s.released = append(s.released, m.ClientIPAddr)
			s.mu.Unlock()
			return
		default:
			return
		}
		resp, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(leaseIP),
			dhcpv4.WithServerIP(serverIP),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(serverIP),
			dhcpv4.WithDNS(dnsIP),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.lease)),
		)
		if err != nil {
			t.Errorf("DHCP reply: %v", err)
			return
		}
		if _, err := conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}); err != nil {
			t.Errorf("DHCP reply: %v", err)
		}
	}
}

// vethToPeer makes a veth pair whose other end is in a new namespace, where it has
// serverIP and a DHCP server; it returns that namespace.
func vethToPeer(t *testing.T, name string, srv *dhcpServer) netns.NsHandle {
	t.Helper()
	peerName := name + "p"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peerName}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	peerNS := netnstest.PeerNS(t)
	peer, err := netlink.LinkByName(peerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(peerNS)); err != nil {
		t.Fatalf("move veth peer: %v", err)
	}
	netnstest.Do(t, peerNS, func() {
		for _, n := range []string{"lo", peerName} {
			if err := link.SetUp(n); err != nil {
				t.Fatal(err)
			}
		}
		if err := link.ReplaceAddr(peerName, link.Addr{Prefix: netip.MustParsePrefix("192.0.2.1/24")}); err != nil {
			t.Fatal(err)
		}
		conn, err := server4.NewIPv4UDPConn(peerName, &net.UDPAddr{Port: dhcpv4.ServerPort})
		if err != nil {
			t.Fatalf("DHCP server socket: %v", err)
		}
		s, err := server4.NewServer("", nil, srv.handle(t), server4.WithConn(conn))
		if err != nil {
			t.Fatalf("DHCP server: %v", err)
		}
		go s.Serve()
		t.Cleanup(func() { s.Close() })
	})
	return peerNS
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func hasPrefix(t *testing.T, name string, p netip.Prefix) bool {
	t.Helper()
	ps, err := link.Addrs(name)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ps, p)
}

func hasRoute(t *testing.T, name string, dst netip.Prefix, gw netip.Addr) bool {
	t.Helper()
	rs, err := link.Routes(name)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(rs, func(r link.Route) bool { return r.Dst == dst && r.Gateway == gw })
}

// TestDHCPOnFirstLinkWithCarrier: with no interface named, the controller brings the
// links up, takes the one with a carrier, gets a lease from a real DHCP server at the
// other end of a veth pair, installs address, default route and resolv.conf, renews
// the lease in the background and removes it all on Close.
func TestDHCPOnFirstLinkWithCarrier(t *testing.T) {
	if netnstest.InNetNS(t, "creates veth pairs and runs a DHCP server") {
		return
	}
	// A link without a carrier (its peer, in another namespace, stays down) comes
	// first and must not be chosen.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kilndead"}, PeerName: "kilndeadp"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	deadPeer, err := netlink.LinkByName("kilndeadp")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(deadPeer, int(netnstest.PeerNS(t))); err != nil {
		t.Fatalf("move veth peer: %v", err)
	}
	srv := &dhcpServer{lease: 4 * time.Second}
	vethToPeer(t, "kiln0", srv)

	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	c := New(Options{ResolvConf: resolvConf, DHCPRetry: 200 * time.Millisecond, Log: testLog(t)})
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := c.Apply(ctx, Spec{Hostname: "kiln-test"}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !c.WaitAddress(ctx) {
		t.Fatal("no address from DHCP")
	}
	lp := netip.MustParsePrefix("192.0.2.10/24")
	if !hasPrefix(t, "kiln0", lp) {
		t.Errorf("kiln0 lacks the leased %s", lp)
	}
	if hasPrefix(t, "kilndead", lp) {
		t.Error("the link without a carrier got the lease")
	}
	if !hasRoute(t, "kiln0", netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.0.2.1")) {
		t.Error("no default route via 192.0.2.1 on kiln0")
	}
	b, err := os.ReadFile(resolvConf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "nameserver 192.0.2.53\n") {
		t.Errorf("resolv.conf = %q, want the DHCP nameserver", b)
	}
	if l, ok := c.Leases()["kiln0"]; !ok || l.Router != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("Leases() = %+v", c.Leases())
	}

	// T1 is 2 s: the client renews by itself.
	for srv.renewals() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the lease was never renewed")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !hasPrefix(t, "kiln0", lp) {
		t.Errorf("kiln0 lost %s after the renewal", lp)
	}

	// The same Spec again keeps the lease (no new DISCOVER round needed).
	if err := c.Apply(ctx, Spec{Hostname: "kiln-test"}); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if !hasPrefix(t, "kiln0", lp) {
		t.Error("a repeated Apply dropped the lease")
	}

	c.Close()
	if hasPrefix(t, "kiln0", lp) {
		t.Error("Close left the leased address")
	}
}

// TestStaticConverges: named interfaces get their addresses, routes, MTU and
// nameservers; applying another Spec removes what the first put there and nothing
// else; applying the same Spec twice changes nothing.
func TestStaticConverges(t *testing.T) {
	if netnstest.InNetNS(t, "creates links and routes") {
		return
	}
	// veth pairs with both ends here stand in for NICs (the build host's kernel
	// has no dummy links).
	for _, n := range []string{"kilnd0", "kilnd1"} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			t.Fatalf("add veth: %v", err)
		}
		if err := link.SetUp(n + "p"); err != nil {
			t.Fatal(err)
		}
	}
	d1, err := link.ByName("kilnd1")
	if err != nil {
		t.Fatal(err)
	}
	// An address the controller does not own must survive every Apply.
	foreign := netip.MustParsePrefix("198.51.100.99/24")
	if err := link.ReplaceAddr("kilnd0", link.Addr{Prefix: foreign}); err != nil {
		t.Fatal(err)
	}

	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	c := New(Options{ResolvConf: resolvConf, Log: testLog(t)})
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	a1 := netip.MustParsePrefix("198.51.100.2/24")
	a6 := netip.MustParsePrefix("2001:db8::2/64")
	dst := netip.MustParsePrefix("203.0.113.0/24")
	gw := netip.MustParseAddr("198.51.100.1")
	first := Spec{
		Interfaces: []Interface{
			{Name: "kilnd0", Addresses: []netip.Prefix{a1, a6}, MTU: 1400,
				Routes: []Route{{Dst: dst, Gateway: gw}}},
			// Selected by MAC address.
			{HardwareAddr: d1.HardwareAddr, Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24")}},
			// Not on this node: skipped, not an error.
			{Name: "nosuchlink", Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.8/24")}},
		},
		Nameservers: []netip.Addr{netip.MustParseAddr("198.51.100.53")},
	}
	for i := range 2 {
		if err := c.Apply(ctx, first); err != nil {
			t.Fatalf("Apply #%d: %v", i+1, err)
		}
		for _, p := range []netip.Prefix{a1, a6, foreign} {
			if !hasPrefix(t, "kilnd0", p) {
				t.Errorf("Apply #%d: kilnd0 lacks %s", i+1, p)
			}
		}
		if !hasPrefix(t, "kilnd1", netip.MustParsePrefix("192.0.2.7/24")) {
			t.Errorf("Apply #%d: kilnd1 (by MAC) lacks its address", i+1)
		}
		if !hasRoute(t, "kilnd0", dst, gw) {
			t.Errorf("Apply #%d: no route to %s via %s", i+1, dst, gw)
		}
		l, err := link.ByName("kilnd0")
		if err != nil {
			t.Fatal(err)
		}
		if !l.Up {
			t.Errorf("Apply #%d: kilnd0 is down", i+1)
		}
		if nl, _ := netlink.LinkByName("kilnd0"); nl.Attrs().MTU != 1400 {
			t.Errorf("Apply #%d: MTU %d, want 1400", i+1, nl.Attrs().MTU)
		}
	}
	b, _ := os.ReadFile(resolvConf)
	if !strings.Contains(string(b), "nameserver 198.51.100.53\n") {
		t.Errorf("resolv.conf = %q", b)
	}

	a2 := netip.MustParsePrefix("198.51.100.3/24")
	second := Spec{
		Interfaces:  []Interface{{Name: "kilnd0", Addresses: []netip.Prefix{a2}}},
		Nameservers: []netip.Addr{netip.MustParseAddr("198.51.100.54")},
	}
	if err := c.Apply(ctx, second); err != nil {
		t.Fatalf("Apply second: %v", err)
	}
	got, err := link.Addrs("kilnd0")
	if err != nil {
		t.Fatal(err)
	}
	var v4 []netip.Prefix
	for _, p := range got {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		}
	}
	slices.SortFunc(v4, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if diff := cmp.Diff([]netip.Prefix{a2, foreign}, v4, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("kilnd0 IPv4 addresses after the second Spec (-want +got):\n%s", diff)
	}
	if hasPrefix(t, "kilnd0", a6) {
		t.Errorf("kilnd0 kept %s", a6)
	}
	if hasRoute(t, "kilnd0", dst, gw) {
		t.Error("the route of the first Spec is still there")
	}
	if hasPrefix(t, "kilnd1", netip.MustParsePrefix("192.0.2.7/24")) {
		t.Error("kilnd1 kept the address of the first Spec")
	}
	b, _ = os.ReadFile(resolvConf)
	if !strings.Contains(string(b), "nameserver 198.51.100.54\n") || strings.Contains(string(b), "198.51.100.53") {
		t.Errorf("resolv.conf after the second Spec = %q", b)
	}
}

// TestReconcileIdempotentInKernel: the reconciler against the real kernel in a
// private namespace: addresses and routes (metric, source, IPv6) converge, a
// second pass makes zero netlink writes, a changed Spec removes only what Kiln
// put there.
func TestReconcileIdempotentInKernel(t *testing.T) {
	if netnstest.InNetNS(t, "creates links, addresses and routes") {
		return
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kilnr0"}, PeerName: "kilnr0p"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	if err := link.SetUp("kilnr0p"); err != nil {
		t.Fatal(err)
	}
	foreign := netip.MustParsePrefix("198.51.100.99/24")
	if err := link.ReplaceAddr("kilnr0", link.Addr{Prefix: foreign}); err != nil {
		t.Fatal(err)
	}
	if err := link.SetUp("kilnr0"); err != nil {
		t.Fatal(err)
	}
	foreignRoute := link.Route{Dst: netip.MustParsePrefix("198.18.0.0/16"), Gateway: netip.MustParseAddr("198.51.100.1")}
	if err := link.ReplaceRoute("kilnr0", foreignRoute); err != nil {
		t.Fatal(err)
	}
	k := Counting(NewNetlinkKernel(nil))
	r := NewReconciler(k, testLog(t))
	spec := Spec{Interfaces: []Interface{{Name: "kilnr0", MTU: 1400,
		Addresses: []netip.Prefix{pfx("192.0.2.2/24"), pfx("2001:db8::2/64")},
		Routes: []Route{
			{Dst: pfx("0.0.0.0/0"), Gateway: ip("192.0.2.1"), Source: ip("192.0.2.2"), Metric: 100},
			{Dst: pfx("203.0.113.0/24"), Metric: 20},
			{Dst: pfx("2001:db8:1::/48"), Gateway: ip("2001:db8::1")},
		}}}}
	if _, err := r.Reconcile(spec); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	first := k.Writes()
	if _, err := r.Reconcile(spec); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	t.Logf("first Reconcile: %d netlink writes", first)
	if n := k.Writes() - first; n != 0 {
		t.Errorf("second Reconcile made %d netlink writes, want 0 (first made %d)", n, first)
	}
	st, err := ReadStatus(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kiln []string
	for _, rt := range st.Routes {
		if rt.Protocol == "kiln" {
			kiln = append(kiln, fmt.Sprintf("%s %s via %v src %v metric %d", rt.Link, rt.Dst, rt.Gateway, rt.Source, rt.Metric))
		}
	}
	slices.Sort(kiln)
	want := []string{
		"kilnr0 0.0.0.0/0 via 192.0.2.1 src 192.0.2.2 metric 100",
		"kilnr0 2001:db8:1::/48 via 2001:db8::1 src invalid IP metric 1024",
		"kilnr0 203.0.113.0/24 via invalid IP src invalid IP metric 20",
	}
	if diff := cmp.Diff(want, kiln); diff != "" {
		t.Errorf("Kiln's routes (-want +got):\n%s", diff)
	}
	for _, p := range []netip.Prefix{pfx("192.0.2.2/24"), pfx("2001:db8::2/64"), foreign} {
		if !hasPrefix(t, "kilnr0", p) {
			t.Errorf("kilnr0 lacks %s", p)
		}
	}

	// Everything but one address out: the foreign address and route stay.
	small := Spec{Interfaces: []Interface{{Name: "kilnr0", Addresses: []netip.Prefix{pfx("192.0.2.3/24")}}}}
	if _, err := r.Reconcile(small); err != nil {
		t.Fatalf("Reconcile small: %v", err)
	}
	for _, p := range []netip.Prefix{pfx("192.0.2.2/24"), pfx("2001:db8::2/64")} {
		if hasPrefix(t, "kilnr0", p) {
			t.Errorf("kilnr0 kept %s", p)
		}
	}
	if !hasPrefix(t, "kilnr0", foreign) || !hasPrefix(t, "kilnr0", pfx("192.0.2.3/24")) {
		t.Error("kilnr0 lost the foreign address or lacks the new one")
	}
	if !hasRoute(t, "kilnr0", foreignRoute.Dst, foreignRoute.Gateway) {
		t.Error("the foreign route was removed")
	}
	st, _ = ReadStatus(k, nil)
	for _, rt := range st.Routes {
		if rt.Protocol == "kiln" {
			t.Errorf("Kiln route left: %+v", rt)
		}
	}
}

// TestVLANAndBondInKernel creates a VLAN and an active-backup bond on veth
// links. The build host's kernel is built without VLANs and bonding; there it
// skips (the fake kernel test covers the logic), on CI's Debian kernel it runs.
func TestVLANAndBondInKernel(t *testing.T) {
	if netnstest.InNetNS(t, "creates VLAN and bond links") {
		return
	}
	for _, n := range []string{"kilnv0", "kilnb1", "kilnb2"} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			t.Fatalf("add veth: %v", err)
		}
		if err := link.SetUp(n + "p"); err != nil {
			t.Fatal(err)
		}
	}
	probe := netlink.NewLinkBond(netlink.LinkAttrs{Name: "kilnprobe"})
	if err := netlink.LinkAdd(probe); err != nil {
		t.Skipf("needs a kernel with CONFIG_BONDING and CONFIG_VLAN_8021Q: %v", err)
	}
	netlink.LinkDel(probe)
	parent, _ := netlink.LinkByName("kilnv0")
	vprobe := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "kilnvprobe", ParentIndex: parent.Attrs().Index}, VlanId: 4000}
	if err := netlink.LinkAdd(vprobe); err != nil {
		t.Skipf("needs a kernel with CONFIG_VLAN_8021Q: %v", err)
	}
	netlink.LinkDel(vprobe)

	k := Counting(NewNetlinkKernel(nil))
	r := NewReconciler(k, testLog(t))
	spec := Spec{Interfaces: []Interface{
		{Name: "kilnv0", VLANs: []VLAN{{ID: 10, Addresses: []netip.Prefix{pfx("192.0.2.2/24")}}}},
		{Name: "kilnbond0", Bond: &Bond{Mode: "active-backup", Members: []string{"kilnb1", "kilnb2"}},
			Addresses: []netip.Prefix{pfx("198.51.100.2/24")}},
	}}
	if _, err := r.Reconcile(spec); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	before := k.Writes()
	if _, err := r.Reconcile(spec); err != nil {
		t.Fatal(err)
	}
	if n := k.Writes() - before; n != 0 {
		t.Errorf("second Reconcile made %d writes, want 0", n)
	}
	if !hasPrefix(t, "kilnv0.10", pfx("192.0.2.2/24")) || !hasPrefix(t, "kilnbond0", pfx("198.51.100.2/24")) {
		t.Error("VLAN or bond lacks its address")
	}
	for _, m := range []string{"kilnb1", "kilnb2"} {
		l, _ := netlink.LinkByName(m)
		b, _ := netlink.LinkByName("kilnbond0")
		if l == nil || b == nil || l.Attrs().MasterIndex != b.Attrs().Index {
			t.Errorf("%s is not enslaved to kilnbond0", m)
		}
	}
	if _, err := r.Reconcile(Spec{Interfaces: []Interface{{Name: "kilnv0"}}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"kilnv0.10", "kilnbond0"} {
		if _, err := netlink.LinkByName(n); err == nil {
			t.Errorf("%s still exists after it left the Spec", n)
		}
	}
}

package networking

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-os/kiln/networking/netnstest"
)

// waitFor polls cond until it holds or ctx ends (hang protection, not a
// timing assertion).
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestDHCPReleaseOnRemoval: a link's lease is released (the server in the
// peer namespace sees a DHCPRELEASE for the leased address) and its address
// and routes removed when an Apply drops DHCP from the link, and again when
// the controller closes for a shutdown.
func TestDHCPReleaseOnRemoval(t *testing.T) {
	if netnstest.InNetNS(t, "creates a veth pair and runs a DHCP server") {
		return
	}
	srv := &dhcpServer{lease: time.Hour}
	vethToPeer(t, "kilnrel0", srv)
	c := New(Options{ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), DHCPRetry: 200 * time.Millisecond, Log: testLog(t)})
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	lp := netip.MustParsePrefix("192.0.2.10/24")
	def := netip.MustParsePrefix("0.0.0.0/0")
	gw := netip.MustParseAddr("192.0.2.1")
	withDHCP := Spec{Interfaces: []Interface{{Name: "kilnrel0", DHCP: true}}}
	if err := c.Apply(ctx, withDHCP); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitFor(ctx, t, "the lease", func() bool { return hasPrefix(t, "kilnrel0", lp) })
	if !hasRoute(t, "kilnrel0", def, gw) {
		t.Fatal("no default route from the lease")
	}
	if n := len(c.LeaseStatus()); n != 1 {
		t.Fatalf("LeaseStatus() has %d leases, want 1", n)
	}

	if err := c.Apply(ctx, Spec{Interfaces: []Interface{{Name: "kilnrel0"}}}); err != nil {
		t.Fatalf("Apply without DHCP: %v", err)
	}
	waitFor(ctx, t, "a DHCPRELEASE", func() bool { return len(srv.releases()) > 0 })
	if got := srv.releases(); !got[0].Equal(leaseIP) {
		t.Errorf("DHCPRELEASE for %v, want %v", got[0], leaseIP)
	}
	if hasPrefix(t, "kilnrel0", lp) {
		t.Error("the released address is still on the link")
	}
	if hasRoute(t, "kilnrel0", def, gw) {
		t.Error("the released lease's default route is still there")
	}
	if ls := c.LeaseStatus(); len(ls) != 0 {
		t.Errorf("LeaseStatus() after the release = %+v, want none", ls)
	}

	// DHCP again, then a shutdown: Close releases too.
	if err := c.Apply(ctx, withDHCP); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitFor(ctx, t, "the second lease", func() bool { return hasPrefix(t, "kilnrel0", lp) })
	c.Close()
	waitFor(ctx, t, "a DHCPRELEASE on Close", func() bool { return len(srv.releases()) > 1 })
	if hasPrefix(t, "kilnrel0", lp) {
		t.Error("Close left the leased address")
	}
}

package networking

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/netnstest"
)

// Documentation prefix (RFC 3849) for the IPv6 tests; it exists only inside
// the test's namespaces.
var (
	ra6Prefix = netip.MustParsePrefix("2001:db8:1::/64")
	lease6IP  = netip.MustParseAddr("2001:db8:1::100")
	dns6IP    = netip.MustParseAddr("2001:db8:1::53")
)

// dhcp6Server leases lease6IP and names dns6IP, and records RELEASEs.
type dhcp6Server struct {
	mu       sync.Mutex
	released []netip.Addr
}

func (s *dhcp6Server) releases() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.released)
}

func (s *dhcp6Server) handle(t *testing.T) server6.Handler {
	serverID := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	return func(conn net.PacketConn, peer net.Addr, d dhcpv6.DHCPv6) {
		m, ok := d.(*dhcpv6.Message)
		if !ok {
			return
		}
		addr := dhcpv6.OptIAAddress{IPv6Addr: lease6IP.AsSlice(), PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour}
		ia := &dhcpv6.OptIANA{T1: 30 * time.Minute, T2: 50 * time.Minute}
		if req := m.Options.OneIANA(); req != nil {
			ia.IaId = req.IaId
		}
		ia.Options.Add(&addr)
		mods := []dhcpv6.Modifier{
			dhcpv6.WithServerID(serverID),
			dhcpv6.WithOption(ia),
			dhcpv6.WithDNS(dns6IP.AsSlice()),
			dhcpv6.WithDomainSearchList("v6.example"),
		}
		var resp *dhcpv6.Message
		var err error
		switch m.MessageType {
		case dhcpv6.MessageTypeSolicit:
			resp, err = dhcpv6.NewAdvertiseFromSolicit(m, mods...)
		case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
			resp, err = dhcpv6.NewReplyFromMessage(m, mods...)
		case dhcpv6.MessageTypeRelease:
			if rel := m.Options.OneIANA(); rel != nil {
				if a := rel.Options.OneAddress(); a != nil {
					ip, _ := netip.AddrFromSlice(a.IPv6Addr)
					s.mu.Lock()
					s.released = append(s.released, ip)
					s.mu.Unlock()
				}
			}
			resp, err = dhcpv6.NewReplyFromMessage(m, dhcpv6.WithServerID(serverID))
		default:
			return
		}
		if err != nil {
			t.Errorf("DHCPv6 reply: %v", err)
			return
		}
		if _, err := conn.WriteTo(resp.ToBytes(), peer); err != nil {
			t.Errorf("DHCPv6 reply: %v", err)
		}
	}
}

// routerPeer makes a veth pair whose other end, in a new namespace, is a
// router: it advertises ra6Prefix (on-link, autonomous, managed) every few
// hundred milliseconds and runs a DHCPv6 server.
func routerPeer(t *testing.T, name string, srv *dhcp6Server) {
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
	// Both ends up: the router end gets its link-local address only with a carrier.
	if err := link.SetUp(name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	var conn *ndp.Conn
	netnstest.Do(t, peerNS, func() {
		for _, n := range []string{"lo", peerName} {
			if err := link.SetUp(n); err != nil {
				t.Fatal(err)
			}
		}
		s, err := server6.NewServer(peerName, nil, srv.handle(t))
		if err != nil {
			t.Fatalf("DHCPv6 server: %v", err)
		}
		go s.Serve()
		t.Cleanup(func() { s.Close() })
		// The link-local address must pass DAD before ndp can bind it.
		if !waitLinkLocal(ctx, peerName) {
			t.Fatal("the router end has no link-local address")
		}
		ifi, err := net.InterfaceByName(peerName)
		if err != nil {
			t.Fatal(err)
		}
		if conn, _, err = ndp.Listen(ifi, ndp.LinkLocal); err != nil {
			t.Fatalf("NDP socket: %v", err)
		}
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done); conn.Close() })
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit: 64, ManagedConfiguration: true, OtherConfiguration: true,
		RouterLifetime: 30 * time.Minute,
		Options: []ndp.Option{&ndp.PrefixInformation{
			PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: 2 * time.Hour, PreferredLifetime: time.Hour, Prefix: ra6Prefix.Addr(),
		}},
	}
	go func() {
		for {
			if err := conn.WriteTo(ra, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
}

func readSysctl(t *testing.T, name, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", name, key))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestIPv6SLAACAndDHCPv6: with dhcp6 on a link the node accepts the peer
// router's advertisements (a SLAAC address in its /64 and a default route),
// takes an address and DNS servers by DHCPv6 (DNS reaching resolv.conf and
// the lease status), and, when dhcp6 is dropped, releases the DHCPv6 lease,
// removes its address and puts the link's sysctls back.
func TestIPv6SLAACAndDHCPv6(t *testing.T) {
	if netnstest.InNetNS(t, "creates a veth pair with an IPv6 router and DHCPv6 server in a peer namespace") {
		return
	}
	// A node forwards: accept_ra=1 would then ignore advertisements.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := &dhcp6Server{}
	routerPeer(t, "kiln6", srv)
	before := readSysctl(t, "kiln6", "accept_ra")

	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	c := New(Options{ResolvConf: resolvConf, DHCPRetry: 200 * time.Millisecond, Log: testLog(t)})
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := c.Apply(ctx, Spec{Interfaces: []Interface{{Name: "kiln6", DHCP6: true}}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := readSysctl(t, "kiln6", "accept_ra"); got != "2" {
		t.Errorf("accept_ra = %s, want 2", got)
	}
	dhcpAddr := netip.PrefixFrom(lease6IP, 128)
	slaac := func() bool {
		ps, err := link.Addrs("kiln6")
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Bits() == 64 && ra6Prefix.Contains(p.Addr()) })
	}
	waitFor(ctx, t, "a SLAAC address in "+ra6Prefix.String(), slaac)
	waitFor(ctx, t, "the DHCPv6 address", func() bool { return hasPrefix(t, "kiln6", dhcpAddr) })
	waitFor(ctx, t, "a default route from the advertisements", func() bool {
		rs, err := link.Routes("kiln6")
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(rs, func(r link.Route) bool { return r.Dst.Bits() == 0 && r.Dst.Addr().Is6() })
	})
	b, err := os.ReadFile(resolvConf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "nameserver "+dns6IP.String()+"\n") {
		t.Errorf("resolv.conf = %q, want the DHCPv6 nameserver", b)
	}
	if n := c.Names(); n.NameserverSource != SourceDHCP || !slices.Contains(n.Search, "v6.example") {
		t.Errorf("Names() = %+v, want DHCPv6's nameserver and search domain", n)
	}
	ls := c.LeaseStatus()
	if len(ls) != 1 || ls[0].Family != "ipv6" || ls[0].Addr != dhcpAddr || !slices.Contains(ls[0].DNS, dns6IP) || ls[0].Server == "" {
		t.Errorf("LeaseStatus() = %+v, want the DHCPv6 lease", ls)
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(st.Addresses, func(a AddressStatus) bool { return a.Prefix == dhcpAddr && a.Source == SourceDHCP }) {
		t.Errorf("Status() does not attribute %s to DHCP: %+v", dhcpAddr, st.Addresses)
	}

	if err := c.Apply(ctx, Spec{Interfaces: []Interface{{Name: "kiln6"}}}); err != nil {
		t.Fatalf("Apply without dhcp6: %v", err)
	}
	waitFor(ctx, t, "a DHCPv6 RELEASE", func() bool { return len(srv.releases()) > 0 })
	if got := srv.releases(); got[0] != lease6IP {
		t.Errorf("RELEASE for %v, want %v", got[0], lease6IP)
	}
	if hasPrefix(t, "kiln6", dhcpAddr) {
		t.Error("the released DHCPv6 address is still on the link")
	}
	if got := readSysctl(t, "kiln6", "accept_ra"); got != before {
		t.Errorf("accept_ra after dhcp6 left = %s, want %s as before", got, before)
	}
}

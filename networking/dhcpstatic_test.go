package networking

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/networking/netnstest"
)

// echo serves ln: every line comes back.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintln(c, sc.Text())
			}
		}()
	}
}

// roundTrip writes a line to c and reads it back.
func roundTrip(c net.Conn, line string) error {
	if err := c.SetDeadline(time.Now().Add(hang)); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(c, line); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("read %q, want %q", got, line)
	}
	return nil
}

// TestDHCPToStaticKeepsAddress is the live switch of a link from DHCP to
// static addressing that keeps the leased address (TestNetworkDHCPThenStaticLive
// on a QEMU node), in the kernel: the link got 192.0.2.10/24 by DHCP on an
// automatic Spec; a Spec with DHCP off, 192.0.2.10/24 and 192.0.2.20/24 (a
// secondary) and a default route is applied. The lease is released (the
// server sees the DHCPRELEASE) but the address stays, permanent and the
// config's; a TCP connection to it opened under DHCP lives on; the new
// address answers; the default route is Kiln's only; promote_secondaries is
// set; a repeated Apply writes nothing.
func TestDHCPToStaticKeepsAddress(t *testing.T) {
	if netnstest.InNetNS(t, "creates a veth pair and runs a DHCP server") {
		return
	}
	srv := &dhcpServer{lease: time.Hour}
	peerNS := vethToPeer(t, "kilnds0", srv)
	k := Counting(NewNetlinkKernel(nil))
	c := New(Options{Kernel: k, ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), DHCPRetry: 200 * time.Millisecond, Log: testLog(t)})
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	leased, second := pfx("192.0.2.10/24"), pfx("192.0.2.20/24")
	def, gw := pfx("0.0.0.0/0"), ip("192.0.2.1")
	if err := c.Apply(ctx, Spec{}); err != nil {
		t.Fatalf("Apply (DHCP): %v", err)
	}
	waitFor(ctx, t, "the lease", func() bool { return hasPrefix(t, "kilnds0", leased) })

	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echo(ln)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dial := func(addr netip.Addr) (conn net.Conn, err error) {
		netnstest.Do(t, peerNS, func() {
			var d net.Dialer
			conn, err = d.DialContext(ctx, "tcp", net.JoinHostPort(addr.String(), port))
		})
		return conn, err
	}
	// The client of apply-config, connected through the leased address.
	before, err := dial(leased.Addr())
	if err != nil {
		t.Fatalf("connect to the leased address: %v", err)
	}
	defer before.Close()
	if err := roundTrip(before, "under DHCP"); err != nil {
		t.Fatalf("round trip through the leased address: %v", err)
	}

	static := Spec{Interfaces: []Interface{{Name: "kilnds0",
		Addresses: []netip.Prefix{leased, second},
		Routes:    []Route{{Dst: def, Gateway: gw}}}}}
	if err := c.Apply(ctx, static); err != nil {
		t.Fatalf("Apply (static): %v", err)
	}
	waitFor(ctx, t, "a DHCPRELEASE", func() bool { return len(srv.releases()) > 0 })
	if got := srv.releases(); !got[0].Equal(leaseIP) {
		t.Errorf("DHCPRELEASE for %v, want %v", got[0], leaseIP)
	}
	if ls := c.Leases(); len(ls) != 0 {
		t.Errorf("Leases() after the switch = %v, want none", ls)
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Prefix]AddressStatus{}
	var defaults []RouteStatus
	for _, a := range st.Addresses {
		if a.Link == "kilnds0" && a.Prefix.Addr().Is4() {
			got[a.Prefix] = a
		}
	}
	for _, r := range st.Routes {
		if r.Link == "kilnds0" && r.Dst == def {
			defaults = append(defaults, r)
		}
	}
	if len(got) != 2 {
		t.Errorf("kilnds0's IPv4 addresses = %v, want %s and %s", got, leased, second)
	}
	for _, p := range []netip.Prefix{leased, second} {
		if a, ok := got[p]; !ok || a.Source != SourceConfig || a.Dynamic {
			t.Errorf("%s on kilnds0: %+v (present %v), want source config, permanent", p, a, ok)
		}
	}
	if len(defaults) != 1 || defaults[0].Gateway != gw || defaults[0].Protocol != "kiln" {
		t.Errorf("default routes on kilnds0 = %+v, want one, Kiln's, via %s", defaults, gw)
	}
	for _, name := range []string{"all", "default", "kilnds0"} {
		b, err := os.ReadFile(filepath.Join("/proc/sys", promoteKey(name)))
		if err != nil || strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s = %q, %v; want 1", promoteKey(name), b, err)
		}
	}

	if err := roundTrip(before, "after the switch"); err != nil {
		t.Errorf("the connection opened under DHCP broke: %v", err)
	}
	after, err := dial(second.Addr())
	if err != nil {
		t.Fatalf("connect to the new address: %v", err)
	}
	defer after.Close()
	if err := roundTrip(after, "to the secondary"); err != nil {
		t.Errorf("round trip through the new address: %v", err)
	}

	n := k.Writes()
	if err := c.Apply(ctx, static); err != nil {
		t.Fatalf("Apply (static, again): %v", err)
	}
	if w := k.Writes() - n; w != 0 {
		t.Errorf("a repeated Apply made %d writes, want 0", w)
	}
}

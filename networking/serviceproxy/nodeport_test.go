//go:build linux

package serviceproxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/networking/netnstest"
)

// TestNodePort sends TCP and UDP from a client namespace to the node's address and
// NodePorts over a veth, through the TCX programs, to a backend in a third namespace
// (remote: DNAT and SNAT, the reply reverse-NATed at the node's ingress) and to
// backends in the node's namespace (local: DNAT only, reverse NAT at egress), over
// IPv4 and IPv6. The test's namespace plays the dual-stack node:
//
//	client ns (10.1.0.2, fd00:1::2) ==veth== ext0 (10.1.0.1, fd00:1::1) node
//	    ext1 (10.2.0.1, fd00:2::1) ==veth== backend ns (10.2.0.2, fd00:2::2)
func TestNodePort(t *testing.T) {
	s := newSandbox(t)
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(f, []byte("1"), 0); err != nil {
			t.Fatalf("enable forwarding in the test's namespace: %v", err)
		}
	}
	clientNS := netnstest.PeerNS(t)
	backendNS := netnstest.PeerNS(t)
	vethTo(t, "ext0", []string{"10.1.0.1/24", "fd00:1::1/64"}, clientNS, []string{"10.1.0.2/24", "fd00:1::2/64"})
	vethTo(t, "ext1", []string{"10.2.0.1/24", "fd00:2::1/64"}, backendNS, []string{"10.2.0.2/24", "fd00:2::2/64"},
		"10.2.0.1", "fd00:2::1")

	// Each server answers with its name and the client address it sees.
	var remoteTCP, remoteUDP, remoteTCP6, remoteUDP6 net.Addr
	netnstest.Do(t, backendNS, func() {
		remoteTCP = echoTCP(t, "remote", "10.2.0.2:8080")
		remoteUDP = echoUDP(t, "remote", "10.2.0.2:8053")
		remoteTCP6 = echoTCP(t, "remote", "[fd00:2::2]:8080")
		remoteUDP6 = echoUDP(t, "remote", "[fd00:2::2]:8053")
	})
	localTCP := echoTCP(t, "local", "10.1.0.1:8081")
	localUDP := echoUDP(t, "local", "10.1.0.1:8054")
	localTCP6 := echoTCP(t, "local", "[fd00:1::1]:8081")
	localUDP6 := echoUDP(t, "local", "[fd00:1::1]:8054")

	node := netip.MustParseAddr("10.1.0.1")
	np := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(node, port) }
	node6 := netip.MustParseAddr("fd00:1::1")
	np6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(node6, port) }
	fromClient := func(f func()) { netnstest.Do(t, clientNS, f) }

	// Before anything is programmed the NodePort leads nowhere.
	fromClient(func() {
		for _, dst := range []netip.AddrPort{np(30080), np6(30080)} {
			if got, err := askTCPOnce(dst, 5*time.Second); err == nil {
				t.Fatalf("before programming: %s answered %q, want unreachable", dst, got)
			}
		}
	})

	p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir,
		ExternalLinks: []ExternalLink{{Name: "ext0"}, {Name: "ext1"}}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Remove() })
	remote := netip.MustParseAddrPort(remoteTCP.String())
	remoteU := netip.MustParseAddrPort(remoteUDP.String())
	local := netip.MustParseAddrPort(localTCP.String())
	localU := netip.MustParseAddrPort(localUDP.String())
	remote6 := netip.MustParseAddrPort(remoteTCP6.String())
	remoteU6 := netip.MustParseAddrPort(remoteUDP6.String())
	local6 := netip.MustParseAddrPort(localTCP6.String())
	localU6 := netip.MustParseAddrPort(localUDP6.String())
	// The IPv6 Services are the dual-stack twins of the IPv4 ones: the same
	// NodePorts.
	err = p.Sync([]Service{
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.1"), 80, TCP}, Backends: []netip.AddrPort{remote}, NodePort: 30080},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.1"), 53, UDP}, Backends: []netip.AddrPort{remoteU}, NodePort: 30053},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.2"), 80, TCP}, Backends: []netip.AddrPort{local},
			LocalBackends: []netip.AddrPort{local}, NodePort: 30081},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.2"), 53, UDP}, Backends: []netip.AddrPort{localU},
			LocalBackends: []netip.AddrPort{localU}, NodePort: 30054},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.3"), 80, TCP}, Backends: []netip.AddrPort{remote, local},
			LocalBackends: []netip.AddrPort{local}, NodePort: 30082, ExternalPolicy: PolicyLocal},

		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::1"), 80, TCP}, Backends: []netip.AddrPort{remote6}, NodePort: 30080},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::1"), 53, UDP}, Backends: []netip.AddrPort{remoteU6}, NodePort: 30053},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::2"), 80, TCP}, Backends: []netip.AddrPort{local6},
			LocalBackends: []netip.AddrPort{local6}, NodePort: 30081},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::2"), 53, UDP}, Backends: []netip.AddrPort{localU6},
			LocalBackends: []netip.AddrPort{localU6}, NodePort: 30054},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::3"), 80, TCP}, Backends: []netip.AddrPort{remote6, local6},
			LocalBackends: []netip.AddrPort{local6}, NodePort: 30082, ExternalPolicy: PolicyLocal},
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}

	const clientAddr, clientAddr6 = "10.1.0.2", "fd00:1::2"
	cases := []struct {
		name      string
		udp       bool
		dst       netip.AddrPort
		backend   string
		sourceSee string // the client address the backend sees
	}{
		{"tcp remote backend is SNATed", false, np(30080), "remote", "10.1.0.1"},
		{"udp remote backend is SNATed", true, np(30053), "remote", "10.1.0.1"},
		{"tcp local backend sees the client", false, np(30081), "local", clientAddr},
		{"udp local backend sees the client", true, np(30054), "local", clientAddr},
		{"tcp local policy keeps the client address", false, np(30082), "local", clientAddr},
		{"ipv6 tcp remote backend is SNATed", false, np6(30080), "remote", "fd00:1::1"},
		{"ipv6 udp remote backend is SNATed", true, np6(30053), "remote", "fd00:1::1"},
		{"ipv6 tcp local backend sees the client", false, np6(30081), "local", clientAddr6},
		{"ipv6 udp local backend sees the client", true, np6(30054), "local", clientAddr6},
		{"ipv6 tcp local policy keeps the client address", false, np6(30082), "local", clientAddr6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Several connections: the local policy case must never pick
			// the remote backend.
			for i := range 5 {
				var got, peer string
				var err error
				fromClient(func() {
					if c.udp {
						got, peer, err = askUDP(c.dst)
					} else {
						got, peer, err = dialTCP(c.dst)
					}
				})
				if err != nil {
					t.Fatalf("request %d to %s: %v", i, c.dst, err)
				}
				name, seen, _ := strings.Cut(got, "|")
				seenAddr := seen
				if ap, err := netip.ParseAddrPort(seen); err == nil {
					seenAddr = ap.Addr().String()
				}
				if name != c.backend || seenAddr != c.sourceSee {
					t.Fatalf("request %d to %s: answered by %q seeing client %q, want %q seeing %q", i, c.dst, name, seen, c.backend, c.sourceSee)
				}
				if peer != c.dst.String() {
					t.Fatalf("request %d: the answer came from %s, want the NodePort %s (reverse NAT)", i, peer, c.dst)
				}
			}
		})
	}

	t.Run("restart keeps the links", func(t *testing.T) {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		fromClient(func() {
			for _, dst := range []netip.AddrPort{np(30080), np6(30080)} {
				if got, _, err := dialTCP(dst); err != nil || !strings.HasPrefix(got, "remote|") {
					t.Errorf("with the proxy closed: %s answered %q, %v; want the remote backend", dst, got, err)
				}
			}
		})
		p2, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir,
			ExternalLinks: []ExternalLink{{Name: "ext0"}, {Name: "ext1"}}})
		if err != nil {
			t.Fatal(err)
		}
		p = p2
		if got := p2.Stats().Frontends; got != 10 {
			t.Errorf("adopted %d frontends, want 10", got)
		}
		// Dropping ext0 from the external links detaches the programs.
		if err := p2.SetExternalLinks([]ExternalLink{{Name: "ext1"}}); err != nil {
			t.Fatal(err)
		}
		fromClient(func() {
			for _, dst := range []netip.AddrPort{np(30080), np6(30080)} {
				if got, err := askTCPOnce(dst, 5*time.Second); err == nil {
					t.Errorf("after detaching ext0: %s answered %q, want unreachable", dst, got)
				}
			}
		})
	})
}

// vethTo makes a veth pair: name with addrs in the test's namespace, eth0 with
// peerAddrs (and a default route via each of gws) in ns. IPv6 addresses are
// usable at once: duplicate address detection is off in both namespaces, for the
// link-local addresses too (the kernel solicits a neighbour for a forwarded
// packet from the link's link-local address, and sends nothing while it is
// tentative), and the given addresses are added with IFA_F_NODAD.
func vethTo(t *testing.T, name string, addrs []string, ns netns.NsHandle, peerAddrs []string, gws ...string) {
	t.Helper()
	noDAD := func() {
		for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
			if err := os.WriteFile(f, []byte("0"), 0); err != nil {
				t.Fatalf("disable IPv6 duplicate address detection: %v", err)
			}
		}
	}
	noDAD()
	netnstest.Do(t, ns, noDAD)
	peer := name + "p"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer,
		PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	up := func(link string, cidrs []string) {
		l, err := netlink.LinkByName(link)
		if err != nil {
			t.Fatalf("link %s: %v", link, err)
		}
		for _, cidr := range cidrs {
			a, err := netlink.ParseAddr(cidr)
			if err != nil {
				t.Fatal(err)
			}
			if a.IP.To4() == nil {
				a.Flags |= unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(l, a); err != nil {
				t.Fatalf("address %s on %s: %v", cidr, link, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("up %s: %v", link, err)
		}
	}
	up(name, addrs)
	netnstest.Do(t, ns, func() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("loopback up: %v", err)
		}
		up(peer, peerAddrs)
		for _, gw := range gws {
			l, _ := netlink.LinkByName(peer)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
				t.Fatalf("default route via %s: %v", gw, err)
			}
		}
	})
}

// echoTCP serves "name|client address" on each connection, in the namespace of the
// calling thread.
func echoTCP(t *testing.T, name, addr string) net.Addr {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s|%s", name, c.RemoteAddr())
			c.Close()
		}
	}()
	return l.Addr()
}

// echoUDP answers each datagram with "name|client address".
func echoUDP(t *testing.T, name, addr string) net.Addr {
	t.Helper()
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { u.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := u.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			u.WriteToUDPAddrPort([]byte(name+"|"+from.String()), from)
		}
	}()
	return u.LocalAddr()
}

// askTCPOnce connects to dst and reads the answer, giving up after timeout (a
// dropped SYN is retried by the kernel, not answered).
func askTCPOnce(dst netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", dst.String(), timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return string(b), err
}

//go:build linux

package serviceproxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// Backends are servers on loopback addresses inside the test's network namespace;
// VIPs are addresses that namespace has no route to, so only the BPF programs can
// make them reachable.
var (
	vip4  = netip.MustParseAddr("10.96.0.10")
	vip6  = netip.MustParseAddr("fd00:96::10")
	vipNo = netip.MustParseAddr("10.96.0.99")
)

// servers starts, for each address, a TCP server that writes its address and
// closes, and a UDP server that answers each datagram with its address.
func servers(t *testing.T, addrs ...string) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	for _, a := range addrs {
		id := netip.MustParseAddrPort(a)
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("listen %s: %v", a, err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Write([]byte(id.String()))
				c.Close()
			}
		}()
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(id))
		if err != nil {
			t.Fatalf("listen udp %s: %v", a, err)
		}
		t.Cleanup(func() { u.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := u.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				u.WriteToUDPAddrPort([]byte(id.String()), from)
			}
		}()
		out = append(out, id)
	}
	return out
}

// dialTCP connects to dst and returns which backend answered and the peer address
// the socket reports (getpeername).
func dialTCP(dst netip.AddrPort) (backend, peer string, err error) {
	c, err := net.DialTimeout("tcp", dst.String(), 10*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), c.RemoteAddr().String(), err
}

// askUDP sends a datagram to dst from an unconnected socket and returns which
// backend answered and the address the answer came from (recvmsg).
func askUDP(dst netip.AddrPort) (backend, from string, err error) {
	network := "udp4"
	if dst.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, nil)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.WriteToUDPAddrPort([]byte("?"), dst); err != nil {
		return "", "", err
	}
	buf := make([]byte, 64)
	n, src, err := c.ReadFromUDPAddrPort(buf)
	return string(buf[:n]), src.String(), err
}

// rawMapped uses an AF_INET6 socket with an IPv4-mapped destination, which the Go
// net package would turn into an AF_INET socket.
func rawMapped(typ int, dst netip.AddrPort) (backend, peer string, err error) {
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", "", err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 10}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	sa := &unix.SockaddrInet6{Port: int(dst.Port()), Addr: netip.AddrFrom16(dst.Addr().As16()).As16()}
	if typ == unix.SOCK_STREAM {
		if err := connectRetry(fd, sa); err != nil {
			return "", "", err
		}
		psa, err := unix.Getpeername(fd)
		if err != nil {
			return "", "", err
		}
		p := psa.(*unix.SockaddrInet6)
		peer = netip.AddrPortFrom(netip.AddrFrom16(p.Addr), uint16(p.Port)).String()
		buf := make([]byte, 64)
		n, err := noEINTR(func() (int, error) { return unix.Read(fd, buf) })
		return string(buf[:max(n, 0)]), peer, err
	}
	if _, err := noEINTR(func() (int, error) { return 0, unix.Sendto(fd, []byte("?"), 0, sa) }); err != nil {
		return "", "", err
	}
	buf := make([]byte, 64)
	var from unix.Sockaddr
	n, err := noEINTR(func() (n int, err error) {
		n, from, err = unix.Recvfrom(fd, buf, 0)
		return n, err
	})
	if err != nil {
		return "", "", err
	}
	f := from.(*unix.SockaddrInet6)
	return string(buf[:n]), netip.AddrPortFrom(netip.AddrFrom16(f.Addr), uint16(f.Port)).String(), nil
}

// noEINTR retries f while it fails with EINTR: a blocking socket call with a receive
// timeout is not restarted after a signal, and Go's runtime signals its threads
// (preemption), which under emulation lands inside such a wait now and then.
func noEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}

// connectRetry connects fd to sa; a connect interrupted by a signal goes on in the
// background, so it then waits for the socket to be writable and reads the outcome.
func connectRetry(fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if !errors.Is(err, unix.EINTR) {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := noEINTR(func() (int, error) { return unix.Poll(pfd, 10_000) }); err != nil {
		return err
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soErr != 0 {
		return unix.Errno(soErr)
	}
	return nil
}

func openProxy(t *testing.T, s *sandbox) *Proxy {
	t.Helper()
	p, err := Open(Config{Cgroup: s.Cgroup, PinDir: s.PinDir, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}

// spread makes n requests with ask and counts the answers per backend; every
// answer must come from one of want and name peer as its source.
func spread(t *testing.T, n int, want []netip.AddrPort, peer string, ask func() (string, string, error)) map[string]int {
	t.Helper()
	ok := map[string]bool{}
	for _, w := range want {
		ok[w.String()] = true
	}
	seen := map[string]int{}
	for range n {
		be, p, err := ask()
		if err != nil {
			t.Fatalf("request %d: %v", len(seen), err)
		}
		if !ok[be] {
			t.Fatalf("answered by %q, want one of %v", be, want)
		}
		if p != peer {
			t.Fatalf("peer address %s, want the service address %s", p, peer)
		}
		seen[be]++
	}
	return seen
}

func TestClusterIP(t *testing.T) {
	s := newSandbox(t)
	be4 := servers(t, "127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080")
	be6 := servers(t, "[::1]:9001", "[::1]:9002", "[::1]:9003")
	tcp4 := netip.AddrPortFrom(vip4, 80)
	udp4 := netip.AddrPortFrom(vip4, 53)
	tcp6 := netip.AddrPortFrom(vip6, 80)
	udp6 := netip.AddrPortFrom(vip6, 53)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), 80)
	mappedUDP := netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), 53)
	noEP := netip.AddrPortFrom(vipNo, 80)

	s.enter()
	t.Cleanup(s.leave)
	// Before anything is programmed the VIPs lead nowhere.
	for _, dst := range []netip.AddrPort{tcp4, tcp6} {
		if be, _, err := dialTCP(dst); err == nil {
			t.Fatalf("before programming: %s answered by %s, want unreachable", dst, be)
		}
	}

	p := openProxy(t, s)
	t.Cleanup(func() { p.Remove() })
	if be, _, err := dialTCP(tcp4); err == nil {
		t.Fatalf("no services programmed: %s answered by %s, want unreachable", tcp4, be)
	}

	err := p.Sync([]Service{
		{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: be4},
		{ServiceKey: ServiceKey{vip4, 53, UDP}, Backends: be4},
		{ServiceKey: ServiceKey{vip6, 80, TCP}, Backends: be6},
		{ServiceKey: ServiceKey{vip6, 53, UDP}, Backends: be6},
		{ServiceKey: ServiceKey{vipNo, 80, TCP}},
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}

	// 60 random picks over 3 backends miss one with probability 3·(2/3)^60 ≈ 1e-10.
	const n = 60
	cases := []struct {
		name string
		want []netip.AddrPort
		peer string
		ask  func() (string, string, error)
	}{
		{"tcp4", be4, tcp4.String(), func() (string, string, error) { return dialTCP(tcp4) }},
		{"udp4", be4, udp4.String(), func() (string, string, error) { return askUDP(udp4) }},
		{"tcp6", be6, tcp6.String(), func() (string, string, error) { return dialTCP(tcp6) }},
		{"udp6", be6, udp6.String(), func() (string, string, error) { return askUDP(udp6) }},
		{"tcp v4-mapped", be4, mapped.String(), func() (string, string, error) { return rawMapped(unix.SOCK_STREAM, mapped) }},
		{"udp v4-mapped", be4, mappedUDP.String(), func() (string, string, error) { return rawMapped(unix.SOCK_DGRAM, mappedUDP) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen := spread(t, n, c.want, c.peer, c.ask)
			if len(seen) != len(c.want) {
				t.Errorf("%d requests reached %v, want all of %v", n, seen, c.want)
			}
		})
	}

	t.Run("connected udp", func(t *testing.T) {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(udp4))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("?")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		nr, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.RemoteAddr().String(); got != udp4.String() {
			t.Errorf("RemoteAddr = %s, want %s", got, udp4)
		}
		t.Logf("answered by %s", buf[:nr])
	})

	t.Run("no endpoints refuses", func(t *testing.T) {
		_, _, err := dialTCP(noEP)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s = %v, want ECONNREFUSED", noEP, err)
		}
	})

	t.Run("affinity sticks", func(t *testing.T) {
		svc := Service{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: be4, Affinity: time.Hour}
		if err := p.Upsert(svc); err != nil {
			t.Fatal(err)
		}
		seen := spread(t, 30, be4, tcp4.String(), func() (string, string, error) { return dialTCP(tcp4) })
		if len(seen) != 1 {
			t.Errorf("with ClientIP affinity, 30 connections reached %v, want one backend", seen)
		}
		// The chosen backend goes away: the client moves, and sticks again.
		var gone netip.AddrPort
		for k := range seen {
			gone = netip.MustParseAddrPort(k)
		}
		var rest []netip.AddrPort
		for _, b := range be4 {
			if b != gone {
				rest = append(rest, b)
			}
		}
		svc.Backends = rest
		if err := p.Upsert(svc); err != nil {
			t.Fatal(err)
		}
		seen = spread(t, 30, rest, tcp4.String(), func() (string, string, error) { return dialTCP(tcp4) })
		if len(seen) != 1 {
			t.Errorf("after its backend left, 30 connections reached %v, want one backend", seen)
		}
		if err := p.Upsert(Service{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: be4}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("endpoints removed then back", func(t *testing.T) {
		if err := p.Upsert(Service{ServiceKey: ServiceKey{vip4, 80, TCP}}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := dialTCP(tcp4); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s without endpoints = %v, want ECONNREFUSED", tcp4, err)
		}
		if err := p.Upsert(Service{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: be4[:1]}); err != nil {
			t.Fatal(err)
		}
		spread(t, 5, be4[:1], tcp4.String(), func() (string, string, error) { return dialTCP(tcp4) })
		if err := p.Delete(ServiceKey{vip4, 80, TCP}); err != nil {
			t.Fatal(err)
		}
		if be, _, err := dialTCP(tcp4); err == nil {
			t.Errorf("deleted service %s answered by %s, want unreachable", tcp4, be)
		}
	})
}

// TestRestart closes the Go side and opens it again while a client keeps
// connecting: no connection may fail, and the new side adopts the programmed state,
// replaces the programs in the pinned links and can change services.
func TestRestart(t *testing.T) {
	s := newSandbox(t)
	be := servers(t, "127.0.0.2:8080", "127.0.0.3:8080")
	vip := netip.AddrPortFrom(vip4, 80)
	s.enter()
	t.Cleanup(s.leave)

	p := openProxy(t, s)
	want := []Service{
		{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: be},
		{ServiceKey: ServiceKey{vip6, 443, TCP}, Backends: []netip.AddrPort{netip.MustParseAddrPort("[::1]:9443")}, Affinity: 3 * time.Hour},
	}
	if err := p.Sync(want); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var conns, fails atomic.Int64
	var firstErr atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Bounded: at most 100k connections, and stopped by the test.
		for i := 0; i < 100000 && !stop.Load(); i++ {
			if _, _, err := dialTCP(vip); err != nil {
				fails.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			conns.Add(1)
		}
	}()
	waitConns := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute) // hang protection only
		for target := conns.Load() + n; conns.Load() < target; {
			if time.Now().After(deadline) {
				t.Fatalf("client stalled at %d connections", conns.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitConns(20)
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitConns(50) // nobody holds the datapath but the pins

	p2 := openProxy(t, s)
	t.Cleanup(func() { p2.Remove() })
	waitConns(20)
	if diff := cmp.Diff(want, p2.Services(), cmpServices); diff != "" {
		t.Errorf("adopted services (-want +got):\n%s", diff)
	}
	if err := p2.Upsert(Service{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: be[1:]}); err != nil {
		t.Fatal(err)
	}
	waitConns(20)
	stop.Store(true)
	wg.Wait()
	if f := fails.Load(); f != 0 {
		t.Errorf("%d of %d connections failed across the restart; first: %v", f, conns.Load(), firstErr.Load())
	}
	seen := spread(t, 20, be[1:], vip.String(), func() (string, string, error) { return dialTCP(vip) })
	t.Logf("after the change: %v", seen)

	// Removing the datapath detaches it.
	if err := p2.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if b, _, err := dialTCP(vip); err == nil {
		t.Errorf("after Remove, %s answered by %s, want unreachable", vip, b)
	}
}

// TestOpenRejectsNonBPFFS checks the error a person gets for a pin directory that is
// not on a bpffs.
func TestOpenRejectsNonBPFFS(t *testing.T) {
	s := newSandbox(t)
	_, err := Open(Config{Cgroup: s.Cgroup, PinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "not on a bpffs") {
		t.Errorf("Open on tmpfs = %v, want a not-on-bpffs error", err)
	}
}

// TestOpenReplacesOldLayout pins configuration maps as layout 1 had them (no
// layout marker; services with 16-byte values, backends in a hash map) and
// checks that Open makes them anew instead of failing or misreading them, and
// that a second Open adopts what the first programmed.
func TestOpenReplacesOldLayout(t *testing.T) {
	s := newSandbox(t)
	if err := os.MkdirAll(s.PinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []*ebpf.MapSpec{
		{Name: "kiln_services", Type: ebpf.Hash, KeySize: 20, ValueSize: 16, MaxEntries: DefaultLimits.Services},
		{Name: "kiln_backends", Type: ebpf.Hash, KeySize: 4, ValueSize: 20, MaxEntries: DefaultLimits.Backends},
	} {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Pin(filepath.Join(s.PinDir, spec.Name)); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	p := openProxy(t, s)
	t.Cleanup(func() { p.Remove() })
	want := []Service{{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.2:8080")}}}
	if err := p.Sync(want); err != nil {
		t.Fatal(err)
	}
	if v, err := p.pinnedLayout(); err != nil || v != layoutVersion {
		t.Errorf("pinned layout = %d, %v; want %d", v, err, layoutVersion)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p2 := openProxy(t, s)
	t.Cleanup(func() { p2.Remove() })
	if diff := cmp.Diff(want, p2.Services(), cmpServices); diff != "" {
		t.Errorf("adopted services (-want +got):\n%s", diff)
	}
}

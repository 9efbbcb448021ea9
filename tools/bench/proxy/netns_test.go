//go:build linux

package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Address plan, all inside namespaces the benchmark made:
//
//	backend namespace: every address of backendNet is local (an AnyIP route on
//	  lo), served by one echo server on backendPort.
//	mode namespace k (1..): eth0 10.250.k.1/28, default route via the backend
//	  namespace's end 10.250.k.14, so an unprogrammed ClusterIP is unreachable
//	  there and a programmed one is DNATed or rewritten to a backend. Each
//	  connection run binds its sockets to a source address of its own,
//	  10.250.k.2 and up: the TIME_WAIT sockets of one run (to the same
//	  destination) would otherwise slow the next run's port search in
//	  connect().
var backendNet = netip.MustParsePrefix("10.244.0.0/16")

const backendPort = 8080

// backendAddr is the i-th address of backendNet (i ≥ 1).
func backendAddr(i int) netip.Addr {
	b := backendNet.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(i)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// netNS is a network namespace the benchmark made, held by an open file.
type netNS struct {
	name string
	fd   int
	k    int // mode index, 1..; 0 for the backend namespace
	runs int // connection runs made, for their source addresses
}

// maxRuns is how many connection runs a namespace has source addresses for.
const maxRuns = 12

// nextSource is the source address of the namespace's next connection run.
func (ns *netNS) nextSource() (netip.Addr, error) {
	if ns.k == 0 || ns.runs >= maxRuns {
		return netip.Addr{}, fmt.Errorf("%s: no source address left for another connection run", ns.name)
	}
	ns.runs++
	return netip.AddrFrom4([4]byte{10, 250, byte(ns.k), byte(1 + ns.runs)}), nil
}

// mainNS is the namespace the benchmark process runs in.
var mainNS = sync.OnceValues(func() (int, error) {
	return unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
})

// inNS runs f on a thread in ns (nil: a new namespace, which it returns). A
// thread whose namespace cannot be restored is not reused: its goroutine exits
// locked.
func inNS(ns *netNS, f func() error) (created *netNS, err error) {
	orig, err := mainNS()
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if ns == nil {
			if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
				err = fmt.Errorf("unshare network namespace: %w", err)
				return // the thread's namespace is unknown: let it go
			}
			fd, oerr := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if oerr != nil {
				err = fmt.Errorf("open new network namespace: %w", oerr)
			} else {
				created = &netNS{fd: fd}
			}
		} else if err = unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			err = fmt.Errorf("enter network namespace %s: %w", ns.name, err)
			runtime.UnlockOSThread()
			return
		}
		if err == nil && f != nil {
			err = f()
		}
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore network namespace: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	<-done
	return created, err
}

// newNetNS makes a network namespace with loopback up, closed at cleanup.
func newNetNS(tb testing.TB, name string) *netNS {
	tb.Helper()
	ns, err := inNS(nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ns.name = name
	tb.Cleanup(func() { unix.Close(ns.fd) })
	h := nsHandle(tb, ns)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("%s: bring loopback up: %v", name, err)
	}
	return ns
}

func nsHandle(tb testing.TB, ns *netNS) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.fd))
	if err != nil {
		tb.Fatalf("netlink in %s: %v", ns.name, err)
	}
	tb.Cleanup(h.Close)
	return h
}

// sysctl writes a /proc/sys/net value in ns.
func sysctl(ns *netNS, key, value string) error {
	_, err := inNS(ns, func() error {
		return os.WriteFile(filepath.Join("/proc/sys/net", key), []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("%s: sysctl net/%s=%s: %w", ns.name, key, value, err)
	}
	return nil
}

// topology is the backend namespace and one client namespace per mode.
type topology struct {
	backend *netNS
	modes   map[string]*netNS
}

func newTopology(tb testing.TB, modes []string) *topology {
	tb.Helper()
	t := &topology{backend: newNetNS(tb, "backend"), modes: map[string]*netNS{}}
	bh := nsHandle(tb, t.backend)
	lo, err := bh.LinkByName("lo")
	if err != nil {
		tb.Fatal(err)
	}
	anyIP := &netlink.Route{
		LinkIndex: lo.Attrs().Index, Dst: prefixNet(backendNet),
		Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST,
	}
	if err := bh.RouteAdd(anyIP); err != nil {
		tb.Fatalf("backend: local route for %s: %v", backendNet, err)
	}
	for i, name := range modes {
		k := i + 1
		ns := newNetNS(tb, name)
		ns.k = k
		t.modes[name] = ns
		outer := fmt.Sprintf("vb%d", k)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outer}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.fd)}
		if err := bh.LinkAdd(veth); err != nil {
			tb.Fatalf("veth for %s: %v", name, err)
		}
		client, gw := netip.AddrFrom4([4]byte{10, 250, byte(k), 1}), netip.AddrFrom4([4]byte{10, 250, byte(k), 14})
		if err := linkUp(bh, outer, netip.PrefixFrom(gw, 28)); err != nil {
			tb.Fatalf("backend side of %s: %v", name, err)
		}
		h := nsHandle(tb, ns)
		if err := linkUp(h, "eth0", netip.PrefixFrom(client, 28)); err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			tb.Fatal(err)
		}
		for i := 1; i <= maxRuns; i++ {
			a := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, byte(k), byte(1 + i)}), 32)
			if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: prefixNet(a)}); err != nil {
				tb.Fatalf("%s: source address %s: %v", name, a, err)
			}
		}
		if err := h.RouteAdd(&netlink.Route{Gw: gw.AsSlice()}); err != nil {
			tb.Fatalf("%s: default route: %v", name, err)
		}
		// The 40,500 connections of a mode leave as many TIME_WAIT sockets
		// (60 s): room for them without reusing a port (tcp_tw_reuse is left
		// at its default, loopback only). Ports below are the probes' own.
		for _, kv := range [][2]string{{"ipv4/ip_local_port_range", fmt.Sprintf("%d 65535", probePortEnd)}} {
			if err := sysctl(ns, kv[0], kv[1]); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return t
}

// clientAddr is mode namespace k's address (the kube-proxy node IP there).
func (t *topology) clientAddr(mode string, modes []string) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 250, byte(slices.Index(modes, mode) + 1), 1})
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func linkUp(h *netlink.Handle, name string, addr netip.Prefix) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(addr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// serveEcho runs the backends: on every address of backendNet, a connection
// gets its first byte echoed, or for '?' the 4-byte address it reached (so a
// probe learns which backend it got); it is closed after the client closes.
func serveEcho(tb testing.TB, ns *netNS) {
	tb.Helper()
	var l net.Listener
	if _, err := inNS(ns, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", backendPort))
		return err
	}); err != nil {
		tb.Fatalf("backend listener: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				reply := b[:]
				if b[0] == '?' {
					a := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().As4()
					reply = a[:]
				}
				if _, err := c.Write(reply); err != nil {
					return
				}
				io.Copy(io.Discard, c) // until the client closes
			}()
		}
	}()
}

// forward listens on 127.0.0.1:port in ns and relays every connection to
// target in the main namespace: kube-proxy in its namespace reaches the
// apiserver on the main namespace's loopback through it.
func forward(tb testing.TB, ns *netNS, port int, target string) {
	tb.Helper()
	var l net.Listener
	if _, err := inNS(ns, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}); err != nil {
		tb.Fatalf("%s: apiserver forwarder: %v", ns.name, err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
}

// dialIn dials addr from a socket made in ns.
func dialIn(ns *netNS, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	_, err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// Probes use source ports of their own, below the namespaces' ephemeral
// range: a probe sent before kube-proxy programmed a ClusterIP leaves an
// un-NATed conntrack entry (SYN_SENT, 120 s) for its 4-tuple, and a later
// connection that reused the tuple would be sent to the unprogrammed address.
const (
	probePortStart = 1024
	probePortEnd   = 16384
)

var probePorts atomic.Uint32

// probe opens one connection to dst from ns and asks which backend answered.
func probe(ns *netNS, dst netip.AddrPort, timeout time.Duration) (netip.Addr, error) {
	var got netip.Addr
	_, err := inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		port := probePortStart + int(probePorts.Add(1))%(probePortEnd-probePortStart)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
			return fmt.Errorf("bind probe port %d: %w", port, err)
		}
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := connectFD(fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}); err != nil {
			return fmt.Errorf("connect %s: %w", dst, err)
		}
		if _, err := writeFD(fd, []byte{'?'}); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		var b [4]byte
		n := 0
		for n < 4 {
			m, err := readFD(fd, b[n:])
			if err != nil || m == 0 {
				return fmt.Errorf("read from %s: %d bytes, %v", dst, n, err)
			}
			n += m
		}
		got = netip.AddrFrom4(b)
		return nil
	})
	return got, err
}

// waitProbe probes dst from ns every interval until want(backend) holds, and
// returns when it first did. Hang protection only: deadline.
func waitProbe(ns *netNS, dst netip.AddrPort, want func(netip.Addr) bool, deadline time.Duration, alive func() error) (time.Time, error) {
	end := time.Now().Add(deadline)
	var last error
	for time.Now().Before(end) {
		if alive != nil {
			if err := alive(); err != nil {
				return time.Time{}, err
			}
		}
		got, err := probe(ns, dst, 200*time.Millisecond)
		if err == nil && want(got) {
			return time.Now(), nil
		}
		if err == nil {
			err = fmt.Errorf("answered by %s", got)
		}
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%s from %s: not within %v (last: %v)", dst, ns.name, deadline, last)
}

// loadResult is one run of new connections.
type loadResult struct {
	Conns       int
	Concurrency int
	Wall        time.Duration
	P50, P99    time.Duration
	CPUPerConn  time.Duration // client threads' user+system time per connection
}

func (r loadResult) ConnPerSec() float64 { return float64(r.Conns) / r.Wall.Seconds() }

// load makes total new TCP connections from conc client threads in ns, to
// dsts in turn: connect, write 1 byte, read the echo, close. Each thread
// measures its own CPU time (RUSAGE_THREAD), so the backends and the rest of
// the process are not counted.
func load(ns *netNS, dsts []netip.AddrPort, total, conc int) (loadResult, error) {
	orig, err := mainNS()
	if err != nil {
		return loadResult{}, err
	}
	src, err := ns.nextSource()
	if err != nil {
		return loadResult{}, err
	}
	per := total / conc
	lat := make([][]time.Duration, conc)
	cpu := make([]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	start := make(chan struct{})
	var ready sync.WaitGroup
	ready.Add(conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				errs[w] = fmt.Errorf("enter %s: %w", ns.name, err)
				ready.Done()
				return
			}
			ready.Done()
			<-start
			errs[w] = connLoop(src, dsts, w*per, per, &lat[w], &cpu[w])
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				errs[w] = errors.Join(errs[w], err)
				return // stays locked: the thread ends with the goroutine
			}
			runtime.UnlockOSThread()
		}()
	}
	ready.Wait()
	begin := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(begin)
	if err := errors.Join(errs...); err != nil {
		return loadResult{}, err
	}
	var all []time.Duration
	var cpuSum time.Duration
	for w := range conc {
		all = append(all, lat[w]...)
		cpuSum += cpu[w]
	}
	slices.Sort(all)
	n := len(all)
	return loadResult{
		Conns: n, Concurrency: conc, Wall: wall,
		P50: all[n/2], P99: all[min(n-1, n*99/100)],
		CPUPerConn: cpuSum / time.Duration(n),
	}, nil
}

// connLoop makes n connections from src, the i-th to dsts[(first+i) % len(dsts)].
func connLoop(src netip.Addr, dsts []netip.AddrPort, first, n int, lat *[]time.Duration, cpu *time.Duration) error {
	sas := make([]unix.SockaddrInet4, len(dsts))
	for i, d := range dsts {
		sas[i] = unix.SockaddrInet4{Port: int(d.Port()), Addr: d.Addr().As4()}
	}
	local := &unix.SockaddrInet4{Addr: src.As4()}
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds()) // hang protection
	out := []byte{'x'}
	in := make([]byte, 1)
	*lat = make([]time.Duration, 0, n)
	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &before)
	defer func() {
		unix.Getrusage(unix.RUSAGE_THREAD, &after)
		*cpu = time.Duration(after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano())
	}()
	for i := range n {
		k := (first + i) % len(dsts)
		dst, sa := dsts[k], &sas[k]
		t0 := time.Now()
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		// The port is chosen at connect, for the whole 4-tuple.
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, local); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind %s: %w", src, err)
		}
		if err := connectFD(fd, sa); err != nil {
			unix.Close(fd)
			return fmt.Errorf("connect %s (after %d connections): %w", dst, i, err)
		}
		if _, err := writeFD(fd, out); err != nil {
			unix.Close(fd)
			return fmt.Errorf("write to %s: %w", dst, err)
		}
		if m, err := readFD(fd, in); err != nil || m != 1 || in[0] != 'x' {
			unix.Close(fd)
			return fmt.Errorf("echo from %s: %d bytes %q, %v", dst, m, in[:max(m, 0)], err)
		}
		unix.Close(fd)
		*lat = append(*lat, time.Since(t0))
	}
	return nil
}

// The Go runtime signals its threads (preemption), and a socket call with a
// timeout set is not restarted by the kernel: these retry on EINTR. A blocking
// connect that is retried waits for the handshake already under way, and
// reports EISCONN if it completed in between.

func connectFD(fd int, sa unix.Sockaddr) error {
	for {
		err := unix.Connect(fd, sa)
		switch err {
		case unix.EINTR:
			continue
		case unix.EISCONN:
			return nil
		}
		return err
	}
}

func readFD(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Read(fd, p)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func writeFD(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Write(fd, p)
		if err != unix.EINTR {
			return n, err
		}
	}
}

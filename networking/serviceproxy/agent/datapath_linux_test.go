//go:build linux

package agent

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/kiln-os/kiln/networking/bpfsandbox"
	"github.com/kiln-os/kiln/networking/netnstest"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/vishvananda/netlink"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// realDatapath opens the real datapath on a private bpffs and a child cgroup of its
// own, inside the private namespaces netnstest made, and returns it with a func
// that moves the test process into the cgroup (whose sockets are balanced).
func realDatapath(t *testing.T) (*serviceproxy.Proxy, func()) {
	t.Helper()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatalf("loopback: %v", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatalf("bring loopback up: %v", err)
	}

	sb := bpfsandbox.New(t, "proxy-agent-test")
	p, err := serviceproxy.Open(serviceproxy.Config{
		Cgroup: sb.Cgroup,
		PinDir: sb.PinDir,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatalf("serviceproxy.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Remove(); err != nil {
			t.Errorf("remove datapath: %v", err)
		}
	})
	enter := func() {
		t.Helper()
		if err := sb.Enter(); err != nil {
			t.Fatal(err)
		}
	}
	return p, enter
}

// TestRealDatapath programs the real eBPF datapath from a fake API: a connection to
// the ClusterIP reaches the backend the EndpointSlice names.
func TestRealDatapath(t *testing.T) {
	if netnstest.InNetNS(t, "loads BPF programs on a private bpffs and attaches them to a child cgroup") {
		return
	}
	p, enter := realDatapath(t)

	const greeting = "hello from the backend"
	l, err := net.Listen("tcp", "127.0.0.2:8080")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			c.Close()
		}
	}()

	enter()
	const vip = "10.96.0.10:80"
	if c, err := net.DialTimeout("tcp", vip, 5*time.Second); err == nil {
		c.Close()
		t.Fatalf("%s is reachable before anything is programmed", vip)
	}

	h := start(t, fake.NewClientset(), p)
	svc, _ := web("web", "10.96.0.10")
	h.create(svc, endpointSlice(ns, "web-a", "web", discoveryv1.AddressTypeIPv4, slicePorts, endpoint("127.0.0.2", readyEP)))
	k := sk(vip, serviceproxy.TCP)
	eventually(t, "the service is programmed with its backend", func() bool {
		for _, s := range p.Services() {
			if s.ServiceKey == k && len(s.Backends) == 1 {
				return true
			}
		}
		return false
	})

	c, err := net.DialTimeout("tcp", vip, 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the ClusterIP %s: %v", vip, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", vip, err)
	}
	if string(got) != greeting {
		t.Errorf("read %q from %s, want %q", got, vip, greeting)
	}
	if peer := c.RemoteAddr().String(); peer != vip {
		t.Errorf("peer address %s, want the ClusterIP %s", peer, vip)
	}
	h.assertErrors(nil)
}

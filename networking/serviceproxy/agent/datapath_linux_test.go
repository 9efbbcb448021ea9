//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/networking/netnstest"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount a private bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })

	cg2 := t.TempDir()
	if err := unix.Mount("cgroup2", cg2, "cgroup2", 0, ""); err != nil {
		if errors.Is(err, unix.ENODEV) {
			t.Skip("needs cgroup v2, which this kernel does not have")
		}
		t.Fatalf("mount cgroup2: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(cg2, unix.MNT_DETACH) })
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatalf("read own cgroup: %v", err)
	}
	var own string
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			own = p
		}
	}
	if own == "" {
		t.Fatalf("no cgroup v2 line in /proc/self/cgroup:\n%s", b)
	}
	home := filepath.Join(cg2, own)
	cgroup := filepath.Join(cg2, fmt.Sprintf("kiln-proxy-agent-test-%d", os.Getpid()))
	if err := os.Mkdir(cgroup, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	moveTo := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	}
	t.Cleanup(func() {
		if err := moveTo(home); err != nil {
			t.Errorf("leave test cgroup: %v", err)
		}
		if err := os.Remove(cgroup); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})

	p, err := serviceproxy.Open(serviceproxy.Config{
		Cgroup: cgroup,
		PinDir: filepath.Join(bpffs, "kiln"),
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
		if err := moveTo(cgroup); err != nil {
			t.Fatalf("enter test cgroup: %v", err)
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

//go:build linux

package serviceproxy

import (
	"testing"

	"github.com/kiln-os/kiln/networking/bpfsandbox"
	"github.com/vishvananda/netlink"
)

// The privileged tests and benchmarks of this package run in a private network
// namespace and a private mount namespace (bpfsandbox.Main), with a private bpffs
// and a child cgroup of their own (newSandbox): never the host's sockets, pins or
// root cgroup.

func TestMain(m *testing.M) { bpfsandbox.Main(m) }

// sandbox is a test's bpffs directory and its own cgroup.
type sandbox struct {
	*bpfsandbox.Sandbox
	tb testing.TB
}

// newSandbox skips unless the test runs as root in the private namespaces, brings up
// loopback, mounts a private bpffs and cgroup2, and creates a child cgroup. The
// process is not in the cgroup until enter.
func newSandbox(tb testing.TB) *sandbox {
	tb.Helper()
	bpfsandbox.Require(tb, "loads BPF programs and attaches them to a cgroup, in a private network namespace")
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		tb.Fatalf("loopback: %v", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		tb.Fatalf("bring loopback up: %v", err)
	}
	return &sandbox{Sandbox: bpfsandbox.New(tb, "serviceproxy-test"), tb: tb}
}

// enter moves the test process into the test's cgroup: sockets it opens from now on
// are balanced.
func (s *sandbox) enter() {
	s.tb.Helper()
	if err := s.Enter(); err != nil {
		s.tb.Fatal(err)
	}
}

// leave moves the process back where it came from.
func (s *sandbox) leave() {
	s.tb.Helper()
	if err := s.Leave(); err != nil {
		s.tb.Error(err)
	}
}

// loopbackUp brings up loopback when the test runs in the private network
// namespace, for tests that need no root but use loopback.
func loopbackUp(t *testing.T) {
	t.Helper()
	if !bpfsandbox.Inside() {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring loopback up: %v", err)
	}
}

//go:build linux

package serviceproxy

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The privileged tests and benchmarks of this package run in a private network
// namespace and a private mount namespace: TestMain re-executes the test binary there
// when it runs as root, so every socket the tests open, every address they reach and
// every bpffs and cgroup2 mount they make belong to namespaces that end with the
// process. The programs are attached to a child cgroup that the test creates, never to
// the host's root; only the test process itself is moved into it, for the duration
// of a test.

const sandboxEnv = "KILN_SERVICEPROXY_SANDBOX"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(sandboxEnv) == "" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), sandboxEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &exit):
			os.Exit(exit.ExitCode())
		}
		// Could not create the namespaces: run here, and let the privileged
		// tests skip with the reason.
		os.Setenv(sandboxEnv, "unavailable: "+err.Error())
	}
	os.Exit(m.Run())
}

// sandbox is a test's bpffs directory and its own cgroup.
type sandbox struct {
	tb     testing.TB
	PinDir string
	Cgroup string
	home   string // the cgroup the process came from, in the test's cgroup2 mount
}

var sandboxes atomic.Int32

// newSandbox skips unless the test runs as root in the private namespaces, brings up
// loopback, mounts a private bpffs and cgroup2, and creates a child cgroup. The
// process is not in the cgroup until enter.
func newSandbox(tb testing.TB) *sandbox {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loads BPF programs and attaches them to a cgroup, in a private network namespace")
	}
	if v := os.Getenv(sandboxEnv); v != "1" {
		tb.Skipf("needs a private network and mount namespace, which could not be made: %s", v)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		tb.Fatalf("loopback: %v", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		tb.Fatalf("bring loopback up: %v", err)
	}

	s := &sandbox{tb: tb, PinDir: filepath.Join(tb.TempDir(), "kiln")}
	bpffs := filepath.Dir(s.PinDir)
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mount a private bpffs: %v", err)
	}
	tb.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })

	cg2 := tb.TempDir()
	if err := unix.Mount("cgroup2", cg2, "cgroup2", 0, ""); err != nil {
		if errors.Is(err, unix.ENODEV) {
			tb.Skip("needs cgroup v2, which this kernel does not have")
		}
		tb.Fatalf("mount cgroup2: %v", err)
	}
	tb.Cleanup(func() { unix.Unmount(cg2, unix.MNT_DETACH) })
	home, err := ownCgroup()
	if err != nil {
		tb.Fatal(err)
	}
	s.home = filepath.Join(cg2, home)
	s.Cgroup = filepath.Join(cg2, fmt.Sprintf("kiln-serviceproxy-test-%d-%d", os.Getpid(), sandboxes.Add(1)))
	if filepath.Clean(s.Cgroup) == filepath.Clean(cg2) {
		tb.Fatal("refusing to attach to the cgroup2 root")
	}
	if err := os.Mkdir(s.Cgroup, 0o755); err != nil {
		tb.Fatalf("create test cgroup: %v", err)
	}
	tb.Cleanup(func() {
		s.leave()
		if err := os.Remove(s.Cgroup); err != nil {
			tb.Errorf("remove test cgroup: %v", err)
		}
	})
	return s
}

// ownCgroup is the process's cgroup v2 path.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 line in /proc/self/cgroup:\n%s", b)
}

func moveTo(cgroup string) error {
	return os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// enter moves the test process into the test's cgroup: sockets it opens from now on
// are balanced.
func (s *sandbox) enter() {
	s.tb.Helper()
	if err := moveTo(s.Cgroup); err != nil {
		s.tb.Fatalf("enter test cgroup: %v", err)
	}
}

// leave moves the process back where it came from.
func (s *sandbox) leave() {
	s.tb.Helper()
	if err := moveTo(s.home); err != nil {
		s.tb.Errorf("leave test cgroup for %s: %v", s.home, err)
	}
}

// loopbackUp brings up loopback when the test runs in the private network
// namespace, for tests that need no root but use loopback.
func loopbackUp(t *testing.T) {
	t.Helper()
	if os.Getenv(sandboxEnv) != "1" {
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

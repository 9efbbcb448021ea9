//go:build linux

// Package bpfsandbox gives privileged eBPF tests and benchmarks a place of their
// own. Main re-executes the whole test binary, when it runs as root, in a private
// network namespace and a private mount namespace, so every socket the tests open,
// every address they reach and every bpffs and cgroup2 mount they make belong to
// namespaces that end with the process. New gives one test a private bpffs for its
// pins and a child cgroup for its socket programs, never the host's root cgroup;
// the process itself joins that cgroup only between Enter and Leave.
package bpfsandbox

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

	"golang.org/x/sys/unix"
)

// envKey is "1" in the re-executed binary, or why it could not be made.
const envKey = "KILN_BPF_SANDBOX"

// Main runs the tests of m, re-executed in private namespaces when the process is
// root; call it from TestMain. Where the namespaces cannot be made the tests run
// here, and New skips with the reason.
func Main(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(envKey) == "" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), envKey+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &exit):
			os.Exit(exit.ExitCode())
		}
		os.Setenv(envKey, "unavailable: "+err.Error())
	}
	os.Exit(m.Run())
}

// Inside reports whether the process runs in Main's private namespaces.
func Inside() bool { return os.Getenv(envKey) == "1" }

// Require skips tb unless it runs as root inside Main's namespaces; why says what
// the test needs root for.
func Require(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skipf("needs root: %s", why)
	}
	if v := os.Getenv(envKey); v != "1" {
		if v == "" {
			v = "the test binary's TestMain does not call bpfsandbox.Main"
		}
		tb.Skipf("needs a private network and mount namespace, which could not be made: %s", v)
	}
}

// Sandbox is a private bpffs directory and a cgroup of the test's own.
type Sandbox struct {
	PinDir string // a directory on the private bpffs, not yet created
	Cgroup string // the child cgroup, created
	home   string // the cgroup the process came from, in the same cgroup2 mount
}

var made atomic.Int32

// New mounts a private bpffs and cgroup2 and creates a child cgroup named after
// name; all of it goes at cleanup, after the process has left the cgroup. Call
// Require first, unless the test runs in private namespaces of its own
// (networking/netnstest).
func New(tb testing.TB, name string) *Sandbox {
	tb.Helper()
	s := &Sandbox{PinDir: filepath.Join(tb.TempDir(), "kiln")}
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
	s.Cgroup = filepath.Join(cg2, fmt.Sprintf("kiln-%s-%d-%d", name, os.Getpid(), made.Add(1)))
	if err := os.Mkdir(s.Cgroup, 0o755); err != nil {
		tb.Fatalf("create the test's cgroup: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Leave(); err != nil {
			tb.Error(err)
		}
		if err := os.Remove(s.Cgroup); err != nil {
			tb.Errorf("remove the test's cgroup: %v", err)
		}
	})
	return s
}

// Enter moves the process into the sandbox's cgroup: sockets it opens from now on
// are the ones its programs see.
func (s *Sandbox) Enter() error {
	if err := moveTo(s.Cgroup); err != nil {
		return fmt.Errorf("enter cgroup %s: %w", s.Cgroup, err)
	}
	return nil
}

// Leave moves the process back to the cgroup it came from.
func (s *Sandbox) Leave() error {
	if err := moveTo(s.home); err != nil {
		return fmt.Errorf("leave cgroup %s for %s: %w", s.Cgroup, s.home, err)
	}
	return nil
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

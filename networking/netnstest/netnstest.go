// Package netnstest runs privileged networking tests in a private network namespace
// (and a private mount namespace), so that links, addresses, routes and traffic they
// make never touch the host: the test re-executes its own binary for just that test in
// namespaces that end with the process. PeerNS gives a test a second namespace, for
// the other end of a veth pair.
package netnstest

import (
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

const envKey = "KILN_NETNSTEST_CHILD"

// InNetNS returns false in the copy of the test that runs inside the private
// namespaces (it then runs the body); it returns true in the parent once that copy has
// run. Top-level tests only. It skips, with why, when not root.
func InNetNS(t *testing.T, why string) bool {
	t.Helper()
	if os.Getenv(envKey) == t.Name() {
		return false
	}
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s in a private network namespace", why)
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("netnstest.InNetNS works for top-level tests only, not %s", t.Name())
	}
	args := []string{"-test.run", "^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count", "1", "-test.v"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envKey+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a private network namespace: %v\n%s", t.Name(), err, out)
	}
	if strings.Contains(string(out), "--- SKIP: "+t.Name()) {
		t.Skipf("skipped in the namespace:\n%s", out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not run in the namespace:\n%s", t.Name(), out)
	}
	t.Logf("ran in a private network namespace:\n%s", out)
	return true
}

// PeerNS creates a second network namespace, closed (and so removed) at the end of
// the test.
func PeerNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	Do(t, netns.None(), func() {
		var err error
		if ns, err = netns.New(); err != nil {
			t.Fatalf("new network namespace: %v", err)
		}
	})
	t.Cleanup(func() { ns.Close() })
	return ns
}

// Do runs f on a thread in ns (the test's own namespace when ns is netns.None()),
// and returns the thread to the test's namespace. Sockets f opens stay in ns.
func Do(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("current network namespace: %v", err)
	}
	defer orig.Close()
	if ns != netns.None() {
		if err := netns.Set(ns); err != nil {
			t.Fatalf("enter network namespace: %v", err)
		}
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace; let it die with the goroutine.
			panic("netnstest: cannot return to the test's network namespace: " + err.Error())
		}
	}()
	f()
}

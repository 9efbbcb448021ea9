// Package nstest runs privileged tests in a private mount namespace, so their mounts
// never touch the host: the test re-executes its own binary for just that test, in a
// new mount namespace with every mount private (Go's os/exec does the MS_PRIVATE
// remount when it unshares CLONE_NEWNS).
package nstest

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

const envKey = "KILN_NSTEST_CHILD"

// InMountNS returns false when the caller is the copy inside the private mount
// namespace and should run the test body; it returns true in the parent after the
// child has run (the parent then returns). Top-level tests only. It skips, with why,
// when not root.
//
//	func TestX(t *testing.T) {
//		if nstest.InMountNS(t, "loop-mounts a squashfs") {
//			return
//		}
//		...
//	}
func InMountNS(t *testing.T, why string) bool {
	t.Helper()
	if os.Getenv(envKey) == t.Name() {
		return false
	}
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s in a private mount namespace", why)
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("nstest.InMountNS works for top-level tests only, not %s", t.Name())
	}
	args := []string{"-test.run", "^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count", "1", "-test.v"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envKey+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a private mount namespace: %v\n%s", t.Name(), err, out)
	}
	if strings.Contains(string(out), "--- SKIP: "+t.Name()) {
		t.Skipf("skipped in the namespace:\n%s", out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not run in the namespace:\n%s", t.Name(), out)
	}
	t.Logf("ran in a private mount namespace:\n%s", out)
	return true
}

package itest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/tools/internal/procnode"
)

// bins holds the binaries built once for the whole package.
var bins struct {
	dir      string
	machined string
	kctl     string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kiln-itest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir = dir
	bins.machined, bins.kctl, err = procnode.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// kctl runs the kctl binary and returns its combined output and error.
func kctl(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.kctl, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustKctl runs kctl and fails the test when it exits non-zero.
func mustKctl(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, err := kctl(t, env, args...)
	if err != nil {
		t.Fatalf("kctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// exitCode returns the exit code carried by err from exec, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

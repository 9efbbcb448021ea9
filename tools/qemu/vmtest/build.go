package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/kiln-os/kiln/tools/qemu"
)

// BuildTest compiles the tests of package pkg (an import path or a directory
// relative to the working directory) for arch with `go test -c`, statically
// (CGO_ENABLED=0), and returns the binary.
func BuildTest(t testing.TB, arch qemu.Arch, pkg string) []byte {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out := filepath.Join(t.TempDir(), "test.bin")
	cmd := exec.Command(goBin, "test", "-c", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+string(arch))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c %s for %s: %v\n%s", pkg, arch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

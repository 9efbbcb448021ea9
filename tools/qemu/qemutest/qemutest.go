// Package qemutest holds test helpers around package qemu: find a kernel to boot, build
// a static Go program for the guest, and start a VM whose serial log is saved as a test
// artifact when the test fails. Tests skip with a reason when QEMU or the kernel is
// missing.
package qemutest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-os/kiln/tools/qemu"
)

// InitMarker is the line the trivial test init (tools/qemu/internal/testinit) prints.
const InitMarker = "kiln-testinit: hello from PID 1"

// TestInitPackage is the import path of the trivial test init.
const TestInitPackage = "github.com/kiln-os/kiln/tools/qemu/internal/testinit"

// RepoRoot returns the directory holding Kiln's go.mod, found upwards from the working
// directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/kiln-os/kiln\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no Kiln go.mod above the working directory")
		}
		dir = parent
	}
}

var (
	kernelMu sync.Mutex
	kernels  = map[qemu.Arch]kernelResult{}
)

type kernelResult struct {
	path string
	err  error
}

// Kernel returns the path of a Debian kernel for arch: $KILN_TEST_KERNEL_AMD64 /
// $KILN_TEST_KERNEL_ARM64 when set, else /boot/vmlinuz-* extracted (once, into the user
// cache directory) from the linux-image .deb in <repo>/_out/cache, which `make inputs`
// fills. It skips the test when neither exists.
func Kernel(tb testing.TB, arch qemu.Arch) string {
	tb.Helper()
	if p := os.Getenv("KILN_TEST_KERNEL_" + strings.ToUpper(string(arch))); p != "" {
		return p
	}
	kernelMu.Lock()
	r, ok := kernels[arch]
	if !ok {
		r.path, r.err = extractKernel(arch)
		kernels[arch] = r
	}
	kernelMu.Unlock()
	if r.err != nil {
		tb.Skipf("needs a %s kernel: %v (run `make inputs` or set KILN_TEST_KERNEL_%s)", arch, r.err, strings.ToUpper(string(arch)))
	}
	return r.path
}

func extractKernel(arch qemu.Arch) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(root, "_out", "cache", "linux-image-*-"+string(arch)+"_*.deb"))
	if len(debs) == 0 {
		return "", fmt.Errorf("no linux-image-*-%s .deb in %s", arch, filepath.Join(root, "_out", "cache"))
	}
	deb := debs[len(debs)-1]
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "kiln-test-kernels", strings.TrimSuffix(filepath.Base(deb), ".deb"))
	out := filepath.Join(dir, "vmlinuz")
	if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
		return out, nil
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Test binaries of several packages may extract at once: each writes a file of its
	// own and renames it over out, which is complete whichever rename comes last.
	f, err := os.CreateTemp(dir, "vmlinuz.tmp-")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	f.Close()
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", err
	}
	defer os.Remove(tmp) // gone after the rename
	cmd := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -xO --wildcards './boot/vmlinuz-*' > "$2"`, "sh", deb, tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("extract kernel from %s: %w: %s", deb, err, b)
	}
	if fi, err := os.Stat(tmp); err != nil || fi.Size() == 0 {
		return "", fmt.Errorf("extract kernel from %s: no /boot/vmlinuz-*", deb)
	}
	return out, os.Rename(tmp, out)
}

// BuildGo builds a Go main package (import path) as a static binary for arch and
// returns its bytes.
func BuildGo(tb testing.TB, arch qemu.Arch, pkg string) []byte {
	tb.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out := filepath.Join(tb.TempDir(), "bin")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+string(arch))
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s for %s: %v\n%s", pkg, arch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestInitramfs builds the trivial test init for arch and packs it as /init into an
// initramfs in a temporary directory; it returns the initramfs path.
func TestInitramfs(tb testing.TB, arch qemu.Arch) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "initramfs-"+string(arch)+".cpio")
	if err := qemu.WriteInitramfs(p, qemu.File{Name: "init", Data: BuildGo(tb, arch, TestInitPackage)}); err != nil {
		tb.Fatal(err)
	}
	return p
}

// NeedQEMU skips the test when the QEMU binary for arch is not installed.
func NeedQEMU(tb testing.TB, arch qemu.Arch) {
	tb.Helper()
	if _, err := exec.LookPath(qemu.Binary(arch)); err != nil {
		tb.Skipf("needs %s: %v (apt-get install -t bookworm-backports qemu-system-x86 qemu-system-arm qemu-utils)", qemu.Binary(arch), err)
	}
}

// Start starts a VM for a test. When the test fails, the serial log is copied into the
// test's artifact directory and its path logged; the VM is killed at cleanup.
func Start(tb testing.TB, cfg qemu.Config) *qemu.VM {
	tb.Helper()
	arch := cfg.Arch
	if arch == "" {
		arch = qemu.HostArch()
	}
	NeedQEMU(tb, arch)
	vm, err := qemu.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			dst := filepath.Join(tb.ArtifactDir(), "serial.log")
			if err := vm.SaveLog(dst); err != nil {
				tb.Logf("save serial log: %v", err)
			} else {
				tb.Logf("serial log kept at %s (use go test -artifacts to keep it after the run)", dst)
				// CI keeps no artifacts: the end of the log goes into the
				// test's output too.
				tb.Log(SerialTail(dst))
			}
		}
		vm.Close()
	})
	return vm
}

// logTail is how much of a failed VM's serial log goes into the test's output.
const logTail = 16 << 10

// SerialTail is the end of a serial log, for a failed test's output: CI keeps no
// artifacts, so what a failed boot printed must be in the output itself.
func SerialTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(serial log: %v)", err)
	}
	return fmt.Sprintf("serial log, last %d bytes:\n%s", min(len(b), logTail), b[max(0, len(b)-logTail):])
}

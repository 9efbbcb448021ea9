package qemutest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/tools/qemu"
)

// KernelTree extracts the files of the kernel .deb for arch that match the tar
// wildcards (e.g. "./lib/modules/*/kernel/fs/squashfs/*") into a cache directory, once
// per pattern set, and returns that directory. It skips the test when no .deb exists.
func KernelTree(tb testing.TB, arch qemu.Arch, patterns ...string) string {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Skipf("needs the Kiln repository: %v", err)
	}
	debs, _ := filepath.Glob(filepath.Join(root, "_out", "cache", "linux-image-*-"+string(arch)+"_*.deb"))
	if len(debs) == 0 {
		tb.Skipf("needs a %s kernel .deb in _out/cache (run `make inputs`)", arch)
	}
	deb := debs[len(debs)-1]
	h := sha256.Sum256([]byte(deb + "\x00" + strings.Join(patterns, "\x00")))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "kiln-test-kernels", "tree-"+hex.EncodeToString(h[:8]))
	if _, err := os.Stat(filepath.Join(dir, ".done")); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		tb.Fatal(err)
	}
	script := `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "${@:3}"`
	args := append([]string{"-c", script, "bash", deb, tmp}, patterns...)
	if out, err := exec.Command("bash", args...).CombinedOutput(); err != nil {
		tb.Fatalf("extract %q from %s: %v\n%s", patterns, deb, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".done"), nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		tb.Fatal(fmt.Errorf("kernel tree: %w", err))
	}
	return dir
}

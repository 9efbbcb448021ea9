package qemutest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/images/kmod"
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
	tree, err := cachedTree(dir, func(dst string) error {
		script := `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "${@:3}"`
		args := append([]string{"-c", script, "bash", deb, dst}, patterns...)
		if out, err := exec.Command("bash", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("extract %q from %s: %w\n%s", patterns, deb, err, out)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return tree
}

// cachedTree returns dir once it holds a complete tree (a .done file in it), making it
// with extract when it does not. The test binaries of several packages run at once and
// may want the same tree: each extracts into a directory of its own and renames it into
// place complete, and a tree in place is never removed, so the first to finish wins and
// no test reads a tree another one is replacing.
func cachedTree(dir string, extract func(dst string) error) (string, error) {
	done := filepath.Join(dir, ".done")
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // still there only when another tree won
	if err := extract(tmp); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".done"), nil, 0o644); err != nil {
		return "", err
	}
	for range 2 {
		err = os.Rename(tmp, dir)
		if _, serr := os.Stat(done); serr == nil {
			return dir, nil // ours, or another test's that came first
		}
		// A tree without .done: left by an interrupted run of an older version,
		// which extracted in place.
		_ = os.RemoveAll(dir)
	}
	return "", fmt.Errorf("kernel tree: %w", err)
}

// ModuleSource reads the modules extracted under tree (by KernelTree) the way
// the image builder does — paths, built-ins, each module's .modinfo — for
// kmod.Resolve. files maps each manifest path to the extracted file.
func ModuleSource(tb testing.TB, tree string) (src kmod.Source, files map[string]string) {
	tb.Helper()
	rels, _ := filepath.Glob(filepath.Join(tree, "lib", "modules", "*"))
	if len(rels) != 1 {
		tb.Fatalf("want one kernel release in %s, got %q", tree, rels)
	}
	src = kmod.Source{Release: filepath.Base(rels[0]), Paths: map[string]string{}, Builtin: map[string]bool{}}
	files = map[string]string{}
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if n := kmod.NameFromPath(p); n != "" {
			rel, _ := filepath.Rel(tree, p)
			src.Paths[n] = rel
			files[rel] = p
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rels[0], "modules.builtin")); err == nil {
		src.Builtin = kmod.ParseBuiltin(b)
	}
	src.Info = func(name string) (kmod.Info, error) {
		p := filepath.Join(tree, src.Paths[name])
		b, err := os.ReadFile(p)
		if err != nil {
			return kmod.Info{}, err
		}
		return kmod.ReadInfo(p, b)
	}
	return src, files
}

// ResolveModules resolves the early and late module sets of src into a
// manifest, failing the test when it cannot.
func ResolveModules(tb testing.TB, src kmod.Source, early, late []string) *kmod.Manifest {
	tb.Helper()
	m, err := kmod.Resolve(src, early, late)
	if err != nil {
		tb.Fatalf("resolve modules: %v", err)
	}
	return m
}

// ModuleByPath returns the manifest's module at path rel, or nil.
func ModuleByPath(m *kmod.Manifest, rel string) *kmod.Module {
	for i := range m.Modules {
		if m.Modules[i].Path == rel {
			return &m.Modules[i]
		}
	}
	return nil
}

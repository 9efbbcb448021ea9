package kernel

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kmod"
)

// inputsDir is $KILN_INPUTS, or the repository's _out/cache.
func inputsDir() string {
	if dir := os.Getenv("KILN_INPUTS"); dir != "" {
		return dir
	}
	return filepath.Join("..", "..", "_out", "cache")
}

func store(t *testing.T) *inputs.Store {
	t.Helper()
	st := inputs.NewStore(inputsDir(), nil)
	if _, err := st.Path(boards.GenericARM64().Kernel().Package); err != nil {
		t.Skipf("needs inputs: run make inputs (%v)", err)
	}
	return st
}

func TestExtractARM64(t *testing.T) {
	if testing.Short() {
		t.Skip("reading the 100 MB kernel package takes ~15 s; skipped in -short mode")
	}
	st := store(t)
	cache := t.TempDir()
	b := boards.GenericARM64()
	e, err := Extract(st, b, cache, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if e.Release != b.Kernel().Release {
		t.Errorf("Release = %q, want %q", e.Release, b.Kernel().Release)
	}
	pos := map[string]int{}
	for i, m := range e.Manifest.Modules {
		pos[m.Name] = i
		if _, err := os.Stat(e.ModulePath(m)); err != nil {
			t.Errorf("module %s: %v", m.Name, err)
		}
	}
	for i, m := range e.Manifest.Modules {
		for _, d := range m.Depends {
			if j, ok := pos[d]; !ok || j > i {
				t.Errorf("module %s loads before its dependency %s", m.Name, d)
			}
		}
	}
	for _, early := range []string{"squashfs", "ext4", "jbd2", "virtio_blk", "nvme", "loop"} {
		i, ok := pos[early]
		if !ok || e.Manifest.Modules[i].Stage != kmod.Early {
			t.Errorf("module %s not in the early set", early)
		}
	}
	for _, late := range []string{"dm_verity", "overlay", "bridge"} {
		i, ok := pos[late]
		if !ok || e.Manifest.Modules[i].Stage != kmod.Late {
			t.Errorf("module %s not in the late set", late)
		}
	}
	vn := e.Manifest.Modules[pos["virtio_net"]]
	if vn.Stage != kmod.Late || !slices.Contains(vn.Aliases, "virtio:d00000001v*") {
		t.Errorf("virtio_net = %+v, want late with alias virtio:d00000001v*", vn)
	}
	// A second call reuses the cache.
	again, err := Extract(st, b, cache, slog.New(slog.DiscardHandler))
	if err != nil || again.Dir != e.Dir {
		t.Errorf("second Extract = %v, %v; want the cached %s", again, err, e.Dir)
	}
}

package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kernel"
)

// Shared across the package's tests: extracting a kernel from its package takes ~15 s.
var (
	cacheDir string
	binMu    sync.Mutex
	bins     = map[boards.Arch]string{}
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "kiln-build-test-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// inputsDir returns the inputs cache or skips the test.
func inputsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KILN_INPUTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "_out", "cache")
	}
	for _, b := range boards.All() {
		for _, ref := range boards.Packages(b) {
			_ = ref
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ca-certificates_20250419~deb12u2_all.deb")); err != nil {
		t.Skip("needs inputs: run make inputs (images/fetch-inputs.sh)")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// testInit builds images/internal/testinit for arch once per test run.
func testInit(t testing.TB, arch boards.Arch) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := bins[arch]; ok {
		return p
	}
	out := filepath.Join(cacheDir, "testinit-"+string(arch))
	if err := GoBuild(context.Background(), ".", "../internal/testinit", arch, out); err != nil {
		t.Fatal(err)
	}
	bins[arch] = out
	return out
}

// testOptions are the options of a test build of b into out.
func testOptions(t testing.TB, b boards.Board, out string, formats ...boards.Format) Options {
	t.Helper()
	inDir := inputsDir(t)
	if err := kernel.Ready(inputs.NewStore(inDir, nil), b); err != nil {
		t.Skipf("needs the built kernel: %v", err)
	}
	init := testInit(t, b.Arch())
	return Options{
		Board:     b,
		Formats:   formats,
		OutputDir: out,
		InputsDir: inDir,
		CacheDir:  cacheDir,
		Init:      init,
		Machined:  init,
		Epoch:     DefaultEpoch,
	}
}

func sha(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

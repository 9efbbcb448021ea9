package qemutest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// slowExtract writes n files one after another, slowly enough for extractions that
// start together to overlap.
func slowExtract(n int) func(dst string) error {
	return func(dst string) error {
		for i := range n {
			if err := os.WriteFile(filepath.Join(dst, fmt.Sprintf("f%d", i)), []byte{byte(i)}, 0o644); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
		}
		return nil
	}
}

// TestCachedTreeConcurrent: extractions of the same tree at once all return the tree
// complete, and leave no temporary directory behind (several test binaries extract the
// kernel's modules at once on a new machine).
func TestCachedTreeConcurrent(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "tree-x")
	const workers, files = 8, 20
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := cachedTree(dir, slowExtract(files))
			if err == nil && got != dir {
				err = fmt.Errorf("got %s, want %s", got, dir)
			}
			if err == nil {
				// What a test does next: read the tree while others may still finish.
				for i := range files {
					if _, serr := os.Stat(filepath.Join(got, fmt.Sprintf("f%d", i))); serr != nil {
						err = serr
						break
					}
				}
			}
			errs[w] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "tree-x" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("cache holds %q, want only tree-x", names)
	}
}

// TestCachedTreeReplacesIncomplete: a tree without .done (an interrupted extraction in
// place) is replaced; a complete one is used as it is.
func TestCachedTreeReplacesIncomplete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree-y")
	if err := os.MkdirAll(filepath.Join(dir, "stale"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := cachedTree(dir, slowExtract(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the incomplete tree's files are still there (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "f1")); err != nil {
		t.Error(err)
	}
	called := false
	if _, err := cachedTree(dir, func(string) error { called = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if called {
		t.Error("a complete tree was extracted again")
	}
}

// TestCachedTreeExtractError: a failed extraction is reported and leaves nothing.
func TestCachedTreeExtractError(t *testing.T) {
	parent := t.TempDir()
	boom := errors.New("boom")
	if _, err := cachedTree(filepath.Join(parent, "tree-z"), func(string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("a failed extraction left %d entries", len(ents))
	}
}

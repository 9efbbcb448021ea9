package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	return s
}

func saveT(t *testing.T, s *Store, data string) {
	t.Helper()
	if err := s.Save([]byte(data)); err != nil {
		t.Fatalf("Save(%q): %v", data, err)
	}
}

func TestLoadFallback(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		want    string
		wantErr bool
	}{
		{name: "intact", damage: func(*testing.T, string) {}, want: "new"},
		{name: "current missing", damage: func(t *testing.T, dir string) {
			rm(t, filepath.Join(dir, currentName))
		}, want: "old"},
		{name: "current truncated", damage: func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, currentName), 2)
		}, want: "old"},
		{name: "current header torn", damage: func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, currentName), 30)
		}, want: "old"},
		{name: "current empty", damage: func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, currentName), 1000)
		}, want: "old"},
		{name: "current bit flip", damage: func(t *testing.T, dir string) {
			flipLastByte(t, filepath.Join(dir, currentName))
		}, want: "old"},
		{name: "current extra bytes", damage: func(t *testing.T, dir string) {
			appendTo(t, filepath.Join(dir, currentName), "x")
		}, want: "old"},
		{name: "both corrupt", damage: func(t *testing.T, dir string) {
			flipLastByte(t, filepath.Join(dir, currentName))
			flipLastByte(t, filepath.Join(dir, prevName))
		}, wantErr: true},
		{name: "current corrupt, previous missing", damage: func(t *testing.T, dir string) {
			flipLastByte(t, filepath.Join(dir, currentName))
			rm(t, filepath.Join(dir, prevName))
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			saveT(t, s, "old config\n")
			saveT(t, s, "new config\n")
			tt.damage(t, dir)
			s = openT(t, dir)
			got, err := s.Load()
			if tt.wantErr {
				if !errors.Is(err, ErrNoConfig) {
					t.Fatalf("Load() = %q, %v, want ErrNoConfig", got, err)
				}
				if sum := s.Checksum(); sum != "" {
					t.Errorf("Checksum() = %q, want \"\"", sum)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(): %v", err)
			}
			want := tt.want + " config\n"
			if string(got) != want {
				t.Errorf("Load() = %q, want %q", got, want)
			}
			h := sha256.Sum256([]byte(want))
			if got, want := s.Checksum(), hex.EncodeToString(h[:]); got != want {
				t.Errorf("Checksum() = %q, want %q", got, want)
			}
		})
	}
}

func TestEmptyStore(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "state"))
	if got, err := s.Load(); !errors.Is(err, ErrNoConfig) {
		t.Errorf("Load() = %q, %v, want ErrNoConfig", got, err)
	}
	if got := s.Checksum(); got != "" {
		t.Errorf("Checksum() = %q, want \"\"", got)
	}
}

func TestSaveOverCorruptKeepsGoodPrevious(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	saveT(t, s, "a")
	saveT(t, s, "b")
	flipLastByte(t, filepath.Join(dir, currentName)) // "b" is now bad; "a" is the fallback
	saveT(t, s, "c")
	rm(t, filepath.Join(dir, currentName))
	got, err := s.Load()
	if err != nil || string(got) != "a" {
		t.Errorf("Load() after losing current = %q, %v, want \"a\"", got, err)
	}
}

func TestSaveSameKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	saveT(t, s, "a")
	saveT(t, s, "b")
	saveT(t, s, "b")
	rm(t, filepath.Join(dir, currentName))
	got, err := s.Load()
	if err != nil || string(got) != "a" {
		t.Errorf("Load() = %q, %v, want \"a\"", got, err)
	}
}

func TestOpenRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, currentName+tmpSuffix)
	if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	openT(t, dir)
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale %s still there after Open: %v", tmp, err)
	}
}

func TestStaged(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if s.HasStaged() {
		t.Errorf("HasStaged() = true on an empty store")
	}
	if data, ok, err := s.Staged(); ok || err != nil || data != nil {
		t.Errorf("Staged() on an empty store = %q, %v, %v", data, ok, err)
	}
	if err := s.PromoteStaged(); err != nil {
		t.Errorf("PromoteStaged() on an empty store = %v", err)
	}
	for _, data := range []string{"first", "second"} {
		if err := s.SaveStaged([]byte(data)); err != nil {
			t.Fatalf("SaveStaged(%q): %v", data, err)
		}
	}
	if !s.HasStaged() {
		t.Errorf("HasStaged() = false after SaveStaged")
	}
	if _, err := s.Load(); !errors.Is(err, ErrNoConfig) {
		t.Errorf("staging touched the current config: Load() error = %v", err)
	}
	s = openT(t, dir)
	data, ok, err := s.Staged()
	if diff := cmp.Diff("second", string(data)); diff != "" || !ok || err != nil {
		t.Errorf("Staged() = %q, %v, %v, want \"second\", true, nil", data, ok, err)
	}
	if !s.HasStaged() {
		t.Errorf("HasStaged() = false after Staged (it must not remove)")
	}
	if err := s.PromoteStaged(); err != nil {
		t.Fatalf("PromoteStaged() = %v", err)
	}
	if s.HasStaged() {
		t.Errorf("HasStaged() = true after PromoteStaged")
	}
	if cur, err := s.Load(); err != nil || string(cur) != "second" {
		t.Errorf("after PromoteStaged, Load() = %q, %v, want the staged config \"second\"", cur, err)
	}
	if err := s.SaveStaged([]byte("third")); err != nil {
		t.Fatal(err)
	}
	if err := s.DiscardStaged(); err != nil || s.HasStaged() {
		t.Errorf("DiscardStaged() = %v, HasStaged() = %v", err, s.HasStaged())
	}
	if cur, _ := s.Load(); string(cur) != "second" {
		t.Errorf("DiscardStaged changed the current config to %q", cur)
	}
}

func TestStagedCorruptIsDiscarded(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if err := s.SaveStaged([]byte("staged")); err != nil {
		t.Fatal(err)
	}
	flipLastByte(t, filepath.Join(dir, stagedName))
	if data, ok, err := s.Staged(); err == nil || ok {
		t.Errorf("Staged() of a corrupt file = %q, %v, %v, want an error", data, ok, err)
	}
	if s.HasStaged() {
		t.Errorf("corrupt staged config was not removed")
	}
}

func rm(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, cut int) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, max(0, st.Size()-int64(cut))); err != nil {
		t.Fatal(err)
	}
}

func flipLastByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

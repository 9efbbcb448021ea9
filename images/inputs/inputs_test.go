package inputs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kiln-os/kiln/boards"
)

func TestDefaultLockCoversBoards(t *testing.T) {
	l := DefaultLock()
	for _, b := range boards.All() {
		for _, ref := range boards.Packages(b) {
			if _, err := l.Find(ref); err != nil {
				t.Errorf("board %s: %v", b.Name(), err)
			}
		}
	}
}

func TestParseLockErrors(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		name, text, want string
	}{
		{"fields", "pkg amd64 1.0\n", "lock line 1: want 5 fields"},
		{"hash", "pkg amd64 1.0 xyz pkg.deb\n", `lock line 1: pkg: "xyz" is not a sha256`},
		{"file", "pkg amd64 1.0 " + sum + " ../x.deb\n", "must be a plain file name"},
		{"dup", "p a 1 " + sum + " p.deb\np a 1 " + sum + " p.deb\n", "lock line 2: p:a pinned twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseLock(strings.NewReader(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseLock(%q) error = %v, want containing %q", tt.text, err, tt.want)
			}
		})
	}
}

func TestStorePath(t *testing.T) {
	dir := t.TempDir()
	content := []byte("a debian package")
	sum := sha256.Sum256(content)
	good := hex.EncodeToString(sum[:])
	lock, err := ParseLock(strings.NewReader(
		"# test\nok amd64 1 " + good + " ok.deb\n" +
			"bad amd64 1 " + good + " bad.deb\n" +
			"gone amd64 1 " + good + " gone.deb\n"))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string][]byte{"ok.deb": content, "bad.deb": []byte("tampered")} {
		if err := os.WriteFile(filepath.Join(dir, name), c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := NewStore(dir, lock)

	p, err := st.Path(boards.PackageRef{Name: "ok", Arch: "amd64"})
	if diff := cmp.Diff(filepath.Join(dir, "ok.deb"), p); err != nil || diff != "" {
		t.Errorf("Path(ok) = %q, %v (diff %s)", p, err, diff)
	}

	_, err = st.Path(boards.PackageRef{Name: "bad", Arch: "amd64"})
	var he *HashError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "input bad:amd64 1:") {
		t.Errorf("Path(bad) error = %v, want a HashError naming the package", err)
	}

	_, err = st.Path(boards.PackageRef{Name: "gone", Arch: "amd64"})
	var me *MissingError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "input gone:amd64 1 missing") {
		t.Errorf("Path(gone) error = %v, want a MissingError naming the package", err)
	}

	_, err = st.Path(boards.PackageRef{Name: "other", Arch: "arm64"})
	if err == nil || !strings.Contains(err.Error(), "other:arm64 is not pinned") {
		t.Errorf("Path(other) error = %v, want not pinned", err)
	}
}

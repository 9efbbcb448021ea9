// Package inputs pins, fetches and verifies the Debian packages a node image is built
// from. inputs.lock names each package with version and sha256; Fetch downloads them with
// apt-get download (the only step that touches the network); Store hands the builder
// verified paths from a cache or an offline directory (--inputs DIR).
package inputs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kiln-os/kiln/boards"
)

//go:embed inputs.lock
var lockText []byte

// Entry is one pinned package.
type Entry struct {
	Package string
	Arch    string // Debian architecture or "all"
	Version string
	SHA256  string // hex
	File    string // file name apt-get download writes
}

// Ref is the entry's package reference.
func (e Entry) Ref() boards.PackageRef { return boards.PackageRef{Name: e.Package, Arch: e.Arch} }

// Lock is the parsed lock file.
type Lock struct {
	Entries []Entry
}

// DefaultLock is the lock file built into this binary (images/inputs/inputs.lock).
func DefaultLock() *Lock {
	l, err := ParseLock(bytes.NewReader(lockText))
	if err != nil {
		panic(fmt.Sprintf("embedded inputs.lock: %v", err))
	}
	return l
}

// ParseLock reads a lock file: '#' comments, one package per line as
// "package arch version sha256 file".
func ParseLock(r io.Reader) (*Lock, error) {
	l := &Lock{}
	seen := map[boards.PackageRef]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 5 {
			return nil, fmt.Errorf("lock line %d: want 5 fields (package arch version sha256 file), got %d", n, len(f))
		}
		e := Entry{Package: f[0], Arch: f[1], Version: f[2], SHA256: f[3], File: f[4]}
		if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("lock line %d: %s: %q is not a sha256", n, e.Package, e.SHA256)
		}
		if strings.ContainsAny(e.File, "/\\") || e.File == ".." {
			return nil, fmt.Errorf("lock line %d: %s: file %q must be a plain file name", n, e.Package, e.File)
		}
		if seen[e.Ref()] {
			return nil, fmt.Errorf("lock line %d: %s pinned twice", n, e.Ref())
		}
		seen[e.Ref()] = true
		l.Entries = append(l.Entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read lock: %w", err)
	}
	return l, nil
}

// Find returns the entry pinning ref.
func (l *Lock) Find(ref boards.PackageRef) (Entry, error) {
	for _, e := range l.Entries {
		if e.Ref() == ref {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("package %s is not pinned in inputs.lock", ref)
}

// MissingError: the input is not in the inputs directory.
type MissingError struct {
	Entry Entry
	Path  string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("input %s %s missing: %s not found (run make inputs, or pass --inputs DIR holding it)",
		e.Entry.Ref(), e.Entry.Version, e.Path)
}

// HashError: the input's content does not match the lock.
type HashError struct {
	Entry Entry
	Path  string
	Got   string
}

func (e *HashError) Error() string {
	return fmt.Sprintf("input %s %s: %s has sha256 %s, inputs.lock wants %s (delete it and run make inputs)",
		e.Entry.Ref(), e.Entry.Version, e.Path, e.Got, e.Entry.SHA256)
}

// Store resolves pinned packages to verified files in Dir.
type Store struct {
	Dir  string
	Lock *Lock

	mu       sync.Mutex
	verified map[string]bool // path -> checked this run
}

// NewStore returns a store over dir with lock (nil: DefaultLock).
func NewStore(dir string, lock *Lock) *Store {
	if lock == nil {
		lock = DefaultLock()
	}
	return &Store{Dir: dir, Lock: lock, verified: map[string]bool{}}
}

// Path returns the path of ref's .deb after checking its sha256 against the lock.
func (s *Store) Path(ref boards.PackageRef) (string, error) {
	e, err := s.Lock.Find(ref)
	if err != nil {
		return "", err
	}
	p := filepath.Join(s.Dir, e.File)
	s.mu.Lock()
	ok := s.verified[p]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	got, err := fileSHA256(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", &MissingError{Entry: e, Path: p}
	}
	if err != nil {
		return "", fmt.Errorf("input %s: %w", ref, err)
	}
	if got != e.SHA256 {
		return "", &HashError{Entry: e, Path: p, Got: got}
	}
	s.mu.Lock()
	s.verified[p] = true
	s.mu.Unlock()
	return p, nil
}

// Verify checks every input the board needs and returns the first problem.
func (s *Store) Verify(b boards.Board) error {
	for _, ref := range boards.Packages(b) {
		if _, err := s.Path(ref); err != nil {
			return err
		}
	}
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Fetch downloads every entry of lock that dir lacks (or holds with a wrong hash) with
// apt-get download, then verifies it. It needs the Debian sources of PLATFORM.md
// (bookworm-backports, non-free-firmware, arm64 architecture).
func Fetch(ctx context.Context, lock *Lock, dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fetch inputs: %w", err)
	}
	st := NewStore(dir, lock)
	for _, e := range lock.Entries {
		if _, err := st.Path(e.Ref()); err == nil {
			continue
		}
		_ = os.Remove(filepath.Join(dir, e.File))
		spec := e.Package + ":" + e.Arch + "=" + e.Version
		if e.Arch == "all" {
			spec = e.Package + "=" + e.Version
		}
		log.Info("apt-get download", "package", spec)
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", spec)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %w: %s", spec, err, strings.TrimSpace(string(out)))
		}
		if _, err := st.Path(e.Ref()); err != nil {
			return err
		}
	}
	return nil
}

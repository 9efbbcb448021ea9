// Package fstree is an in-memory description of a filesystem to be written into an image
// (squashfs root, initramfs, FAT partitions): paths, modes and contents, with no owners or
// timestamps, so every writer can fix those and output stays reproducible.
package fstree

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Kind of an entry.
type Kind int

// Entry kinds.
const (
	Dir Kind = iota
	File
	Symlink
	CharDev
)

// Entry is one path of the tree. Paths are slash-separated, relative, without "." or "..".
type Entry struct {
	Path string
	Kind Kind
	Perm fs.FileMode // Unix permission bits, 0o7777 (0o1000 is sticky, not fs.ModeSticky)
	// Data is the content of a File, unless Src names a host file holding it.
	Data []byte
	Src  string
	// Target of a Symlink.
	Target string
	// Major, Minor of a CharDev.
	Major, Minor uint32
}

// Size is the entry's content length.
func (e Entry) Size() (int64, error) {
	if e.Kind != File {
		return 0, nil
	}
	if e.Src == "" {
		return int64(len(e.Data)), nil
	}
	st, err := os.Stat(e.Src)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// ReadAll returns the content of a File.
func (e Entry) ReadAll() ([]byte, error) {
	if e.Src == "" {
		return e.Data, nil
	}
	return os.ReadFile(e.Src)
}

// Tree is a set of entries. Parent directories are implied (mode 0755).
type Tree struct {
	entries map[string]Entry
}

// New returns an empty tree.
func New() *Tree { return &Tree{entries: map[string]Entry{}} }

func clean(p string) (string, error) {
	c := path.Clean("/" + p)[1:]
	if c == "" || strings.Contains(p, "\\") {
		return "", fmt.Errorf("bad path %q", p)
	}
	return c, nil
}

// Add puts e into the tree; an existing entry at the same path is an error unless both are
// directories.
func (t *Tree) Add(e Entry) error {
	p, err := clean(e.Path)
	if err != nil {
		return err
	}
	e.Path = p
	e.Perm &= 0o7777
	if old, ok := t.entries[p]; ok {
		if old.Kind == Dir && e.Kind == Dir {
			t.entries[p] = e
			return nil
		}
		return fmt.Errorf("%s added twice", p)
	}
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if old, ok := t.entries[d]; ok && old.Kind != Dir {
			return fmt.Errorf("%s: parent %s is not a directory", p, d)
		}
	}
	t.entries[p] = e
	return nil
}

// AddData adds a file with the given content.
func (t *Tree) AddData(p string, perm fs.FileMode, data []byte) error {
	return t.Add(Entry{Path: p, Kind: File, Perm: perm, Data: data})
}

// AddFile adds a file whose content is read from the host file src when written.
func (t *Tree) AddFile(p string, perm fs.FileMode, src string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("add %s: %w", p, err)
	}
	return t.Add(Entry{Path: p, Kind: File, Perm: perm, Src: src})
}

// AddDir adds a directory.
func (t *Tree) AddDir(p string, perm fs.FileMode) error {
	return t.Add(Entry{Path: p, Kind: Dir, Perm: perm})
}

// AddSymlink adds a symbolic link.
func (t *Tree) AddSymlink(p, target string) error {
	return t.Add(Entry{Path: p, Kind: Symlink, Perm: 0o777, Target: target})
}

// AddHost copies a host file or directory tree to dst: regular files keep their
// permission bits, symlinks their target; owners and times are not taken.
func (t *Tree) AddHost(dst, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("add %s: %w", src, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return t.AddDir(target, unixPerm(info.Mode()))
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return t.AddSymlink(target, l)
		case info.Mode().IsRegular():
			return t.Add(Entry{Path: target, Kind: File, Perm: unixPerm(info.Mode()), Src: p})
		}
		return fmt.Errorf("add %s: %s is neither file, directory nor symlink", src, p)
	})
}

// Get returns the entry at p.
func (t *Tree) Get(p string) (Entry, bool) {
	c, err := clean(p)
	if err != nil {
		return Entry{}, false
	}
	e, ok := t.entries[c]
	return e, ok
}

// Entries returns every entry, implied parents included, sorted by path so that a
// directory comes before its contents.
func (t *Tree) Entries() []Entry {
	all := map[string]Entry{}
	for p, e := range t.entries {
		all[p] = e
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				if ex, ok := t.entries[d]; ok {
					all[d] = ex
				} else {
					all[d] = Entry{Path: d, Kind: Dir, Perm: 0o755}
				}
			}
		}
	}
	out := make([]Entry, 0, len(all))
	for _, e := range all {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Stage writes the tree below dir on the host (for external tools such as mksquashfs).
// Character devices are skipped: they need root and images made by tools get them from
// a pseudo-file definition instead.
func (t *Tree) Stage(dir string) error {
	for _, e := range t.Entries() {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		switch e.Kind {
		case Dir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case File:
			if err := stageFile(e, p); err != nil {
				return fmt.Errorf("stage %s: %w", e.Path, err)
			}
		case Symlink:
			if err := os.Symlink(e.Target, p); err != nil {
				return fmt.Errorf("stage %s: %w", e.Path, err)
			}
		case CharDev:
			continue
		}
		if e.Kind == File {
			// Chmod after writing: the umask must not change what the image holds.
			if err := os.Chmod(p, goMode(e.Perm)); err != nil {
				return fmt.Errorf("stage %s: %w", e.Path, err)
			}
		}
	}
	// Directories last, deepest first, so a read-only directory does not block its contents.
	entries := t.Entries()
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; e.Kind == Dir {
			if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(e.Path)), goMode(e.Perm)); err != nil {
				return fmt.Errorf("stage %s: %w", e.Path, err)
			}
		}
	}
	return nil
}

// stageFile writes e's content to p, streaming host files (components are hundreds
// of MB) instead of holding them in memory.
func stageFile(e Entry, p string) error {
	if e.Src == "" {
		return os.WriteFile(p, e.Data, 0o600)
	}
	r, err := os.Open(e.Src)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// unixPerm turns Go's mode bits into Unix permission bits.
func unixPerm(m fs.FileMode) fs.FileMode {
	p := m.Perm()
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// goMode turns Unix permission bits into Go's mode bits (for os.Chmod).
func goMode(p fs.FileMode) fs.FileMode {
	m := p & 0o777
	if p&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if p&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if p&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

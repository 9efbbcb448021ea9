// Package resolv writes /etc/resolv.conf: rendered from a list of nameservers and
// search domains, replaced atomically (a temporary file in the same directory, synced
// and renamed) so that a reader never sees half a file.
package resolv

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// DefaultPath is the resolver configuration of the node.
const DefaultPath = "/etc/resolv.conf"

// maxNameservers is the number of nameserver lines the C library and Go's resolver
// read (MAXNS); more are dropped rather than silently ignored by the reader.
const maxNameservers = 3

// Render returns the content of resolv.conf for the nameservers and search domains.
func Render(servers []netip.Addr, search []string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by machined (Kiln); changes are overwritten.\n")
	n := 0
	for _, s := range servers {
		if !s.IsValid() || n == maxNameservers {
			continue
		}
		fmt.Fprintf(&b, "nameserver %s\n", s.WithZone(""))
		n++
	}
	if len(search) > 0 {
		b.WriteString("search")
		for _, d := range search {
			b.WriteString(" " + d)
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// Write replaces path with the rendered configuration, atomically. It leaves an
// identical file alone and reports whether it wrote.
func Write(path string, servers []netip.Addr, search []string) (bool, error) {
	data := Render(servers, search)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

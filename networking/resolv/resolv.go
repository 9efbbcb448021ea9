// Package resolv writes the files the C library and Go's resolver read for
// names: /etc/resolv.conf (nameservers, search domains), /etc/hosts and
// /etc/hostname. Each is replaced atomically (a temporary file in the same
// directory, synced and renamed) so that a reader never sees half a file, and
// an identical file is left alone.
package resolv

import (
	"bytes"
	"fmt"
	"github.com/kiln-os/kiln/machined/atomicfile"
	"net/netip"
	"os"
	"strings"
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
	return WriteFile(path, Render(servers, search))
}

// Host is an /etc/hosts line.
type Host struct {
	IP    netip.Addr
	Names []string
}

// RenderHosts returns /etc/hosts: localhost, the node's own name on
// 127.0.1.1 (as Debian does, so that it resolves without a network) and the
// extra entries.
func RenderHosts(hostname string, extra []Host) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by machined (Kiln); changes are overwritten.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" {
		short, _, _ := strings.Cut(hostname, ".")
		if short != hostname {
			fmt.Fprintf(&b, "127.0.1.1\t%s %s\n", hostname, short)
		} else {
			fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
		}
	}
	for _, h := range extra {
		if !h.IP.IsValid() || len(h.Names) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s\t%s\n", h.IP, strings.Join(h.Names, " "))
	}
	return b.Bytes()
}

// WriteFile replaces path with data, atomically, mode 0644. It leaves an
// identical file alone and reports whether it wrote.
func WriteFile(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// Parse reads the nameservers and search domains of a resolv.conf.
func Parse(data []byte) (servers []netip.Addr, search []string) {
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil {
				servers = append(servers, a)
			}
		case "search", "domain":
			search = append(search, f[1:]...)
		}
	}
	return servers, search
}

package boot

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountInfo is one line of /proc/self/mountinfo.
type MountInfo struct {
	ID, Parent int
	Target     string
	FSType     string
	Source     string
}

// ParseMountInfo parses /proc/self/mountinfo (mount order: a mount's line comes after
// its parent's).
func ParseMountInfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", sc.Text())
		}
		var m MountInfo
		if _, err := fmt.Sscan(f[0], &m.ID); err != nil {
			return nil, fmt.Errorf("mountinfo: %q: %w", sc.Text(), err)
		}
		if _, err := fmt.Sscan(f[1], &m.Parent); err != nil {
			return nil, fmt.Errorf("mountinfo: %q: %w", sc.Text(), err)
		}
		m.Target = unescapeOctal(f[4])
		m.FSType, m.Source = g[0], unescapeOctal(g[1])
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeOctal undoes the kernel's \040-style escaping of spaces, tabs, newlines and
// backslashes in mount paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountOrder returns the targets to unmount on shutdown: children before parents
// (reverse mount order), "/" excluded.
func UnmountOrder(ms []MountInfo) []string {
	var out []string
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Target != "/" {
			out = append(out, ms[i].Target)
		}
	}
	return out
}

// UnmountAll unmounts everything but / in reverse order. A busy mount is remounted
// read-only instead (the data is safe then) and, as a last resort, detached. The root
// is remounted read-only at the end.
func UnmountAll(log *slog.Logger) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		log.Error("shutdown: read mounts", "err", err)
		return
	}
	ms, err := ParseMountInfo(strings.NewReader(string(b)))
	if err != nil {
		log.Error("shutdown: read mounts", "err", err)
		return
	}
	for _, t := range UnmountOrder(ms) {
		if err := unix.Unmount(t, 0); err == nil {
			continue
		} else if err == unix.EINVAL || err == unix.ENOENT {
			continue // already gone with its parent
		}
		if err := unix.Mount("", t, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			log.Debug("shutdown: remount read-only", "target", t, "err", err)
		}
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil {
			log.Debug("shutdown: detach", "target", t, "err", err)
		}
	}
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
}

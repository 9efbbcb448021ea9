package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Mount is one mount(2) call.
type Mount struct {
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
}

const (
	nosuid = unix.MS_NOSUID
	nodev  = unix.MS_NODEV
	noexec = unix.MS_NOEXEC
)

// EarlyMounts are the kernel filesystems init mounts first, parents before children.
// cgroup v2 only (no v1 hierarchy is ever mounted); bpffs so the service proxy can pin.
func EarlyMounts() []Mount {
	return []Mount{
		{"proc", "/proc", "proc", nosuid | nodev | noexec, ""},
		{"sysfs", "/sys", "sysfs", nosuid | nodev | noexec, ""},
		{"devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", nosuid | noexec, "gid=5,mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", nosuid | nodev, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", nosuid | nodev, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid | nodev | noexec, "nsdelegate,memory_recursiveprot"},
		{"bpf", "/sys/fs/bpf", "bpf", nosuid | nodev | noexec, "mode=0700"},
	}
}

// MountAll mounts each entry below root (root "/" on a node; a test directory in
// tests), creating targets. A target that already holds that filesystem (the kernel
// may have mounted devtmpfs itself) counts as mounted.
func MountAll(root string, ms []Mount) error {
	for _, m := range ms {
		if err := m.mount(root); err != nil {
			return err
		}
	}
	return nil
}

func (m Mount) mount(root string) error {
	target := filepath.Join(root, m.Target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", target, err)
	}
	err := unix.Mount(m.Source, target, m.FSType, m.Flags, m.Data)
	if errors.Is(err, unix.EBUSY) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.FSType, target, err)
	}
	return nil
}

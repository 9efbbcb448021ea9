package platform

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DetectFS names the filesystem on a device or image from its superblock magic:
// "ext4" (any ext2/3/4), "vfat", or "" when unknown.
func DetectFS(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, 2048)
	if _, err := f.ReadAt(b, 0); err != nil {
		return "", fmt.Errorf("read %s: %w", dev, err)
	}
	switch {
	case binary.LittleEndian.Uint16(b[0x438:]) == 0xEF53:
		return "ext4", nil
	case string(b[0x52:0x57]) == "FAT32", string(b[0x36:0x39]) == "FAT":
		return "vfat", nil
	}
	return "", nil
}

// MountPartition mounts a system-disk partition by label on target (created if
// missing), with the filesystem found on it. STATE is mounted nosuid,nodev,noexec;
// EPHEMERAL (/var) nosuid,nodev.
func MountPartition(d *Disk, label, target string) error {
	p, ok := d.Partitions[label]
	if !ok {
		return fmt.Errorf("mount %s: %s has no such partition", label, d.Dev)
	}
	fstype, err := DetectFS(p.Dev)
	if err != nil {
		return fmt.Errorf("mount %s: %w", label, err)
	}
	if fstype == "" {
		return fmt.Errorf("mount %s: no filesystem on %s", label, p.Dev)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOATIME)
	if label != LabelEphemeral {
		flags |= unix.MS_NOEXEC
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", label, err)
	}
	if err := unix.Mount(p.Dev, target, fstype, flags, ""); err != nil {
		return fmt.Errorf("mount %s (%s, %s) on %s: %w", label, p.Dev, fstype, target, err)
	}
	return nil
}

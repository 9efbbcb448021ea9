package boot

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MovedMounts are the early mounts carried into the new root by SwitchRoot.
var MovedMounts = []string{"/dev", "/proc", "/sys", "/run", "/tmp"}

// SwitchRoot makes newRoot the root: it moves the mounts in moves below it, frees the
// initramfs (deletes its files; the loop device keeps the squashfs image's inode alive),
// moves newRoot onto / and chroots into it (as util-linux and u-root switch_root do;
// pivot_root does not work on the initramfs' rootfs). Every target must exist in the new
// root: a squashfs cannot get new directories.
func SwitchRoot(newRoot string, moves []string) error {
	for _, m := range moves {
		dst := filepath.Join(newRoot, m)
		if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
			return fmt.Errorf("switch root: %s is missing in the new root (the image must have it): %v", m, err)
		}
		if err := unix.Mount(m, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch root: move %s to %s: %w", m, dst, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := deleteSameDev("/", st.Dev, newRoot); err != nil {
		return err
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount(newRoot, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	return nil
}

// deleteSameDev removes everything below dir that lives on device dev, except skip and
// other mounts. Errors are ignored: freeing the initramfs is best effort.
func deleteSameDev(dir string, dev uint64, skip string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if p == skip {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Dev != dev {
			continue
		}
		if e.IsDir() {
			_ = deleteSameDev(p, dev, skip)
		}
		_ = os.Remove(p)
	}
	return nil
}

// WritableCopy puts a tmpfs holding a copy of dir's current content over dir, so a
// directory of the read-only root (e.g. /etc for hostname and resolv.conf) becomes
// writable without an overlay. staging is an empty directory on a writable filesystem.
func WritableCopy(dir, staging string) error {
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return fmt.Errorf("writable %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("writable %s: %w", dir, err)
	}
	if err := unix.Mount("tmpfs", staging, "tmpfs", nosuid|nodev, fmt.Sprintf("mode=%o", fi.Mode().Perm())); err != nil {
		return fmt.Errorf("writable %s: mount tmpfs: %w", dir, err)
	}
	if err := copyTree(dir, staging); err != nil {
		_ = unix.Unmount(staging, 0)
		return fmt.Errorf("writable %s: %w", dir, err)
	}
	if err := unix.Mount(staging, dir, "", unix.MS_MOVE, ""); err != nil {
		_ = unix.Unmount(staging, 0)
		return fmt.Errorf("writable %s: move tmpfs: %w", dir, err)
	}
	return nil
}

// copyTree copies regular files, directories and symlinks with their modes and owners.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		st, _ := fi.Sys().(*unix.Stat_t)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, out); err != nil {
				return err
			}
		case fi.IsDir():
			if rel != "." {
				if err := os.Mkdir(out, fi.Mode().Perm()); err != nil {
					return err
				}
			}
			if err := os.Chmod(out, fi.Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid)); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := copyFile(p, out, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil // devices, fifos, sockets: none belong in /etc
		}
		if st != nil {
			_ = os.Lchown(out, int(st.Uid), int(st.Gid))
		}
		return nil
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

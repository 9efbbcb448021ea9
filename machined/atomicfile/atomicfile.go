// Package atomicfile replaces files so that readers, and a node after a power
// cut, find either the old or the new content, never a mix and never nothing.
// It is pure Go (kctl uses it too).
//
// The sequence is the usual one — temporary file in the same directory, write,
// fsync, rename, fsync of the directory — plus an fsync of the file under its
// new name. That last step matters on FAT (a Kiln node's STATE partition):
// vfat's rename writes the new directory entry with start cluster 0 and size 0
// and leaves the real values to the file's own inode writeback, which a
// directory fsync does not force.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, with permissions perm. The directory
// must exist.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Rename renames old to new durably: after it returns, new names the file
// (with its content and size) even across a power cut.
func Rename(old, new string) error {
	if err := os.Rename(old, new); err != nil {
		return err
	}
	f, err := os.Open(new)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("sync %s: %w", new, err)
	}
	return SyncDir(filepath.Dir(new))
}

// SyncDir fsyncs a directory, making the entries created, renamed or removed
// in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

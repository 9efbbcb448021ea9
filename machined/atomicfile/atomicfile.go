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
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteFile replaces path with data, with permissions perm. The directory
// must exist.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), tempPrefix(filepath.Base(path))+"*")
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

// tempPrefix is how the name of WriteFile's temporary file for a file named base
// begins; os.CreateTemp adds random digits.
func tempPrefix(base string) string { return "." + base + ".tmp-" }

// RemoveTemps removes from dir the temporary files WriteFile leaves when it is cut
// off (a crash or power cut between the temporary file's creation and its rename):
// a hidden name, ".<name>.tmp-" and digits. They may hold secrets (a key being
// replaced). Call it before anything writes in dir. It returns the names removed.
func RemoveTemps(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("remove temporary files in %s: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !isTemp(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("remove temporary files in %s: %w", dir, err)
	}
	return removed, nil
}

// isTemp says whether name is one of WriteFile's temporary files.
func isTemp(name string) bool {
	i := strings.LastIndex(name, ".tmp-")
	if !strings.HasPrefix(name, ".") || i < 2 {
		return false
	}
	digits := name[i+len(".tmp-"):]
	return digits != "" && strings.Trim(digits, "0123456789") == ""
}

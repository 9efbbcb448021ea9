package pki

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteDir writes the set under dir, each file atomically (temporary file
// in the same directory, fsync, rename), keys and kubeconfigs with mode 0600
// and certificates 0644, then fsyncs the directories. A reader never sees a
// half-written file; files not in the set are left alone.
func (s *Set) WriteDir(dir string) error {
	dirs := map[string]bool{}
	for _, f := range s.Files {
		path := filepath.Join(dir, filepath.FromSlash(f.Path))
		parent := filepath.Dir(path)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		dirs[parent] = true
		mode := os.FileMode(fileModePub)
		if f.Secret {
			mode = fileModeSecret
		}
		if err := writeAtomic(path, f.Data, mode); err != nil {
			return fmt.Errorf("pki: write %s: %w", path, err)
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("pki: sync %s: %w", d, err)
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

package disk

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/diskfs/go-diskfs/filesystem"

	"github.com/kiln-os/kiln/images/fstree"
)

// envMu serialises builds that set SOURCE_DATE_EPOCH for go-diskfs, which reads the
// timestamp of new FAT directory entries from the environment.
var envMu sync.Mutex

// withEpoch runs fn with SOURCE_DATE_EPOCH set to epoch, restoring the old value after.
func withEpoch(epoch int64, fn func() error) error {
	envMu.Lock()
	defer envMu.Unlock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch, 10))
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}()
	return fn()
}

// fillFAT writes the files and directories of t into a FAT filesystem.
func fillFAT(fsys filesystem.FileSystem, t *fstree.Tree, epoch int64) error {
	ts := time.Unix(epoch, 0).UTC()
	for _, e := range t.Entries() {
		p := "/" + e.Path
		switch e.Kind {
		case fstree.Dir:
			if err := fsys.Mkdir(p); err != nil {
				return fmt.Errorf("mkdir %s: %w", p, err)
			}
		case fstree.File:
			data, err := e.ReadAll()
			if err != nil {
				return fmt.Errorf("read %s: %w", e.Path, err)
			}
			f, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
			if err != nil {
				return fmt.Errorf("create %s: %w", p, err)
			}
			if _, err := f.Write(data); err != nil {
				f.Close()
				return fmt.Errorf("write %s: %w", p, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("close %s: %w", p, err)
			}
		default:
			return fmt.Errorf("%s: FAT holds only files and directories", e.Path)
		}
		if err := fsys.Chtimes(p, ts, ts, ts); err != nil {
			return fmt.Errorf("chtimes %s: %w", p, err)
		}
	}
	return nil
}

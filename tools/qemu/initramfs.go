package qemu

import (
	"fmt"
	"os"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// File is one regular file of a small initramfs.
type File struct {
	Name string // path inside the initramfs, without a leading slash, e.g. "init"
	Data []byte
	Mode uint64 // permission bits; 0 means 0755
}

// WriteInitramfs writes an uncompressed newc cpio archive holding dev/console (without
// it the kernel has no initial console) and files, reproducibly. It serves tests and the
// boot-floor benchmark; node images come from images/.
func WriteInitramfs(path string, files ...File) error {
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
	}
	for _, f := range files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		recs = append(recs, cpio.StaticRecord(f.Data, cpio.Info{
			Name:     strings.TrimPrefix(f.Name, "/"),
			Mode:     cpio.S_IFREG | mode,
			FileSize: uint64(len(f.Data)),
		}))
	}
	cpio.MakeAllReproducible(recs)
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	w := cpio.NewDedupWriter(cpio.Newc.Writer(out))
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		out.Close()
		return fmt.Errorf("initramfs %s: %w", path, err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		out.Close()
		return fmt.Errorf("initramfs %s: %w", path, err)
	}
	return out.Close()
}

// Package initramfs writes the initramfs: a newc cpio archive (u-root's pkg/cpio)
// compressed with zstd, with fixed owners, inode numbers and timestamps.
package initramfs

import (
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/kiln-os/kiln/images/fstree"
)

// Write writes t as a zstd-compressed newc archive to w. Every record gets mtime epoch,
// uid/gid 0 and an inode number from its position, so the bytes depend on t alone.
// The tree should hold dev/console (a CharDev 5:1): without it the kernel has no
// initial console for init.
func Write(w io.Writer, t *fstree.Tree, epoch int64) error {
	// One encoder goroutine: block boundaries, and so the output, do not depend on timing.
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := WriteCPIO(zw, t, epoch); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initramfs: zstd: %w", err)
	}
	return nil
}

// WriteCPIO writes t as an uncompressed newc archive.
func WriteCPIO(w io.Writer, t *fstree.Tree, epoch int64) error {
	rw := cpio.NewDedupWriter(cpio.Newc.Writer(w))
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	for i, e := range t.Entries() {
		var rec cpio.Record
		perm := uint64(e.Perm)
		switch e.Kind {
		case fstree.Dir:
			rec = cpio.Directory(e.Path, perm)
		case fstree.Symlink:
			rec = cpio.Symlink(e.Path, e.Target)
		case fstree.CharDev:
			rec = cpio.CharDev(e.Path, perm, uint64(e.Major), uint64(e.Minor))
		case fstree.File:
			if e.Src == "" {
				rec = cpio.StaticRecord(e.Data, cpio.Info{Name: e.Path, Mode: cpio.S_IFREG | perm})
				break
			}
			f, err := os.Open(e.Src)
			if err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
			open = append(open, f)
			st, err := f.Stat()
			if err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
			rec = cpio.Record{ReaderAt: f, Info: cpio.Info{Name: e.Path, Mode: cpio.S_IFREG | perm, FileSize: uint64(st.Size())}}
		}
		rec = cpio.MakeReproducible(rec)
		rec.Ino = uint64(i + 1)
		rec.NLink = 1
		if e.Kind == fstree.Dir {
			rec.NLink = 2
		}
		rec.MTime = uint64(epoch)
		if err := rw.WriteRecord(rec); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", e.Path, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// List reads a zstd-compressed (or plain) newc archive and returns its records.
func List(r io.ReaderAt) ([]cpio.Record, error) {
	return cpio.ReadAllRecords(cpio.Newc.Reader(r))
}

// Decompress returns the cpio bytes of a zstd-compressed initramfs.
func Decompress(compressed []byte) ([]byte, error) {
	zr, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return zr.DecodeAll(compressed, nil)
}

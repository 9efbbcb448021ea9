// Package inspect describes an image the builder wrote: a raw GPT disk (partitions, the
// files of its FAT filesystems, the UKI's kernel release and command line, whether STATE
// holds a machine config), a qcow2 header, an ISO's El Torito image, a UKI, or an
// initramfs.
package inspect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/kiln-os/kiln/images/disk"
	"github.com/kiln-os/kiln/images/initramfs"
	"github.com/kiln-os/kiln/images/iso"
	"github.com/kiln-os/kiln/images/qcow2"
	"github.com/kiln-os/kiln/images/uki"
)

// Kind of image.
type Kind string

// Kinds Inspect recognises.
const (
	KindRaw       Kind = "raw"
	KindQCOW2     Kind = "qcow2"
	KindISO       Kind = "iso"
	KindUKI       Kind = "uki"
	KindInitramfs Kind = "initramfs"
)

// Partition of a raw image.
type Partition struct {
	Number     int
	Label      string
	Type       string
	GUID       string
	Start, End uint64 // sectors
	Size       int64
	Files      []string // FAT partitions: every path, sorted
}

// Report is what Inspect finds.
type Report struct {
	Kind          Kind
	Size          int64
	DiskGUID      string
	Partitions    []Partition
	KernelRelease string
	Cmdline       string
	UKISections   map[string]uint32
	HasConfig     bool
	Files         []string // ISO boot image or initramfs
	QCOW2         *qcow2.Header
}

// File inspects the image at path.
func File(p string) (*Report, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	head := make([]byte, 0x8006)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	r := &Report{Size: st.Size()}
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		r.Kind = KindQCOW2
		h, err := qcow2.ReadHeader(bytes.NewReader(head))
		if err != nil {
			return nil, err
		}
		r.QCOW2 = &h
	case bytes.HasPrefix(head, []byte("MZ")):
		r.Kind = KindUKI
		if err := r.readUKI(f); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) || bytes.HasPrefix(head, []byte("070701")):
		r.Kind = KindInitramfs
		if err := r.readInitramfs(p); err != nil {
			return nil, err
		}
	case len(head) >= 0x8006 && string(head[0x8001:0x8006]) == "CD001":
		r.Kind = KindISO
		if err := r.readISO(f); err != nil {
			return nil, err
		}
	case len(head) >= 520 && string(head[512:520]) == "EFI PART":
		r.Kind = KindRaw
		if err := r.readRaw(p, f); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("inspect %s: not a raw GPT disk, qcow2, ISO, UKI or initramfs", p)
	}
	return r, nil
}

func (r *Report) readUKI(ra io.ReaderAt) error {
	info, err := uki.Inspect(ra)
	if err != nil {
		return err
	}
	r.KernelRelease, r.Cmdline, r.UKISections = info.Uname, info.Cmdline, info.Sections
	return nil
}

func (r *Report) readInitramfs(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		if b, err = initramfs.Decompress(b); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	recs, err := initramfs.List(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	for _, rec := range recs {
		r.Files = append(r.Files, rec.Name)
	}
	return nil
}

// fatFiles lists every path of a FAT filesystem and reads the UKI(s) under EFI/Linux.
func (r *Report) fatFiles(fsys fs.FS) ([]string, error) {
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		name := p
		if d.IsDir() {
			name += "/"
		}
		files = append(files, name)
		if !d.IsDir() && strings.EqualFold(path.Dir(p), "EFI/Linux") && r.KernelRelease == "" {
			b, err := fs.ReadFile(fsys, p)
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			if err := r.readUKI(bytes.NewReader(b)); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

func (r *Report) readISO(f *os.File) error {
	off, size, err := iso.BootImage(f)
	if err != nil {
		return err
	}
	fsys, err := fat32.Read(file.New(f, true), size, off, 512)
	if err != nil {
		return fmt.Errorf("iso boot image: %w", err)
	}
	r.Files, err = r.fatFiles(fsys)
	return err
}

func (r *Report) readRaw(p string, f *os.File) error {
	d, err := disk.Open(p)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return fmt.Errorf("inspect: partition table: %w", err)
	}
	t, ok := pt.(*gpt.Table)
	if !ok {
		return fmt.Errorf("inspect: not a GPT disk")
	}
	r.DiskGUID = t.GUID
	for i, gp := range t.Partitions {
		if gp.Type == gpt.Unused {
			continue
		}
		part := Partition{Number: i + 1, Label: gp.Name, Type: string(gp.Type), GUID: gp.GUID,
			Start: gp.Start, End: gp.End, Size: int64(gp.End-gp.Start+1) * 512}
		if isFAT(f, int64(gp.Start)*512) {
			fsys, err := fat32.Read(file.New(f, true), part.Size, int64(gp.Start)*512, 512)
			if err != nil {
				return fmt.Errorf("partition %s: %w", gp.Name, err)
			}
			if part.Files, err = r.fatFiles(fsys); err != nil {
				return fmt.Errorf("partition %s: %w", gp.Name, err)
			}
			for _, n := range part.Files {
				if gp.Name == "STATE" && strings.EqualFold(n, "config.yaml") {
					r.HasConfig = true
				}
			}
		}
		r.Partitions = append(r.Partitions, part)
	}
	return nil
}

// isFAT reports whether a FAT32 boot sector starts at off.
func isFAT(f io.ReaderAt, off int64) bool {
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	return binary.LittleEndian.Uint16(b[510:]) == 0xaa55 && string(b[82:87]) == "FAT32"
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "kind: %s\nsize: %d bytes\n", r.Kind, r.Size)
	if r.QCOW2 != nil {
		fmt.Fprintf(w, "qcow2: version %d, virtual size %d, cluster size %d\n", r.QCOW2.Version, r.QCOW2.Size, 1<<r.QCOW2.ClusterBits)
	}
	if r.DiskGUID != "" {
		fmt.Fprintf(w, "disk GUID: %s\n", r.DiskGUID)
	}
	for _, p := range r.Partitions {
		fmt.Fprintf(w, "partition %d %-10s start %d end %d size %d MiB type %s guid %s\n",
			p.Number, p.Label, p.Start, p.End, p.Size>>20, p.Type, p.GUID)
		for _, f := range p.Files {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	if r.KernelRelease != "" {
		fmt.Fprintf(w, "kernel: %s\ncmdline: %s\n", r.KernelRelease, strings.TrimSpace(r.Cmdline))
	}
	if r.Kind == KindRaw {
		fmt.Fprintf(w, "machine config: %v\n", map[bool]string{true: "present (STATE/config.yaml)", false: "none"}[r.HasConfig])
	}
	if len(r.Files) > 0 {
		fmt.Fprintf(w, "files:\n")
		for _, f := range r.Files {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
}

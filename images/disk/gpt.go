package disk

import (
	"fmt"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/fstree"
)

const (
	sector = 512
	// firstLBA: partitions start at 1 MiB, the usual alignment.
	firstByte = boards.MiB
	// tail: the backup GPT (33 sectors) rounded up to 1 MiB.
	tailBytes = boards.MiB
)

// Size returns the size of the disk image for layout.
func Size(l boards.Layout) int64 {
	s := firstByte + tailBytes
	for _, p := range l.Partitions {
		s += p.Size
	}
	return s
}

// Options for WriteGPT.
type Options struct {
	// Seed derives the disk and partition GUIDs.
	Seed string
	// Epoch is the timestamp of every FAT entry.
	Epoch int64
	// Contents maps a partition label to the files its FAT filesystem holds. A FAT32
	// partition without contents gets an empty filesystem; an ext4 one an empty ext4
	// (mke2fs); unformatted partitions stay zero.
	Contents map[string]*fstree.Tree
}

// partitionType is the GPT type GUID for a partition of the layout.
func partitionType(p boards.Partition) gpt.Type {
	if p.Label == boards.LabelEFI {
		return gpt.EFISystemPartition
	}
	return gpt.LinuxFilesystem
}

// Table returns the GPT the image gets for layout.
func Table(l boards.Layout, seed string) *gpt.Table {
	t := &gpt.Table{
		LogicalSectorSize:  sector,
		PhysicalSectorSize: sector,
		ProtectiveMBR:      true,
		GUID:               GUID(seed, "disk"),
	}
	start := uint64(firstByte / sector)
	for i, p := range l.Partitions {
		n := uint64(p.Size / sector)
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: i + 1,
			Start: start,
			End:   start + n - 1,
			Size:  uint64(p.Size),
			Type:  partitionType(p),
			Name:  p.Label,
			GUID:  GUID(seed, "partition/"+p.Label),
		})
		start += n
	}
	return t
}

// WriteGPT writes a raw GPT disk image of layout to path (which must not exist).
func WriteGPT(path string, l boards.Layout, o Options) error {
	if l.Table != boards.GPT {
		return fmt.Errorf("disk: layout has a %s table, want gpt", l.Table)
	}
	d, err := diskfs.Create(path, Size(l), diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("create disk image %s: %w", path, err)
	}
	closed := false
	defer func() {
		if !closed { // go-diskfs panics on a second Close
			d.Close()
		}
	}()
	tbl := Table(l, o.Seed)
	if err := d.Partition(tbl); err != nil {
		return fmt.Errorf("write partition table: %w", err)
	}
	var fats []int64
	for i, p := range l.Partitions {
		if p.Filesystem != boards.FAT32 {
			continue
		}
		fats = append(fats, int64(tbl.Partitions[i].Start)*sector)
		err := withEpoch(o.Epoch, func() error {
			fsys, err := d.CreateFilesystem(disk.FilesystemSpec{
				Partition: i + 1, FSType: filesystem.TypeFat32, VolumeLabel: p.Label, Reproducible: true,
			})
			if err != nil {
				return err
			}
			if t := o.Contents[p.Label]; t != nil {
				if err := fillFAT(fsys, t, o.Epoch); err != nil {
					return err
				}
			}
			return fsys.Close()
		})
		if err != nil {
			return fmt.Errorf("partition %s: %w", p.Label, err)
		}
	}
	closed = true
	if err := d.Close(); err != nil {
		return fmt.Errorf("disk image %s: %w", path, err)
	}
	if err := fixFATFile(path, fats...); err != nil {
		return err
	}
	for i, p := range l.Partitions {
		if p.Filesystem != boards.Ext4 {
			continue
		}
		if err := writeExt4(path, int64(tbl.Partitions[i].Start)*sector, p.Size, p.Label, o.Seed, o.Epoch); err != nil {
			return err
		}
	}
	return nil
}

// WriteFAT writes a bare FAT32 filesystem image (no partition table) holding t, for an
// El Torito EFI boot image.
func WriteFAT(path string, size int64, label string, t *fstree.Tree, epoch int64) error {
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("create FAT image %s: %w", path, err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	err = withEpoch(epoch, func() error {
		fsys, err := d.CreateFilesystem(disk.FilesystemSpec{
			Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: label, Reproducible: true,
		})
		if err != nil {
			return fmt.Errorf("FAT image %s: %w", path, err)
		}
		if err := fillFAT(fsys, t, epoch); err != nil {
			return fmt.Errorf("FAT image %s: %w", path, err)
		}
		return fsys.Close()
	})
	if err != nil {
		return err
	}
	closed = true
	if err := d.Close(); err != nil {
		return fmt.Errorf("FAT image %s: %w", path, err)
	}
	return fixFATFile(path, 0)
}

// Open opens an existing disk image read-only (for inspect and tests).
func Open(path string) (*disk.Disk, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
}

// Package iso writes a UEFI-bootable ISO 9660 image: an El Torito boot catalog whose one
// no-emulation entry (platform EFI) points at a FAT image holding systemd-boot and the
// UKI. It is written in Go rather than with go-diskfs's iso9660 writer, which stamps the
// volume descriptors and the boot catalog with time.Now(); here every date is the epoch.
package iso

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-os/kiln/images/fstree"
)

const sectorSize = 2048

// Fixed sector numbers of the metadata.
const (
	lbaPVD       = 16
	lbaBootRec   = 17
	lbaTerm      = 18
	lbaLPath     = 19
	lbaMPath     = 20
	lbaRoot      = 21
	lbaCatalog   = 22
	lbaBootImage = 23
)

// Names of the files in the ISO's root directory.
const (
	CatalogName   = "BOOT.CAT;1"
	BootImageName = "EFIBOOT.IMG;1"
)

// Options for Write.
type Options struct {
	// EFI is the content of the El Torito EFI system partition image.
	EFI      *fstree.Tree
	Epoch    int64
	VolumeID string
	TempDir  string
	// WriteFAT writes a FAT32 image of a tree (disk.WriteFAT); injected so this package
	// stays independent of the disk writer.
	WriteFAT func(path string, size int64, label string, t *fstree.Tree, epoch int64) error
}

// bootImageSize is the FAT image size for a tree: its content plus a quarter, at least
// 64 MiB (FAT32 needs 65525 clusters), in whole MiB.
func bootImageSize(t *fstree.Tree) (int64, error) {
	var sum int64
	for _, e := range t.Entries() {
		s, err := e.Size()
		if err != nil {
			return 0, err
		}
		sum += s + 4096
	}
	size := sum + sum/4 + 8<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	return max(size, 64<<20), nil
}

// Write writes the ISO to path.
func Write(path string, o Options) error {
	size, err := bootImageSize(o.EFI)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	img := filepath.Join(o.TempDir, "efiboot.img")
	if err := o.WriteFAT(img, size, "KILN-EFI", o.EFI, o.Epoch); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer os.Remove(img)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer f.Close()
	src, err := os.Open(img)
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer src.Close()
	if _, err := f.Write(header(size, o)); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if pad := (sectorSize - size%sectorSize) % sectorSize; pad > 0 {
		if _, err := f.Write(make([]byte, pad)); err != nil {
			return fmt.Errorf("iso: %w", err)
		}
	}
	return f.Close()
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

func both16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func padded(b []byte, s string) {
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
}

func dirRecord(name []byte, lba, length uint32, dir bool, t time.Time) []byte {
	n := 33 + len(name)
	if n%2 == 1 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	both32(r[2:], lba)
	both32(r[10:], length)
	r[18], r[19], r[20] = byte(t.Year()-1900), byte(t.Month()), byte(t.Day())
	r[21], r[22], r[23] = byte(t.Hour()), byte(t.Minute()), byte(t.Second())
	if dir {
		r[25] = 2
	}
	both16(r[28:], 1)
	r[32] = byte(len(name))
	copy(r[33:], name)
	return r
}

func decDate(t time.Time) []byte {
	return append([]byte(t.Format("20060102150405")+"00"), 0)
}

// header is every sector before the boot image.
func header(imgSize int64, o Options) []byte {
	t := time.Unix(o.Epoch, 0).UTC()
	imgSectors := uint32((imgSize + sectorSize - 1) / sectorSize)
	total := uint32(lbaBootImage) + imgSectors
	buf := make([]byte, lbaBootImage*sectorSize)
	sec := func(n int) []byte { return buf[n*sectorSize : (n+1)*sectorSize] }

	root := dirRecord([]byte{0}, lbaRoot, sectorSize, true, t)

	pvd := sec(lbaPVD)
	pvd[0], pvd[6] = 1, 1
	copy(pvd[1:], "CD001")
	padded(pvd[8:40], "")
	padded(pvd[40:72], strings.ToUpper(o.VolumeID))
	both32(pvd[80:], total)
	both16(pvd[120:], 1)
	both16(pvd[124:], 1)
	both16(pvd[128:], sectorSize)
	both32(pvd[132:], 10)
	binary.LittleEndian.PutUint32(pvd[140:], lbaLPath)
	binary.BigEndian.PutUint32(pvd[148:], lbaMPath)
	copy(pvd[156:190], root)
	padded(pvd[190:318], "")
	padded(pvd[318:446], "")
	padded(pvd[446:574], "")
	padded(pvd[574:702], "KILN")
	padded(pvd[702:813], "")
	copy(pvd[813:], decDate(t))
	copy(pvd[830:], decDate(t))
	copy(pvd[847:], append([]byte("0000000000000000"), 0))
	copy(pvd[864:], decDate(t))
	pvd[881] = 1

	br := sec(lbaBootRec)
	br[0], br[6] = 0, 1
	copy(br[1:], "CD001")
	copy(br[7:], "EL TORITO SPECIFICATION")
	binary.LittleEndian.PutUint32(br[0x47:], lbaCatalog)

	term := sec(lbaTerm)
	term[0], term[6] = 255, 1
	copy(term[1:], "CD001")

	// Path tables: the root directory alone.
	lp, mp := sec(lbaLPath), sec(lbaMPath)
	lp[0], mp[0] = 1, 1
	binary.LittleEndian.PutUint32(lp[2:], lbaRoot)
	binary.BigEndian.PutUint32(mp[2:], lbaRoot)
	binary.LittleEndian.PutUint16(lp[6:], 1)
	binary.BigEndian.PutUint16(mp[6:], 1)

	var dir bytes.Buffer
	dir.Write(root)
	dir.Write(dirRecord([]byte{1}, lbaRoot, sectorSize, true, t))
	dir.Write(dirRecord([]byte(CatalogName), lbaCatalog, sectorSize, false, t))
	dir.Write(dirRecord([]byte(BootImageName), lbaBootImage, uint32(imgSize), false, t))
	copy(sec(lbaRoot), dir.Bytes())

	// Boot catalog: validation entry for platform EFI, then the default entry.
	cat := sec(lbaCatalog)
	cat[0], cat[1] = 1, 0xef
	copy(cat[4:28], "KILN")
	cat[30], cat[31] = 0x55, 0xaa
	var sum uint16
	for i := 0; i < 32; i += 2 {
		sum += binary.LittleEndian.Uint16(cat[i:])
	}
	binary.LittleEndian.PutUint16(cat[28:], -sum)
	e := cat[32:64]
	e[0] = 0x88 // bootable, no emulation
	// Sector count in 512-byte units; too large for 16 bits means "to the end of the
	// volume" to UEFI firmware, which is where the image is.
	if n := imgSize / 512; n <= 0xffff {
		binary.LittleEndian.PutUint16(e[6:], uint16(n))
	} else {
		binary.LittleEndian.PutUint16(e[6:], 1)
	}
	binary.LittleEndian.PutUint32(e[8:], lbaBootImage)
	return buf
}

// BootImage returns the offset and size of the El Torito boot image in an ISO written
// by Write (for inspect and tests).
func BootImage(r io.ReaderAt) (off, size int64, err error) {
	br := make([]byte, sectorSize)
	if _, err := r.ReadAt(br, lbaBootRec*sectorSize); err != nil {
		return 0, 0, fmt.Errorf("iso: %w", err)
	}
	if string(br[1:6]) != "CD001" || br[0] != 0 || !bytes.HasPrefix(br[7:], []byte("EL TORITO SPECIFICATION")) {
		return 0, 0, fmt.Errorf("iso: no El Torito boot record")
	}
	catLBA := int64(binary.LittleEndian.Uint32(br[0x47:]))
	cat := make([]byte, 64)
	if _, err := r.ReadAt(cat, catLBA*sectorSize); err != nil {
		return 0, 0, fmt.Errorf("iso: %w", err)
	}
	if cat[0] != 1 || cat[30] != 0x55 || cat[31] != 0xaa || cat[32] != 0x88 {
		return 0, 0, fmt.Errorf("iso: bad boot catalog")
	}
	if cat[1] != 0xef {
		return 0, 0, fmt.Errorf("iso: boot catalog platform %#x, want EFI (0xef)", cat[1])
	}
	off = int64(binary.LittleEndian.Uint32(cat[40:])) * sectorSize
	// The root directory's record of the boot image has its exact length.
	rootDir := make([]byte, sectorSize)
	if _, err := r.ReadAt(rootDir, lbaRoot*sectorSize); err != nil {
		return 0, 0, fmt.Errorf("iso: %w", err)
	}
	for p := 0; p < len(rootDir) && rootDir[p] != 0; p += int(rootDir[p]) {
		rec := rootDir[p : p+int(rootDir[p])]
		if string(rec[33:33+int(rec[32])]) == BootImageName {
			return off, int64(binary.LittleEndian.Uint32(rec[10:])), nil
		}
	}
	return 0, 0, fmt.Errorf("iso: no %s in the root directory", BootImageName)
}

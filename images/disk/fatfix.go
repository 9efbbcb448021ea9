package disk

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// fixFAT32 corrects two things go-diskfs v1.9.4 leaves in a new FAT32 filesystem that
// fsck.vfat reports: the ".." entry of a directory in the root must name cluster 0 (it
// names the root cluster), and FSInfo's free-cluster count and next-free hint are left
// "unknown". f holds the filesystem at offset off.
func fixFAT32(f interface {
	io.ReaderAt
	io.WriterAt
}, off int64) error {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, off); err != nil {
		return fmt.Errorf("read boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	spc := int64(bs[13])
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	nFATs := int64(bs[16])
	total := int64(binary.LittleEndian.Uint32(bs[32:]))
	fatSize := int64(binary.LittleEndian.Uint32(bs[36:]))
	rootCluster := binary.LittleEndian.Uint32(bs[44:])
	fsinfo := int64(binary.LittleEndian.Uint16(bs[48:]))
	backup := int64(binary.LittleEndian.Uint16(bs[50:]))
	if bps == 0 || spc == 0 || string(bs[82:87]) != "FAT32" {
		return fmt.Errorf("not a FAT32 boot sector")
	}
	clusterBytes := bps * spc
	dataStart := off + (reserved+nFATs*fatSize)*bps
	// go-diskfs may size the FAT a few entries short of the data area; clusters the FAT
	// cannot address do not exist.
	nClusters := min((total-reserved-nFATs*fatSize)/spc, fatSize*bps/4-2)

	fat := make([]byte, fatSize*bps)
	if _, err := f.ReadAt(fat, off+reserved*bps); err != nil {
		return fmt.Errorf("read FAT: %w", err)
	}
	entry := func(c uint32) uint32 { return binary.LittleEndian.Uint32(fat[c*4:]) & 0x0fffffff }
	clusterOff := func(c uint32) int64 { return dataStart + int64(c-2)*clusterBytes }

	// Walk the root directory's cluster chain; fix ".." of each subdirectory.
	buf := make([]byte, clusterBytes)
	for c, n := rootCluster, 0; c >= 2 && c < 0x0ffffff8; c, n = entry(c), n+1 {
		if int64(n) > nClusters {
			return fmt.Errorf("root directory cluster chain loops")
		}
		if _, err := f.ReadAt(buf, clusterOff(c)); err != nil {
			return fmt.Errorf("read root directory: %w", err)
		}
		for i := 0; i+32 <= len(buf); i += 32 {
			e := buf[i : i+32]
			if e[0] == 0 {
				break
			}
			if e[0] == 0xe5 || e[11] == 0x0f || e[11]&0x10 == 0 || e[0] == '.' {
				continue
			}
			sub := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
			if sub < 2 {
				continue
			}
			dotdot := make([]byte, 32)
			at := clusterOff(sub) + 32
			if _, err := f.ReadAt(dotdot, at); err != nil {
				return fmt.Errorf("read directory: %w", err)
			}
			if string(dotdot[:3]) != ".. " {
				continue
			}
			binary.LittleEndian.PutUint16(dotdot[20:], 0)
			binary.LittleEndian.PutUint16(dotdot[26:], 0)
			if _, err := f.WriteAt(dotdot, at); err != nil {
				return fmt.Errorf("write directory: %w", err)
			}
		}
	}

	var free, next uint32 = 0, 0xffffffff
	for c := uint32(2); int64(c) < nClusters+2; c++ {
		if entry(c) == 0 {
			free++
			if next == 0xffffffff {
				next = c
			}
		}
	}
	for _, s := range []int64{fsinfo, backup + fsinfo} {
		if s == 0 || (s == backup+fsinfo && backup == 0) {
			continue
		}
		info := make([]byte, 512)
		if _, err := f.ReadAt(info, off+s*bps); err != nil {
			return fmt.Errorf("read FSInfo: %w", err)
		}
		if string(info[0:4]) != "RRaA" {
			continue
		}
		binary.LittleEndian.PutUint32(info[488:], free)
		binary.LittleEndian.PutUint32(info[492:], next)
		if _, err := f.WriteAt(info, off+s*bps); err != nil {
			return fmt.Errorf("write FSInfo: %w", err)
		}
	}
	return nil
}

// fixFATFile applies fixFAT32 to the filesystems at offsets in the file at path.
func fixFATFile(path string, offsets ...int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	for _, off := range offsets {
		if err := fixFAT32(f, off); err != nil {
			f.Close()
			return fmt.Errorf("FAT32 at %d: %w", off, err)
		}
	}
	return f.Close()
}

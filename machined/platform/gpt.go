package platform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"
)

// GPT is a GUID partition table as read from a disk (primary header and entries).
type GPT struct {
	SectorSize int64
	Header     gptHeader
	Entries    [][]byte // raw entries, Header.EntrySize bytes each

	diskSectors uint64 // set by Resize; Write then fits the protective MBR too
}

// gptHeader is the on-disk header (little endian), without the reserved tail.
type gptHeader struct {
	Signature      [8]byte
	Revision       uint32
	HeaderSize     uint32
	HeaderCRC      uint32
	Reserved       uint32
	CurrentLBA     uint64
	BackupLBA      uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       [16]byte
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

// Partition is one used GPT entry.
type Partition struct {
	Number   int // 1-based, as the kernel numbers them
	Name     string
	FirstLBA uint64
	LastLBA  uint64 // inclusive
}

// ErrNoGPT means the disk has no valid GPT.
var ErrNoGPT = errors.New("no GPT")

// ReadGPT reads the primary GPT of a disk with the given logical sector size.
func ReadGPT(r io.ReaderAt, sectorSize int64) (*GPT, error) {
	hb := make([]byte, sectorSize)
	if _, err := r.ReadAt(hb, sectorSize); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	var h gptHeader
	if err := binary.Read(bytes.NewReader(hb), binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("GPT header: %w", err)
	}
	if string(h.Signature[:]) != "EFI PART" {
		return nil, ErrNoGPT
	}
	if h.HeaderSize < 92 || int64(h.HeaderSize) > sectorSize || h.EntrySize < 128 || h.NumEntries > 4096 {
		return nil, fmt.Errorf("%w: implausible header (size %d, entries %d×%d)", ErrNoGPT, h.HeaderSize, h.NumEntries, h.EntrySize)
	}
	if got := headerCRC(hb[:h.HeaderSize]); got != h.HeaderCRC {
		return nil, fmt.Errorf("%w: header CRC %08x, want %08x", ErrNoGPT, got, h.HeaderCRC)
	}
	eb := make([]byte, int64(h.NumEntries)*int64(h.EntrySize))
	if _, err := r.ReadAt(eb, int64(h.EntriesLBA)*sectorSize); err != nil {
		return nil, fmt.Errorf("read GPT entries: %w", err)
	}
	if got := crc32.ChecksumIEEE(eb); got != h.EntriesCRC {
		return nil, fmt.Errorf("%w: entries CRC %08x, want %08x", ErrNoGPT, got, h.EntriesCRC)
	}
	g := &GPT{SectorSize: sectorSize, Header: h}
	for i := 0; i < int(h.NumEntries); i++ {
		g.Entries = append(g.Entries, eb[i*int(h.EntrySize):(i+1)*int(h.EntrySize)])
	}
	return g, nil
}

func headerCRC(hb []byte) uint32 {
	c := append([]byte(nil), hb...)
	binary.LittleEndian.PutUint32(c[16:20], 0)
	return crc32.ChecksumIEEE(c)
}

// Partitions returns the used entries.
func (g *GPT) Partitions() []Partition {
	var out []Partition
	for i, e := range g.Entries {
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		out = append(out, Partition{
			Number:   i + 1,
			Name:     decodeName(e[56:128]),
			FirstLBA: binary.LittleEndian.Uint64(e[32:40]),
			LastLBA:  binary.LittleEndian.Uint64(e[40:48]),
		})
	}
	return out
}

func decodeName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// ByName returns the partition with the given label.
func (g *GPT) ByName(name string) (Partition, bool) {
	for _, p := range g.Partitions() {
		if p.Name == name {
			return p, true
		}
	}
	return Partition{}, false
}

// entriesSectors is the number of sectors the entry array takes.
func (g *GPT) entriesSectors() uint64 {
	n := int64(g.Header.NumEntries) * int64(g.Header.EntrySize)
	return uint64((n + g.SectorSize - 1) / g.SectorSize)
}

// Resize fits the table to a disk of diskSectors sectors (the backup header moves to
// the last sector, the last usable LBA follows) and, when grow names a partition that
// is the last one on the disk, extends it to the new last usable LBA. It reports
// whether anything changed.
func (g *GPT) Resize(diskSectors uint64, grow string) (bool, error) {
	h := &g.Header
	backup := diskSectors - 1
	lastUsable := backup - g.entriesSectors() - 1
	if lastUsable < h.LastUsableLBA {
		return false, fmt.Errorf("disk of %d sectors is smaller than the GPT's last usable LBA %d", diskSectors, h.LastUsableLBA)
	}
	changed := h.BackupLBA != backup || h.LastUsableLBA != lastUsable
	g.diskSectors = diskSectors
	h.BackupLBA, h.LastUsableLBA = backup, lastUsable
	if grow != "" {
		p, ok := g.ByName(grow)
		if !ok {
			return false, fmt.Errorf("no partition labelled %s", grow)
		}
		for _, q := range g.Partitions() {
			if q.FirstLBA > p.FirstLBA {
				return false, fmt.Errorf("partition %s is not the last on the disk (%d follows)", grow, q.Number)
			}
		}
		if p.LastLBA < lastUsable {
			binary.LittleEndian.PutUint64(g.Entries[p.Number-1][40:48], lastUsable)
			changed = true
		}
	}
	return changed, nil
}

// Write writes the primary header and entries and the backup entries and header (at
// Header.BackupLBA), with fresh CRCs. The protective MBR is left alone.
func (g *GPT) Write(w io.WriterAt) error {
	eb := bytes.Join(g.Entries, nil)
	g.Header.EntriesCRC = crc32.ChecksumIEEE(eb)

	primary := g.Header
	primary.CurrentLBA, primary.BackupLBA = 1, g.Header.BackupLBA
	backup := g.Header
	backup.CurrentLBA, backup.BackupLBA = g.Header.BackupLBA, 1
	backup.EntriesLBA = g.Header.BackupLBA - g.entriesSectors()

	// Backup first: if power fails midway, the primary still describes the old disk.
	if _, err := w.WriteAt(eb, int64(backup.EntriesLBA)*g.SectorSize); err != nil {
		return fmt.Errorf("write backup GPT entries: %w", err)
	}
	if _, err := w.WriteAt(g.encodeHeader(backup), int64(backup.CurrentLBA)*g.SectorSize); err != nil {
		return fmt.Errorf("write backup GPT header: %w", err)
	}
	if _, err := w.WriteAt(eb, int64(primary.EntriesLBA)*g.SectorSize); err != nil {
		return fmt.Errorf("write GPT entries: %w", err)
	}
	if _, err := w.WriteAt(g.encodeHeader(primary), g.SectorSize); err != nil {
		return fmt.Errorf("write GPT header: %w", err)
	}
	g.Header = primary
	if g.diskSectors > 0 {
		if err := g.fitProtectiveMBR(w); err != nil {
			return err
		}
	}
	return nil
}

// fitProtectiveMBR sets the size of the protective MBR's 0xEE entry to the disk, as
// fdisk does; firmware and tools check it against the disk size.
func (g *GPT) fitProtectiveMBR(w io.WriterAt) error {
	r, ok := w.(io.ReaderAt)
	if !ok {
		return nil
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read protective MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil
	}
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*(i+1)]
		if e[4] != 0xEE {
			continue
		}
		size := g.diskSectors - 1
		if size > 0xFFFFFFFF {
			size = 0xFFFFFFFF
		}
		binary.LittleEndian.PutUint32(e[12:16], uint32(size))
		if _, err := w.WriteAt(mbr, 0); err != nil {
			return fmt.Errorf("write protective MBR: %w", err)
		}
	}
	return nil
}

func (g *GPT) encodeHeader(h gptHeader) []byte {
	var b bytes.Buffer
	h.HeaderCRC = 0
	_ = binary.Write(&b, binary.LittleEndian, h)
	out := make([]byte, g.SectorSize)
	copy(out, b.Bytes())
	h.HeaderCRC = crc32.ChecksumIEEE(out[:h.HeaderSize])
	binary.LittleEndian.PutUint32(out[16:20], h.HeaderCRC)
	return out
}

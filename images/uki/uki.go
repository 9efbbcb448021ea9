// Package uki writes Unified Kernel Images: the systemd-boot EFI stub with the kernel,
// initramfs, command line, os-release and kernel release appended as PE sections
// (.osrel .cmdline .uname .initrd .linux), the way ukify does, in Go.
//
// Section VirtualAddress fields hold RVAs; the addresses objcopy-based recipes pass with
// --change-section-vma are those RVAs plus the image base ("absolute" addresses). New
// sections start after the stub's last section at SectionAlignment, so the image stays
// one contiguous mapping that the firmware's LoadImage accepts.
package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"io"
)

// Section is one section to append.
type Section struct {
	Name string // at most 8 bytes, e.g. ".linux"
	Data []byte
}

// Sections returns the UKI sections in the order systemd's ukify writes them.
func Sections(osrel, cmdline, uname string, initrd, linux []byte) []Section {
	return []Section{
		{Name: ".osrel", Data: []byte(osrel)},
		{Name: ".cmdline", Data: []byte(cmdline)},
		{Name: ".uname", Data: []byte(uname)},
		{Name: ".initrd", Data: initrd},
		{Name: ".linux", Data: linux},
	}
}

const (
	sectionHeaderSize = 40
	// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
	dataCharacteristics = 0x00000040 | 0x40000000
)

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// Write writes stub with sections appended to w.
func Write(w io.Writer, stub []byte, sections []Section) error {
	f, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		return fmt.Errorf("uki: read stub: %w", err)
	}
	defer f.Close()
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		return fmt.Errorf("uki: stub is not a PE32+ image")
	}
	for _, s := range f.Sections {
		for _, n := range sections {
			if s.Name == n.Name {
				return fmt.Errorf("uki: stub already has section %s", s.Name)
			}
		}
	}
	out := bytes.Clone(stub)
	peOff := int(binary.LittleEndian.Uint32(out[0x3c:]))
	coffOff := peOff + 4
	optOff := coffOff + 20
	secTableOff := optOff + int(f.FileHeader.SizeOfOptionalHeader)
	nsec := int(f.FileHeader.NumberOfSections)
	newTableEnd := secTableOff + (nsec+len(sections))*sectionHeaderSize
	if uint32(newTableEnd) > oh.SizeOfHeaders {
		return fmt.Errorf("uki: stub headers have no room for %d more sections", len(sections))
	}

	// Data ends at the last section's raw data; drop anything after it (symbols, signatures).
	var rawEnd, vEnd uint64
	for _, s := range f.Sections {
		rawEnd = max(rawEnd, uint64(s.Offset)+uint64(s.Size))
		vEnd = max(vEnd, uint64(s.VirtualAddress)+uint64(max(s.VirtualSize, s.Size)))
	}
	out = out[:rawEnd]
	fa, sa := uint64(oh.FileAlignment), uint64(oh.SectionAlignment)
	if fa == 0 || sa == 0 {
		return fmt.Errorf("uki: stub has zero alignment")
	}
	fileOff := alignUp(rawEnd, fa)
	va := alignUp(vEnd, sa)
	initData := uint64(oh.SizeOfInitializedData)

	type placed struct {
		hdr  [sectionHeaderSize]byte
		off  uint64
		data []byte
	}
	var ps []placed
	for _, s := range sections {
		if len(s.Name) > 8 {
			return fmt.Errorf("uki: section name %q longer than 8 bytes", s.Name)
		}
		raw := alignUp(uint64(len(s.Data)), fa)
		var h [sectionHeaderSize]byte
		copy(h[0:8], s.Name)
		binary.LittleEndian.PutUint32(h[8:], uint32(len(s.Data))) // VirtualSize
		binary.LittleEndian.PutUint32(h[12:], uint32(va))         // VirtualAddress (RVA)
		binary.LittleEndian.PutUint32(h[16:], uint32(raw))        // SizeOfRawData
		binary.LittleEndian.PutUint32(h[20:], uint32(fileOff))    // PointerToRawData
		binary.LittleEndian.PutUint32(h[36:], dataCharacteristics)
		if va+uint64(len(s.Data)) > 1<<32 || fileOff+raw > 1<<32 {
			return fmt.Errorf("uki: image larger than 4 GiB")
		}
		ps = append(ps, placed{hdr: h, off: fileOff, data: s.Data})
		fileOff += raw
		va = alignUp(va+uint64(len(s.Data)), sa)
		initData += raw
	}

	for i, p := range ps {
		copy(out[secTableOff+(nsec+i)*sectionHeaderSize:], p.hdr[:])
	}
	binary.LittleEndian.PutUint16(out[coffOff+2:], uint16(nsec+len(sections)))
	binary.LittleEndian.PutUint32(out[optOff+8:], uint32(initData)) // SizeOfInitializedData
	binary.LittleEndian.PutUint32(out[optOff+56:], uint32(va))      // SizeOfImage
	binary.LittleEndian.PutUint32(out[optOff+64:], 0)               // CheckSum: not used by UEFI
	// The stub's signature (if any) covers the stub alone: drop the certificate table.
	if oh.NumberOfRvaAndSizes > pe.IMAGE_DIRECTORY_ENTRY_SECURITY {
		d := optOff + 112 + 8*pe.IMAGE_DIRECTORY_ENTRY_SECURITY
		binary.LittleEndian.PutUint64(out[d:], 0)
	}

	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	pos := uint64(len(out))
	var zero [4096]byte
	pad := func(to uint64) error {
		for pos < to {
			n := min(to-pos, uint64(len(zero)))
			if _, err := w.Write(zero[:n]); err != nil {
				return fmt.Errorf("uki: %w", err)
			}
			pos += n
		}
		return nil
	}
	for _, p := range ps {
		if err := pad(p.off); err != nil {
			return err
		}
		if _, err := w.Write(p.data); err != nil {
			return fmt.Errorf("uki: %w", err)
		}
		pos += uint64(len(p.data))
	}
	return pad(alignUp(pos, fa))
}

// Info is what Inspect finds in a UKI.
type Info struct {
	Uname, Cmdline, OSRelease string
	Sections                  map[string]uint32 // name → size
}

// Inspect reads a UKI's text sections.
func Inspect(r io.ReaderAt) (*Info, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("uki: %w", err)
	}
	defer f.Close()
	info := &Info{Sections: map[string]uint32{}}
	for _, s := range f.Sections {
		info.Sections[s.Name] = s.VirtualSize
		var dst *string
		switch s.Name {
		case ".uname":
			dst = &info.Uname
		case ".cmdline":
			dst = &info.Cmdline
		case ".osrel":
			dst = &info.OSRelease
		default:
			continue
		}
		b := make([]byte, s.VirtualSize)
		if _, err := s.Open().Read(b); err != nil && err != io.EOF {
			return nil, fmt.Errorf("uki: read %s: %w", s.Name, err)
		}
		*dst = string(b)
	}
	if _, ok := info.Sections[".linux"]; !ok {
		return nil, fmt.Errorf("uki: no .linux section: not a UKI")
	}
	return info, nil
}

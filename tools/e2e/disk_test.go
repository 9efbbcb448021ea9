package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"unicode/utf16"
)

// partition is one GPT entry.
type partition struct {
	label             string
	firstLBA, lastLBA uint64
}

// diskLayout reads the GPT of a raw disk image and the size of the ext4 filesystem in
// the partition labelled fsLabel: what the node left on its disk, checked from the host.
type diskLayout struct {
	size       int64
	lastUsable uint64
	parts      []partition
	fsBytes    int64 // ext4 blocks × block size of fsLabel's partition; 0 if not ext4
}

// readDisk converts the VM's qcow2 overlay (with its backing chain) to a sparse raw file
// and reads its layout.
func readDisk(overlay, fsLabel string) (*diskLayout, error) {
	raw := filepath.Join(filepath.Dir(overlay), "inspect.raw")
	defer os.Remove(raw)
	if out, err := exec.CommandContext(context.Background(), "qemu-img", "convert", "-f", "qcow2", "-O", "raw", overlay, raw).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img convert %s: %w: %s", overlay, err, out)
	}
	f, err := os.Open(raw)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const sector = 512
	hdr := make([]byte, sector)
	if _, err := f.ReadAt(hdr, sector); err != nil {
		return nil, err
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, fmt.Errorf("%s: no GPT header", overlay)
	}
	d := &diskLayout{size: st.Size(), lastUsable: binary.LittleEndian.Uint64(hdr[48:])}
	entLBA := binary.LittleEndian.Uint64(hdr[72:])
	n := binary.LittleEndian.Uint32(hdr[80:])
	esz := binary.LittleEndian.Uint32(hdr[84:])
	ents := make([]byte, int(n)*int(esz))
	if _, err := f.ReadAt(ents, int64(entLBA)*sector); err != nil {
		return nil, err
	}
	for i := 0; i < int(n); i++ {
		e := ents[i*int(esz) : (i+1)*int(esz)]
		if allZero(e[:16]) {
			continue
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		for len(u) > 0 && u[len(u)-1] == 0 {
			u = u[:len(u)-1]
		}
		p := partition{label: string(utf16.Decode(u)), firstLBA: binary.LittleEndian.Uint64(e[32:]), lastLBA: binary.LittleEndian.Uint64(e[40:])}
		d.parts = append(d.parts, p)
		if p.label != fsLabel {
			continue
		}
		sb := make([]byte, 1024)
		if _, err := f.ReadAt(sb, int64(p.firstLBA)*sector+1024); err != nil {
			return nil, err
		}
		if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
			continue
		}
		blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
		if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
			blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
		}
		d.fsBytes = int64(blocks) << (10 + binary.LittleEndian.Uint32(sb[0x18:]))
	}
	return d, nil
}

func (d *diskLayout) part(label string) (partition, bool) {
	for _, p := range d.parts {
		if p.label == label {
			return p, true
		}
	}
	return partition{}, false
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

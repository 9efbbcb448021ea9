package uki

import (
	"bytes"
	"debug/pe"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/deb"
	"github.com/kiln-os/kiln/images/inputs"
)

// stub reads the systemd-boot EFI stub of arch from the pinned inputs.
func stub(t *testing.T, arch string) []byte {
	t.Helper()
	dir := os.Getenv("KILN_INPUTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "_out", "cache")
	}
	st := inputs.NewStore(dir, nil)
	p, err := st.Path(boards.PackageRef{Name: "systemd-boot-efi", Arch: arch})
	if err != nil {
		t.Skipf("needs inputs: run make inputs (%v)", err)
	}
	lower := map[string]string{"amd64": "x64", "arm64": "aa64"}[arch]
	b, err := deb.ReadFile(p, "usr/lib/systemd/boot/efi/linux"+lower+".efi.stub")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWriteSections(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			s := stub(t, arch)
			linux := bytes.Repeat([]byte("K"), 100000)
			initrd := bytes.Repeat([]byte("I"), 5000)
			var buf bytes.Buffer
			if err := Write(&buf, s, Sections("ID=kiln\n", "console=ttyS0", "6.12.95", initrd, linux)); err != nil {
				t.Fatalf("Write: %v", err)
			}
			f, err := pe.NewFile(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatalf("debug/pe cannot read the UKI: %v", err)
			}
			oh := f.OptionalHeader.(*pe.OptionalHeader64)
			got := map[string]string{}
			var prevEnd uint32
			for _, sec := range f.Sections {
				if sec.VirtualAddress < prevEnd || sec.VirtualAddress%oh.SectionAlignment != 0 || sec.Offset%oh.FileAlignment != 0 {
					t.Errorf("section %s: RVA %#x offset %#x not aligned or overlapping (prev end %#x)", sec.Name, sec.VirtualAddress, sec.Offset, prevEnd)
				}
				prevEnd = sec.VirtualAddress + sec.VirtualSize
				b, err := sec.Data()
				if err != nil {
					t.Fatal(err)
				}
				switch sec.Name {
				case ".osrel", ".cmdline", ".uname":
					got[sec.Name] = string(b[:sec.VirtualSize])
				case ".linux", ".initrd":
					got[sec.Name] = string(rune(b[0])) + string(rune(len(b[:sec.VirtualSize])%251))
				}
			}
			if prevEnd > oh.SizeOfImage {
				t.Errorf("SizeOfImage %#x < end of sections %#x", oh.SizeOfImage, prevEnd)
			}
			want := map[string]string{".osrel": "ID=kiln\n", ".cmdline": "console=ttyS0", ".uname": "6.12.95",
				".linux": "K" + string(rune(100000%251)), ".initrd": "I" + string(rune(5000%251))}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("sections mismatch (-want +got):\n%s", diff)
			}
			info, err := Inspect(bytes.NewReader(buf.Bytes()))
			if err != nil || info.Uname != "6.12.95" || info.Cmdline != "console=ttyS0" {
				t.Errorf("Inspect = %+v, %v", info, err)
			}
			// The image base stays; the sections' absolute addresses are base + RVA.
			orig, _ := pe.NewFile(bytes.NewReader(s))
			if ob := orig.OptionalHeader.(*pe.OptionalHeader64).ImageBase; ob != oh.ImageBase {
				t.Errorf("ImageBase changed from %#x to %#x", ob, oh.ImageBase)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	if err := Write(&bytes.Buffer{}, []byte("MZ not a PE"), nil); err == nil {
		t.Errorf("Write accepted a broken stub")
	}
	s := stub(t, "amd64")
	if err := Write(&bytes.Buffer{}, s, []Section{{Name: ".waytoolong", Data: nil}}); err == nil {
		t.Errorf("Write accepted a 11-byte section name")
	}
	if err := Write(&bytes.Buffer{}, s, []Section{{Name: ".text"}}); err == nil {
		t.Errorf("Write accepted a duplicate .text section")
	}
}

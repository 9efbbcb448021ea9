package iso

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/images/disk"
	"github.com/kiln-os/kiln/images/fstree"
)

func writeISO(t *testing.T) string {
	t.Helper()
	efi := fstree.New()
	if err := efi.AddData("EFI/BOOT/BOOTX64.EFI", 0o644, []byte("bootloader")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "x.iso")
	if err := Write(p, Options{EFI: efi, Epoch: 1735689600, VolumeID: "KILN", TempDir: dir, WriteFAT: disk.WriteFAT}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return p
}

func TestBootImage(t *testing.T) {
	p := writeISO(t)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, size, err := BootImage(f)
	if err != nil {
		t.Fatal(err)
	}
	if off != lbaBootImage*sectorSize || size != 64<<20 {
		t.Errorf("BootImage = %d, %d; want %d, %d", off, size, lbaBootImage*sectorSize, 64<<20)
	}
	a, _ := os.ReadFile(p)
	b, _ := os.ReadFile(writeISO(t))
	if string(a) != string(b) {
		t.Errorf("two ISOs from the same tree differ")
	}
}

func TestXorrisoReadsIt(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("needs xorriso: apt-get install xorriso")
	}
	p := writeISO(t)
	out, err := exec.Command("xorriso", "-indev", p, "-report_el_torito", "plain", "-ls", "/").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"El Torito boot img :   1  UEFI", "EFIBOOT.IMG", "BOOT.CAT"} {
		if !strings.Contains(s, want) {
			t.Errorf("xorriso report lacks %q:\n%s", want, s)
		}
	}
}

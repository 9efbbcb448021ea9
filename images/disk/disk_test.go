package disk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/fstree"
)

func layout() boards.Layout {
	return boards.Layout{Table: boards.GPT, Partitions: []boards.Partition{
		{Label: "EFI", Size: 40 * boards.MiB, Filesystem: boards.FAT32},
		{Label: "META", Size: 1 * boards.MiB, Filesystem: boards.Unformatted},
		{Label: "STATE", Size: 40 * boards.MiB, Filesystem: boards.FAT32},
	}}
}

func write(t *testing.T, seed string) string {
	t.Helper()
	efi := fstree.New()
	if err := efi.AddData("EFI/BOOT/BOOTX64.EFI", 0o644, []byte("bootloader")); err != nil {
		t.Fatal(err)
	}
	if err := efi.AddData("loader/loader.conf", 0o644, []byte("timeout 0\n")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "disk.raw")
	err := WriteGPT(p, layout(), Options{Seed: seed, Epoch: 1735689600, Contents: map[string]*fstree.Tree{"EFI": efi}})
	if err != nil {
		t.Fatalf("WriteGPT: %v", err)
	}
	return p
}

func TestGPTLayout(t *testing.T) {
	p := write(t, "seed")
	d, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	tbl := pt.(*gpt.Table)
	type part struct {
		Name       string
		Start, End uint64
		Type       gpt.Type
		GUID       string
	}
	var got []part
	for _, gp := range tbl.Partitions {
		if gp.Type != gpt.Unused {
			got = append(got, part{gp.Name, gp.Start, gp.End, gp.Type, gp.GUID})
		}
	}
	want := []part{
		{"EFI", 2048, 2048 + 40*2048 - 1, gpt.EFISystemPartition, GUID("seed", "partition/EFI")},
		{"META", 83968, 83968 + 2048 - 1, gpt.LinuxFilesystem, GUID("seed", "partition/META")},
		{"STATE", 86016, 86016 + 40*2048 - 1, gpt.LinuxFilesystem, GUID("seed", "partition/STATE")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("partitions mismatch (-want +got):\n%s", diff)
	}
	if tbl.GUID != GUID("seed", "disk") {
		t.Errorf("disk GUID = %s, want %s", tbl.GUID, GUID("seed", "disk"))
	}
	st, _ := os.Stat(p)
	if st.Size() != Size(layout()) {
		t.Errorf("size = %d, want %d", st.Size(), Size(layout()))
	}
}

func TestReproducible(t *testing.T) {
	a, err := os.ReadFile(write(t, "seed"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(write(t, "seed"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two images from the same inputs differ")
	}
	c, _ := os.ReadFile(write(t, "other"))
	if bytes.Equal(a, c) {
		t.Errorf("images with different seeds are identical: GUIDs do not follow the seed")
	}
}

func TestGUID(t *testing.T) {
	g := GUID("s", "disk")
	if len(g) != 36 || g[14] != '4' || g != GUID("s", "disk") || g == GUID("s", "x") {
		t.Errorf("GUID(s, disk) = %s: want a stable version-4 layout GUID per name", g)
	}
}

func TestFATWithMtools(t *testing.T) {
	if _, err := exec.LookPath("mdir"); err != nil {
		t.Skip("needs mtools: apt-get install mtools")
	}
	efi := fstree.New()
	if err := efi.AddData("EFI/BOOT/BOOTX64.EFI", 0o644, []byte("bootloader")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fat.img")
	if err := WriteFAT(p, 40*boards.MiB, "KILN", efi, 1735689600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mtype", "-i", p, "::EFI/BOOT/BOOTX64.EFI").CombinedOutput()
	if err != nil || string(out) != "bootloader" {
		t.Errorf("mtype = %q, %v; want the file content", out, err)
	}
	if _, err := exec.LookPath("fsck.vfat"); err == nil {
		if out, err := exec.Command("fsck.vfat", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("fsck.vfat -n: %v\n%s", err, out)
		}
	}
}

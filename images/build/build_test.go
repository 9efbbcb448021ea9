package build

import (
	"bytes"
	"context"
	"debug/pe"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/initramfs"
	"github.com/kiln-os/kiln/images/inspect"
	"github.com/kiln-os/kiln/images/qcow2"
)

// builds runs a build of b with all formats once per test run; several tests read it.
var builtAMD64 string

func buildAll(t *testing.T) string {
	t.Helper()
	if builtAMD64 != "" {
		return builtAMD64
	}
	out := filepath.Join(cacheDir, "amd64-all")
	o := testOptions(t, boards.GenericAMD64(), out, boards.AllFormats...)
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatalf("Build: %v", err)
	}
	builtAMD64 = out
	return out
}

func TestOutputsAndReproducible(t *testing.T) {
	first := buildAll(t)
	second := t.TempDir()
	o := testOptions(t, boards.GenericAMD64(), second, boards.AllFormats...)
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatalf("second Build: %v", err)
	}
	var want []string
	for _, f := range boards.AllFormats {
		want = append(want, OutputName(o.Board, f)...)
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, dirNames(t, second)); diff != "" {
		t.Errorf("outputs mismatch (-want +got):\n%s", diff)
	}
	for _, n := range want {
		if a, b := sha(t, filepath.Join(first, n)), sha(t, filepath.Join(second, n)); a != b {
			t.Errorf("%s: sha256 %s then %s: build is not reproducible", n, a, b)
		}
	}
}

func TestRawLayoutAndEFI(t *testing.T) {
	dir := buildAll(t)
	r, err := inspect.File(filepath.Join(dir, "generic-amd64.raw"))
	if err != nil {
		t.Fatal(err)
	}
	type part struct {
		Label string
		Size  int64
		Files []string
	}
	var got []part
	for _, p := range r.Partitions {
		got = append(got, part{p.Label, p.Size, p.Files})
	}
	want := []part{
		{"EFI", 256 << 20, []string{"EFI/", "EFI/BOOT/", "EFI/BOOT/BOOTX64.EFI", "EFI/Linux/", "EFI/Linux/kiln-a+3-0.efi", "loader/", "loader/loader.conf"}},
		{"META", 1 << 20, nil},
		{"STATE", 100 << 20, nil},
		{"EPHEMERAL", 64 << 20, nil},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("partitions mismatch (-want +got):\n%s", diff)
	}
	if r.KernelRelease != "6.12.95+kiln-amd64" || r.HasConfig {
		t.Errorf("inspect: kernel %q config %v; want 6.12.95+kiln-amd64 and no config", r.KernelRelease, r.HasConfig)
	}
}

func TestUKISections(t *testing.T) {
	dir := buildAll(t)
	f, err := pe.Open(filepath.Join(dir, "generic-amd64.efi"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	var names []string
	end := uint32(0)
	for _, s := range f.Sections {
		names = append(names, s.Name)
		if s.VirtualAddress%oh.SectionAlignment != 0 || s.VirtualAddress < end {
			t.Errorf("section %s at RVA %#x: want aligned to %#x and after %#x", s.Name, s.VirtualAddress, oh.SectionAlignment, end)
		}
		end = s.VirtualAddress + s.VirtualSize
	}
	if end > oh.SizeOfImage {
		t.Errorf("sections end at %#x beyond SizeOfImage %#x", end, oh.SizeOfImage)
	}
	if got := strings.Join(names[len(names)-5:], " "); got != ".osrel .cmdline .uname .initrd .linux" {
		t.Errorf("last sections = %s, want .osrel .cmdline .uname .initrd .linux", got)
	}
	read := func(name string) []byte {
		s := f.Section(name)
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		return b[:s.VirtualSize]
	}
	if got := string(read(".uname")); got != "6.12.95+kiln-amd64" {
		t.Errorf(".uname = %q", got)
	}
	if got := string(read(".cmdline")); got != boards.Cmdline(boards.GenericAMD64()) {
		t.Errorf(".cmdline = %q", got)
	}
	for sec, file := range map[string]string{".linux": "generic-amd64-vmlinuz", ".initrd": "generic-amd64-initramfs.zst"} {
		want, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(sec), want) {
			t.Errorf("section %s differs from %s", sec, file)
		}
	}
}

// initramfsListing decompresses the initramfs and returns name → mode, and the root image.
func initramfsListing(t *testing.T, dir string) (map[string]uint64, []byte) {
	t.Helper()
	z, err := os.ReadFile(filepath.Join(dir, "generic-amd64-initramfs.zst"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := initramfs.Decompress(z)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := initramfs.List(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]uint64{}
	var root []byte
	for _, r := range recs {
		modes[r.Name] = r.Mode
		if r.UID != 0 || r.GID != 0 || r.MTime != uint64(DefaultEpoch) {
			t.Errorf("%s: uid %d gid %d mtime %d; want 0, 0, %d", r.Name, r.UID, r.GID, r.MTime, DefaultEpoch)
		}
		if r.Name == RootImage {
			root = make([]byte, r.FileSize)
			if _, err := r.ReadAt(root, 0); err != nil {
				t.Fatal(err)
			}
		}
		if r.Name == "dev/console" && (r.Rmajor != 5 || r.Rminor != 1) {
			t.Errorf("dev/console is %d:%d, want 5:1", r.Rmajor, r.Rminor)
		}
	}
	return modes, root
}

func TestInitramfsListing(t *testing.T) {
	modes, root := initramfsListing(t, buildAll(t))
	want := map[string]uint64{
		"init":            0o100755,
		InitramfsMachined: 0o100755,
		"dev/console":     0o020600,
		RootImage:         0o100644,
		"lib/modules/6.12.95+kiln-amd64/kiln-modules.txt": 0o100644,
	}
	for n, m := range want {
		if got, ok := modes[n]; !ok || got != m {
			t.Errorf("initramfs %s: mode %o (present %v), want %o", n, got, ok, m)
		}
	}
	// generic-amd64's kernel has its drivers built in and loads no modules.
	for n := range modes {
		if strings.HasSuffix(n, ".ko") {
			t.Errorf("module %s is in the initramfs of a kernel without modules", n)
		}
	}
	if len(root) < 4 || string(root[:4]) != "hsqs" {
		t.Errorf("%s is not a squashfs image", RootImage)
	}
}

func TestSquashfsListing(t *testing.T) {
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Skip("needs unsquashfs: apt-get install squashfs-tools")
	}
	_, root := initramfsListing(t, buildAll(t))
	p := filepath.Join(t.TempDir(), "root.squashfs")
	if err := os.WriteFile(p, root, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unsquashfs", "-lln", "-d", "", p).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	got, size := map[string]string{}, map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[len(f)-1], "/") && f[len(f)-2] != "->" {
			continue
		}
		name := f[5]
		got[name] = f[0] + " " + f[1] + " " + f[3] + " " + f[4]
		size[name] = f[2]
		if f[1] != "0/0" || f[3] != "2025-01-01" || f[4] != "00:00" {
			t.Errorf("%s: owner %s time %s %s; want 0/0 at 2025-01-01 00:00", name, f[1], f[3], f[4])
		}
	}
	for _, n := range []string{"/" + MachinedPath, "/" + CABundle, "/usr/lib/os-release",
		"/lib/modules/6.12.95+kiln-amd64/kiln-modules.txt"} {
		if _, ok := got[n]; !ok {
			t.Errorf("root filesystem lacks %s", n)
		}
	}
	for n := range got {
		if strings.HasSuffix(n, ".ko") {
			t.Errorf("module %s is in the root of a kernel without modules", n)
		}
	}
	// machined itself is in the initramfs; the root has the file init binds it over.
	if m := got["/"+MachinedPath]; !strings.HasPrefix(m, "-rwxr-xr-x") || size["/"+MachinedPath] != "0" {
		t.Errorf("machined's mount point: mode %q, size %s; want an empty -rwxr-xr-x file", m, size["/"+MachinedPath])
	}
	if m := got["/tmp"]; !strings.HasPrefix(m, "drwxrwxrwt") {
		t.Errorf("/tmp mode %q, want drwxrwxrwt", m)
	}
}

func TestQCOW2MatchesRaw(t *testing.T) {
	dir := buildAll(t)
	f, err := os.Open(filepath.Join(dir, "generic-amd64.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := qcow2.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "generic-amd64.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 3 || h.Size != uint64(st.Size()) {
		t.Errorf("qcow2 version %d size %d, want 3 and %d", h.Version, h.Size, st.Size())
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("needs qemu-img for the content comparison: apt-get install qemu-utils")
	}
	out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2",
		filepath.Join(dir, "generic-amd64.raw"), filepath.Join(dir, "generic-amd64.qcow2")).CombinedOutput()
	if err != nil {
		t.Errorf("qemu-img compare: %v\n%s", err, out)
	}
}

func TestISO(t *testing.T) {
	r, err := inspect.File(filepath.Join(buildAll(t), "generic-amd64.iso"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"EFI/", "EFI/BOOT/", "EFI/BOOT/BOOTX64.EFI", "EFI/Linux/", "EFI/Linux/kiln-a.efi", "loader/", "loader/loader.conf"}
	if diff := cmp.Diff(want, r.Files); diff != "" {
		t.Errorf("ISO boot image files mismatch (-want +got):\n%s", diff)
	}
	if r.KernelRelease != "6.12.95+kiln-amd64" {
		t.Errorf("ISO UKI kernel %q", r.KernelRelease)
	}
}

func TestConfigOnState(t *testing.T) {
	out := t.TempDir()
	o := testOptions(t, boards.GenericAMD64(), out, boards.FormatRaw)
	o.Config = []byte("apiVersion: kiln.dev/v1alpha1\nkind: MachineConfig\n")
	var validated []byte
	o.ValidateConfig = func(b []byte) error { validated = b; return nil }
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(validated, o.Config) {
		t.Errorf("config was not validated before the build")
	}
	r, err := inspect.File(filepath.Join(out, "generic-amd64.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.HasConfig {
		t.Errorf("inspect: no config on STATE")
	}
}

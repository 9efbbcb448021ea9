package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/components"
	"github.com/kiln-os/kiln/images/inspect"
	"github.com/kiln-os/kiln/tools/qemu"
)

// RootBudget is the budget of the root squashfs with every component in it (DESIGN.md).
const RootBudget = 100 * 1000 * 1000

// readyLine is machined's readiness line (machined/daemon, tools/provision.ReadyPattern).
var readyLine = regexp.MustCompile(`\[kiln\] ready api=\S+ mode=\S+ fingerprint=sha256:[0-9a-f]{64}`)

// realComponents returns $KILN_COMPONENTS/amd64 or skips the test.
func realComponents(t *testing.T) string {
	t.Helper()
	root := os.Getenv("KILN_COMPONENTS")
	if root == "" {
		t.Skip("needs built components: KILN_COMPONENTS=<dir of controlplane/build.sh> (make components)")
	}
	dir := filepath.Join(root, string(boards.AMD64))
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("needs amd64 components in %s (controlplane/build.sh -a amd64): %v", dir, err)
	}
	return dir
}

// nodeBinaries builds the real init and machined for amd64 from this module.
func nodeBinaries(t *testing.T) (initBin, machined string) {
	t.Helper()
	dir := t.TempDir()
	initBin, machined = filepath.Join(dir, "init"), filepath.Join(dir, "machined")
	ctx := context.Background()
	if err := GoBuild(ctx, "../..", "./init", boards.AMD64, initBin); err != nil {
		t.Fatal(err)
	}
	if err := GoBuild(ctx, "../..", "./machined/cmd/machined", boards.AMD64, machined); err != nil {
		t.Fatal(err)
	}
	return initBin, machined
}

// TestRealComponentsImage builds generic-amd64 with the real components of
// $KILN_COMPONENTS/amd64 and real init and machined, checks the root filesystem and
// reports the sizes (each component, the root squashfs against its budget, the UKI,
// the EFI partition's fill), then boots it and the same image without components in
// QEMU (UEFI, TCG) to machined's readiness line and reports both boot times, once each
// (figures, not assertions).
func TestRealComponentsImage(t *testing.T) {
	compDir := realComponents(t)
	set, err := components.Load(compDir, boards.AMD64)
	if err != nil {
		t.Fatal(err)
	}
	initBin, machined := nodeBinaries(t)
	b := boards.GenericAMD64()
	build := func(withComponents bool) (string, *Result) {
		t.Helper()
		out := t.TempDir()
		o := testOptions(t, b, out, boards.FormatKernel, boards.FormatRaw)
		o.Init, o.Machined = initBin, machined
		if withComponents {
			o.Components = compDir
		}
		start := time.Now()
		res, err := Build(context.Background(), o)
		if err != nil {
			t.Fatalf("Build (components %v): %v", withComponents, err)
		}
		t.Logf("build (components %v): %s", withComponents, time.Since(start).Round(100*time.Millisecond))
		return out, res
	}
	withDir, with := build(true)

	got := rootListing(t, withDir)
	for _, bin := range set.Binaries {
		if m := got["/"+bin.Dst]; !strings.HasPrefix(m, "-rwxr-xr-x 0/0") {
			t.Errorf("root filesystem /%s: %q, want -rwxr-xr-x 0/0", bin.Dst, m)
		}
	}
	for _, l := range components.KubeLinks {
		if m := got["/"+components.BinDir+"/"+l]; !strings.HasPrefix(m, "lrwxrwxrwx 0/0") {
			t.Errorf("root filesystem /%s/%s: %q, want a symlink", components.BinDir, l, m)
		}
	}
	for _, im := range set.Manifest.Images {
		if m := got["/"+components.ImagesDir+"/"+im.Archive]; !strings.HasPrefix(m, "-rw-r--r-- 0/0") {
			t.Errorf("root filesystem /%s/%s: %q, want -rw-r--r-- 0/0", components.ImagesDir, im.Archive, m)
		}
	}

	var report strings.Builder
	mb := func(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
	for _, bin := range set.Binaries {
		fmt.Fprintf(&report, "  %-40s %10s\n", "/"+bin.Dst, mb(bin.Size))
	}
	for _, im := range set.Manifest.Images {
		fmt.Fprintf(&report, "  %-40s %10s  %s\n", "/"+components.ImagesDir+"/"+im.Archive, mb(im.Size), im.Name)
	}
	fmt.Fprintf(&report, "  components uncompressed: %s\n", mb(set.Size()))
	fmt.Fprintf(&report, "  root squashfs (compressed, everything): %s (budget %s)\n", mb(with.RootImageSize), mb(RootBudget))
	ir, err := fileSize(filepath.Join(withDir, b.Name()+"-initramfs.zst"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := inspect.File(filepath.Join(withDir, b.Name()+".raw"))
	if err != nil {
		t.Fatal(err)
	}
	efi := r.Partitions[0]
	if efi.Label != boards.LabelEFI || efi.Size != with.EFISize {
		t.Errorf("first partition %s of %d bytes, want EFI of %d", efi.Label, efi.Size, with.EFISize)
	}
	// What slot A uses now, and what A and B use once an update of the same size lands.
	fmt.Fprintf(&report, "  initramfs %s, UKI %s, EFI partition %d MiB: one UKI fills %.0f%%, two %.0f%%\n",
		mb(ir), mb(with.UKISize), with.EFISize>>20,
		100*float64(with.UKISize)/float64(with.EFISize), 200*float64(with.UKISize)/float64(with.EFISize))
	t.Logf("real components in generic-amd64:\n%s", report.String())
	if with.RootImageSize > RootBudget {
		t.Errorf("root squashfs with everything is %s, over the %s budget", mb(with.RootImageSize), mb(RootBudget))
	}
	if 2*with.UKISize >= with.EFISize {
		t.Errorf("EFI partition %d bytes cannot hold two UKIs of %d", with.EFISize, with.UKISize)
	}

	if testing.Short() {
		t.Skip("QEMU boots skipped in -short mode")
	}
	if _, err := exec.LookPath(qemu.Binary(qemu.AMD64)); err != nil {
		t.Skipf("needs %s for the boot: apt-get install -t bookworm-backports qemu-system-x86", qemu.Binary(qemu.AMD64))
	}
	if _, _, err := qemu.Firmware(qemu.AMD64); err != nil {
		t.Skipf("needs UEFI firmware for the boot: %v", err)
	}
	bareDir, bare := build(false)
	bootRaw := func(name, dir string) time.Duration {
		t.Helper()
		vm, err := qemu.Start(context.Background(), qemu.Config{
			Arch: qemu.AMD64, UEFI: true, Disk: filepath.Join(dir, b.Name()+".raw"), Timeout: 12 * time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Close()
		defer vm.Kill()
		if _, err := vm.Expect(readyLine, 10*time.Minute); err != nil {
			dst := filepath.Join(t.ArtifactDir(), "serial-"+name+".log")
			if serr := vm.SaveLog(dst); serr == nil {
				t.Logf("serial log kept at %s", dst)
			}
			t.Fatalf("%s: no readiness line: %v", name, err)
		}
		return time.Since(vm.Started())
	}
	tBare := bootRaw("bare", bareDir)
	tWith := bootRaw("components", withDir)
	t.Logf("UEFI boot (TCG) to machined's readiness line, one run each: without components %s (UKI %s), with components %s (UKI %s)",
		tBare.Round(100*time.Millisecond), mb(bare.UKISize), tWith.Round(100*time.Millisecond), mb(with.UKISize))
}

package build

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/images/inspect"
)

// TestLoopFsck attaches the raw image to a loop device and checks its filesystems with
// the real tools: fsck.vfat on EFI and STATE, e2fsck on EPHEMERAL (ext4, grown by the
// node on first boot), unsquashfs on the root image. META is raw.
func TestLoopFsck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches a loop device")
	}
	for _, tool := range []string{"losetup", "fsck.vfat", "e2fsck", "unsquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: apt-get install util-linux dosfstools e2fsprogs squashfs-tools", tool)
		}
	}
	dir := buildAll(t)
	img := filepath.Join(t.TempDir(), "disk.raw")
	if err := copyFile(filepath.Join(dir, "generic-amd64.raw"), img); err != nil {
		t.Fatal(err)
	}
	r, err := inspect.File(img)
	if err != nil {
		t.Fatal(err)
	}
	// One loop device per partition, at its offset: partition device nodes from
	// --partscan need udev, which containers often lack.
	for _, p := range r.Partitions {
		check := map[string][]string{
			"EFI":       {"fsck.vfat", "-n"},
			"STATE":     {"fsck.vfat", "-n"},
			"EPHEMERAL": {"e2fsck", "-fn"},
		}[p.Label]
		if check == nil {
			continue
		}
		out, err := exec.Command("losetup", "--find", "--show", "--read-only",
			"--offset", strconv.FormatUint(p.Start*512, 10), "--sizelimit", strconv.FormatInt(p.Size, 10), img).CombinedOutput()
		if err != nil {
			t.Skipf("needs loop devices: losetup: %v: %s", err, out)
		}
		loop := strings.TrimSpace(string(out))
		t.Cleanup(func() {
			if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", loop, err, out)
			}
		})
		if out, err := exec.Command(check[0], append(check[1:], loop)...).CombinedOutput(); err != nil {
			t.Errorf("%s %s (%s): %v\n%s", strings.Join(check, " "), loop, p.Label, err, out)
		} else {
			t.Logf("%s %s: %s", strings.Join(check, " "), p.Label, strings.TrimSpace(string(out)))
		}
	}
	_, root := initramfsListing(t, dir)
	sq := filepath.Join(t.TempDir(), "root.squashfs")
	if err := os.WriteFile(sq, root, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unsquashfs", "-l", sq).CombinedOutput(); err != nil {
		t.Errorf("unsquashfs -l: %v\n%s", err, out)
	}
}

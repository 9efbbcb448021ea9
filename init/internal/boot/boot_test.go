package boot

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/machined/platform/nstest"
)

const mountinfo = `22 1 0:21 / / ro,relatime - squashfs /dev/loop0 ro
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,mode=755
24 23 0:22 / /dev/pts rw,nosuid,noexec - devpts devpts rw,gid=5,mode=620
25 22 0:23 / /proc rw,nosuid,nodev,noexec - proc proc rw
26 22 259:4 / /var rw,relatime - ext4 /dev/vda4 rw
27 22 0:24 / /mnt/with\040space rw - tmpfs tmpfs rw
`

func TestParseMountInfoAndOrder(t *testing.T) {
	ms, err := ParseMountInfo(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(MountInfo{ID: 26, Parent: 22, Target: "/var", FSType: "ext4", Source: "/dev/vda4"}, ms[4]); diff != "" {
		t.Errorf("ms[4] (-want +got):\n%s", diff)
	}
	if ms[5].Target != "/mnt/with space" {
		t.Errorf("escaped target = %q", ms[5].Target)
	}
	want := []string{"/mnt/with space", "/var", "/proc", "/dev/pts", "/dev"}
	if diff := cmp.Diff(want, UnmountOrder(ms)); diff != "" {
		t.Errorf("UnmountOrder (-want +got):\n%s", diff)
	}
	if _, err := ParseMountInfo(strings.NewReader("garbage\n")); err == nil {
		t.Error("ParseMountInfo(garbage) = nil error")
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{`a\040b`: "a b", `x\134y`: `x\y`, `\04`: `\04`, `\999`: `\999`, "plain": "plain"} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSysctls(t *testing.T) {
	dir := t.TempDir()
	for _, kv := range KernelSettings() {
		p := SysctlPath(dir, kv.Key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := ApplySysctls(dir, KernelSettings()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "kernel", "panic"))
	if err != nil || string(b) != "10\n" {
		t.Errorf("kernel/panic = %q, %v; want \"10\\n\" (printk_devkmsg needs the newline)", b, err)
	}
	err = ApplySysctls(dir, []Sysctl{{"net.nope.x", "1"}})
	if err == nil || !strings.Contains(err.Error(), "net.nope.x=1") {
		t.Errorf("ApplySysctls(missing) = %v", err)
	}
}

func TestKmsgHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(NewKmsgHandler(&b, "kiln-init", slog.LevelInfo)).With("step", "root")
	log.Debug("hidden")
	log.Info("mounted", "dev", "/dev/loop0")
	log.Error("failed", "err", "boom")
	want := "<6>kiln-init: mounted step=root dev=/dev/loop0\n<3>kiln-init: failed step=root err=boom\n"
	if got := b.String(); got != want {
		t.Errorf("kmsg output = %q, want %q", got, want)
	}
	if got := Banner("v1", "6.12", "amd64"); !strings.Contains(got, "Kiln v1 (init, kernel 6.12, amd64)") {
		t.Errorf("Banner = %q", got)
	}
}

// TestLoopSquashfsAndWritableCopy mounts a real squashfs read-only through a loop
// device, makes one of its directories writable with WritableCopy, and checks both.
func TestLoopSquashfsAndWritableCopy(t *testing.T) {
	if nstest.InMountNS(t, "loop-mounts a squashfs") {
		return
	}
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skipf("needs mksquashfs (apt-get install squashfs-tools): %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"etc/ssl", "sbin", "proc"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "etc", "os-release"), []byte("ID=kiln\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../proc/self/mounts", filepath.Join(src, "etc", "mtab")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "rootfs.sqsh")
	if out, err := exec.Command("mksquashfs", src, img, "-noappend", "-quiet", "-all-root").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	root := filepath.Join(dir, "root")
	dev, err := MountLoop(img, root, "squashfs", unix.MS_RDONLY, "")
	if err != nil {
		t.Fatalf("MountLoop: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Errorf("MountLoop device = %q", dev)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc", "os-release"))
	if err != nil || string(b) != "ID=kiln\n" {
		t.Fatalf("read through squashfs: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "x"), nil, 0o644); err == nil {
		t.Error("write to the squashfs root succeeded; want read-only")
	}
	// The loop device is read-only too (LO_FLAGS_READ_ONLY).
	ro, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro"))
	if err != nil || strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("%s ro = %q, %v; want 1", dev, ro, err)
	}

	staging := filepath.Join(dir, "staging")
	if err := WritableCopy(filepath.Join(root, "etc"), staging); err != nil {
		t.Fatalf("WritableCopy: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("node1\n"), 0o644); err != nil {
		t.Errorf("write to the writable /etc: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc", "os-release")); err != nil || string(b) != "ID=kiln\n" {
		t.Errorf("copied os-release = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(root, "etc", "mtab")); err != nil || l != "../proc/self/mounts" {
		t.Errorf("copied symlink = %q, %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc", "ssl")); err != nil || !fi.IsDir() {
		t.Errorf("copied dir: %v", err)
	}
	if err := unix.Unmount(filepath.Join(root, "etc"), 0); err != nil {
		t.Errorf("unmount /etc tmpfs: %v", err)
	}
	if err := unix.Unmount(root, 0); err != nil {
		t.Errorf("unmount squashfs: %v", err)
	}
	// Auto-clear: with the mount gone and our handle closed, the loop device detaches.
	if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")); err == nil {
		t.Errorf("%s still bound to %s after unmount", dev, strings.TrimSpace(string(b)))
	}
}

package provision

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// TestDaemonisedQEMU boots the harness's trivial init (which keeps running) through
// startQEMU: QEMU must outlive the command that started it, write its console to the
// cluster's serial log, and stop on stopQEMU.
func TestDaemonisedQEMU(t *testing.T) {
	qemutest.NeedQEMU(t, qemu.AMD64)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("needs qemu-img: %v", err)
	}
	kernel := qemutest.Kernel(t, qemu.AMD64)
	initrd := qemutest.TestInitramfs(t, qemu.AMD64)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Name: "t", Dir: dir}
	pid, port, err := startQEMU(context.Background(), vmSpec{
		arch: "amd64", accel: "tcg", kernel: kernel, initrd: initrd, cmdline: "quiet testinit_mode=hang",
		disk: disk, diskSize: 8 << 20, memoryMiB: 512, cpus: 1, dir: dir,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c.PID, c.HostPort = pid, port
	t.Cleanup(func() {
		if err := stopQEMU(c, 10*time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			if b, err := os.ReadFile(c.SerialLog()); err == nil {
				t.Logf("serial log:\n%s", b)
			}
		}
	})
	if port == 0 || !running(c) {
		t.Fatalf("startQEMU = pid %d port %d; running %v", pid, port, running(c))
	}
	// The QEMU that runs is not our child: it left our session.
	own, _ := getsid(0)
	if sid, err := getsid(pid); err != nil || sid == own {
		t.Errorf("QEMU session = %d (%v), want one other than the test's (%d)", sid, err, own)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := waitConsole(ctx, &consoleWatch{path: c.SerialLog()}, regexp.MustCompile(regexp.QuoteMeta(qemutest.InitMarker)), func() bool { return running(c) }); err != nil {
		t.Fatal(err)
	}
	if err := stopQEMU(c, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if running(c) {
		t.Error("QEMU still runs after stopQEMU")
	}
}

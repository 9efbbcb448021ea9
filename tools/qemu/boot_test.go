package qemu_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// Generous hang protection only: TCG on a busy 2-core host is slow.
const bootTimeout = 3 * time.Minute

func TestDirectBootPowerOff(t *testing.T) {
	for _, arch := range []qemu.Arch{qemu.AMD64, qemu.ARM64} {
		t.Run(string(arch), func(t *testing.T) {
			qemutest.NeedQEMU(t, arch)
			kernel := qemutest.Kernel(t, arch)
			vm := qemutest.Start(t, qemu.Config{
				Arch:    arch,
				Kernel:  kernel,
				Initrd:  qemutest.TestInitramfs(t, arch),
				Append:  "quiet panic=-1",
				Timeout: 2 * bootTimeout,
			})
			if err := vm.ExpectString(qemutest.InitMarker, bootTimeout); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: QEMU start → marker %s", arch, time.Since(vm.Started()).Round(time.Millisecond))
			ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
			defer cancel()
			if err := vm.Wait(ctx); err != nil {
				t.Fatalf("QEMU after the guest powered off: %v", err)
			}
			log, err := os.ReadFile(vm.SerialLog())
			if err != nil || !regexp.MustCompile(regexp.QuoteMeta(qemutest.InitMarker)).Match(log) {
				t.Errorf("serial log %s lacks the marker (err %v)", vm.SerialLog(), err)
			}
		})
	}
}

func TestKernelPanicFailsFast(t *testing.T) {
	qemutest.NeedQEMU(t, qemu.AMD64)
	vm := qemutest.Start(t, qemu.Config{
		Arch:   qemu.AMD64,
		Kernel: qemutest.Kernel(t, qemu.AMD64),
		Initrd: qemutest.TestInitramfs(t, qemu.AMD64),
		// init exits → "Kernel panic - not syncing: Attempted to kill init!"; panic=0 keeps
		// the guest hanging, so only the watcher can end the run.
		Append:    "quiet panic=0 testinit_mode=exit",
		GuestPort: -1,
	})
	_, err := vm.Expect(regexp.MustCompile(`this line never comes`), bootTimeout)
	if !errors.Is(err, qemu.ErrKernelPanic) {
		t.Fatalf("Expect = %v, want ErrKernelPanic", err)
	}
	select {
	case <-vm.Done():
	case <-time.After(bootTimeout):
		t.Fatal("QEMU still runs after the kernel panic")
	}
}

func TestStopAndOverlay(t *testing.T) {
	qemutest.NeedQEMU(t, qemu.AMD64)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("needs qemu-img: %v", err)
	}
	// A raw "image" the VM gets as its disk: the overlay must keep it unchanged even
	// though the guest could write.
	img := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(img)
	vm := qemutest.Start(t, qemu.Config{
		Arch:     qemu.AMD64,
		Kernel:   qemutest.Kernel(t, qemu.AMD64),
		Initrd:   qemutest.TestInitramfs(t, qemu.AMD64),
		Append:   "quiet testinit_mode=hang",
		Disk:     img,
		DiskSize: 64 << 20,
	})
	if vm.Addr() == "" || vm.HostPort() == 0 {
		t.Errorf("Addr() = %q, want a forwarded loopback port", vm.Addr())
	}
	if err := vm.ExpectString(qemutest.InitMarker, bootTimeout); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", "--force-share", filepath.Join(vm.Dir(), "disk.qcow2")).CombinedOutput()
	if err != nil || !regexp.MustCompile(`virtual size: 64 MiB`).Match(out) || !regexp.MustCompile(`backing file: `+regexp.QuoteMeta(img)).Match(out) {
		t.Errorf("overlay info: %v\n%s", err, out)
	}
	if err := vm.Stop(30 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-vm.Done():
	default:
		t.Fatal("Stop returned but QEMU runs")
	}
	after, _ := os.Stat(img)
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("image changed: size %d→%d, mtime %v→%v", before.Size(), after.Size(), before.ModTime(), after.ModTime())
	}
}

func TestUEFIFirmwareStarts(t *testing.T) {
	for _, arch := range []qemu.Arch{qemu.AMD64, qemu.ARM64} {
		t.Run(string(arch), func(t *testing.T) {
			qemutest.NeedQEMU(t, arch)
			if _, _, err := qemu.Firmware(arch); err != nil {
				t.Skipf("needs UEFI firmware: %v", err)
			}
			// An empty disk: the firmware finds nothing to boot and says so on the
			// serial console, which proves code/vars pflash and the console wiring.
			img := filepath.Join(t.TempDir(), "empty.raw")
			if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			vm := qemutest.Start(t, qemu.Config{Arch: arch, UEFI: true, Disk: img, GuestPort: -1})
			if _, err := vm.Expect(regexp.MustCompile(`BdsDxe|UEFI Interactive Shell|Shell>`), bootTimeout); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: QEMU start → firmware boot manager %s", arch, time.Since(vm.Started()).Round(time.Millisecond))
		})
	}
}

// BenchmarkBootFloor is issue 4's floor: QEMU (TCG, direct kernel boot) start → the
// first console line of a trivial static Go init, for the same Debian kernel Kiln boots.
// Reported as ms/marker; compare with Kiln's readiness line in the same run.
func BenchmarkBootFloor(b *testing.B) {
	for _, arch := range []qemu.Arch{qemu.AMD64, qemu.ARM64} {
		b.Run(string(arch), func(b *testing.B) {
			qemutest.NeedQEMU(b, arch)
			kernel := qemutest.Kernel(b, arch)
			initrd := qemutest.TestInitramfs(b, arch)
			var total time.Duration
			for b.Loop() {
				vm, err := qemu.Start(context.Background(), qemu.Config{
					Arch: arch, Kernel: kernel, Initrd: initrd, Append: "quiet", GuestPort: -1,
				})
				if err != nil {
					b.Fatal(err)
				}
				if err := vm.ExpectString(qemutest.InitMarker, bootTimeout); err != nil {
					vm.Close()
					b.Fatal(err)
				}
				total += time.Since(vm.Started())
				vm.Close()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/marker")
		})
	}
}

func TestProbeKVM(t *testing.T) {
	arch := qemu.HostArch()
	qemutest.NeedQEMU(t, arch)
	err := qemu.ProbeKVM(context.Background(), arch, qemutest.Kernel(t, arch), qemutest.TestInitramfs(t, arch),
		regexp.MustCompile(regexp.QuoteMeta(qemutest.InitMarker)))
	// Either answer is valid on some host; the probe must come back with one and say why.
	t.Logf("ProbeKVM: %v", err)
}

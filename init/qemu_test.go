package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/images/kmod"
	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// TestBootInQEMU boots the real init with the Debian kernel under TCG: early modules
// (loop, squashfs) from a kmod manifest, the squashfs root through a loop device, the
// switch of root, coldplug of virtio_net, a late module (dummy) with its parameter from
// the kernel command line, supervision (the stand-in machined crashes
// once and must come back), orphan reaping, and power-off on SIGUSR2 with QEMU exiting.
// It boots both layouts init knows: machined in the root, and machined in the
// initramfs (the image builder's), started before the root mount, entering the root
// after the switch and restarted from its binding in the root.
func TestBootInQEMU(t *testing.T) {
	for _, early := range []bool{false, true} {
		name := "machined in the root"
		if early {
			name = "machined in the initramfs"
		}
		t.Run(name, func(t *testing.T) { bootInQEMU(t, early) })
	}
}

func bootInQEMU(t *testing.T, early bool) {
	arch := qemu.AMD64
	qemutest.NeedQEMU(t, arch)
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skipf("needs mksquashfs (apt-get install squashfs-tools): %v", err)
	}
	kernel := qemutest.Kernel(t, arch)
	tree := qemutest.KernelTree(t, arch,
		"./lib/modules/*/modules.builtin",
		"./lib/modules/*/kernel/drivers/block/loop.ko.xz",
		"./lib/modules/*/kernel/fs/squashfs/*",
		"./lib/modules/*/kernel/drivers/net/virtio_net.ko.xz",
		"./lib/modules/*/kernel/drivers/net/net_failover.ko.xz",
		"./lib/modules/*/kernel/net/core/failover.ko.xz",
		"./lib/modules/*/kernel/drivers/net/dummy.ko.xz",
	)
	src, files := qemutest.ModuleSource(t, tree)
	manifest := qemutest.ResolveModules(t, src, []string{"loop", "squashfs"}, []string{"virtio_net", "dummy"})

	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "var", "etc", "sbin", filepath.Dir(kmod.ManifestPath(manifest.Kernel))} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, b []byte, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	machined := qemutest.BuildGo(t, arch, "github.com/kiln-os/kiln/init/internal/testmachined")
	if early {
		// The mount point of init's binding, as the image builder makes it.
		write(filepath.Join(root, "sbin", "machined"), nil, 0o755)
	} else {
		write(filepath.Join(root, "sbin", "machined"), machined, 0o755)
	}
	write(filepath.Join(root, "etc", "os-release"), []byte("ID=kiln\n"), 0o644)
	mj, err := manifest.Text()
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(root, kmod.ManifestPath(manifest.Kernel)), mj, 0o644)
	for rel, src := range files {
		if m := qemutest.ModuleByPath(manifest, rel); m != nil && m.Stage == kmod.Late {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			write(filepath.Join(root, rel), b, 0o644)
		}
	}
	sqsh := filepath.Join(dir, "rootfs.sqsh")
	if out, err := exec.Command("mksquashfs", root, sqsh, "-noappend", "-quiet", "-all-root", "-comp", "xz").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}

	rd := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ifs := []qemu.File{
		{Name: "init", Data: qemutest.BuildGo(t, arch, "github.com/kiln-os/kiln/init")},
		{Name: "rootfs.sqsh", Data: rd(sqsh), Mode: 0o644},
		{Name: kmod.ManifestPath(manifest.Kernel), Data: mj, Mode: 0o644},
	}
	if early {
		ifs = append(ifs, qemu.File{Name: earlyMachined[1:], Data: machined})
	}
	for rel, src := range files {
		if m := qemutest.ModuleByPath(manifest, rel); m != nil && m.Stage == kmod.Early {
			ifs = append(ifs, qemu.File{Name: rel, Data: rd(src), Mode: 0o644})
		}
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := qemu.WriteInitramfs(initrd, ifs...); err != nil {
		t.Fatal(err)
	}

	vm := qemutest.Start(t, qemu.Config{Arch: arch, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1 dummy.numdummies=0", Timeout: 5 * time.Minute})
	const wait = 3 * time.Minute
	if err := vm.ExpectString("Kiln dev (init, kernel", wait); err != nil {
		t.Fatal(err)
	}
	first, err := vm.Expect(regexp.MustCompile(`testmachined: run=1 .*`), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU start → machined started: %s", time.Since(vm.Started()).Round(time.Millisecond))
	for _, want := range []string{"early=" + strconv.FormatBool(early), "ppid=1", "root-ro=true", "cgroup2=true", "etc-writable=true", "drivers=true", "virtio_net=true", "initramfs-freed=true",
		// A late module gets its command-line parameters: dummy loaded, no dummy0.
		"dummy=true", "dummy0=false"} {
		if !strings.Contains(first[0], want) {
			t.Errorf("first run: %q lacks %q", first[0], want)
		}
	}
	second, err := vm.Expect(regexp.MustCompile(`testmachined: run=2 .*`), wait)
	if err != nil {
		t.Fatalf("machined was not restarted after it crashed: %v", err)
	}
	if !strings.Contains(second[0], "early=false") {
		t.Errorf("second run: %q lacks early=false (restarts run kiln.machined from the root)", second[0])
	}
	// DESIGN.md budget: init RSS ≤ 5 MiB, measured while it supervises machined.
	m := regexp.MustCompile(`init:vmrss=(\d+)kB.*`).FindStringSubmatch(second[0])
	if m == nil {
		t.Errorf("no init RSS in %q", second[0])
	} else if kb, _ := strconv.Atoi(m[1]); kb > 5120 {
		t.Errorf("init RSS %d kB > 5120 kB budget (%s); PID 1 mappings over 64 kB:", kb, m[0])
		if b, err := os.ReadFile(vm.SerialLog()); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "testmachined: smaps") {
					t.Log(l)
				}
			}
		}
	} else {
		t.Logf("init RSS while supervising: %s", m[0])
	}
	if err := vm.ExpectString("testmachined: zombies=0;", wait); err != nil {
		t.Errorf("orphan not reaped: %v", err)
	}
	if err := vm.ExpectString("kiln-init: power off", wait); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit cleanly after power-off: %v", err)
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/images/kmod"
	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/secrets"
	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// TestNodeModeInQEMU boots the real init and the real machined from an initramfs
// (direct kernel boot, TCG) with a disk in Kiln's layout: STATE (FAT) and EPHEMERAL
// (ext4, smaller than the disk). machined must find the disk by its labels, mount
// STATE and /var, grow EPHEMERAL to the disk, get an address by DHCP from QEMU, print
// the readiness line, and answer over the forwarded port in maintenance mode; take a
// configuration (stored on STATE, host name applied), crash on request (kiln.debug),
// come back configured under init, show its mounts and sockets, and power off.
func TestNodeModeInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in -short mode")
	}
	arch := qemu.AMD64
	qemutest.NeedQEMU(t, arch)
	for _, tool := range []string{"mksquashfs", "sfdisk", "mkfs.vfat", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	kernel := qemutest.Kernel(t, arch)
	tree := qemutest.KernelTree(t, arch,
		"./lib/modules/*/modules.builtin",
		"./lib/modules/*/kernel/drivers/block/loop.ko.xz",
		"./lib/modules/*/kernel/drivers/block/virtio_blk.ko.xz",
		"./lib/modules/*/kernel/fs/squashfs/*",
		"./lib/modules/*/kernel/fs/ext4/*",
		"./lib/modules/*/kernel/fs/jbd2/*",
		"./lib/modules/*/kernel/fs/mbcache.ko.xz",
		"./lib/modules/*/kernel/lib/crc16.ko.xz",
		"./lib/modules/*/kernel/crypto/crc32c_generic.ko.xz",
		"./lib/modules/*/kernel/fs/fat/*",
		"./lib/modules/*/kernel/fs/nls/nls_cp437.ko.xz",
		"./lib/modules/*/kernel/fs/nls/nls_ascii.ko.xz",
		"./lib/modules/*/kernel/fs/nls/nls_utf8.ko.xz",
		"./lib/modules/*/kernel/fs/nls/nls_iso8859-1.ko.xz",
		"./lib/modules/*/kernel/drivers/net/virtio_net.ko.xz",
		"./lib/modules/*/kernel/drivers/net/net_failover.ko.xz",
		"./lib/modules/*/kernel/net/core/failover.ko.xz",
	)
	early := []string{"loop", "squashfs", "virtio_blk", "crc32c_generic", "ext4", "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1"}
	src, files := qemutest.ModuleSource(t, tree)
	// Modules the kernel package lacks are left out of early.
	early = slices.DeleteFunc(early, func(n string) bool {
		_, ok := src.Paths[n]
		return !ok && !src.Builtin[n]
	})
	manifest := qemutest.ResolveModules(t, src, early, []string{"virtio_net"})

	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	write := func(p string, b []byte, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "var", "etc", "system/state", "sbin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "sbin", "machined"), qemutest.BuildGo(t, arch, "github.com/kiln-os/kiln/machined/cmd/machined"), 0o755)
	write(filepath.Join(root, "etc", "os-release"), []byte("ID=kiln\n"), 0o644)
	mj, err := manifest.Text()
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(root, kmod.ManifestPath(manifest.Kernel)), mj, 0o644)
	rd := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ifs := []qemu.File{
		{Name: "init", Data: qemutest.BuildGo(t, arch, "github.com/kiln-os/kiln/init")},
		{Name: kmod.ManifestPath(manifest.Kernel), Data: mj, Mode: 0o644},
	}
	// As the image builder does: the root holds every module (init's drivers child
	// loads from it after the switch), the initramfs the early ones.
	for rel, src := range files {
		m := qemutest.ModuleByPath(manifest, rel)
		if m == nil {
			continue
		}
		write(filepath.Join(root, rel), rd(src), 0o644)
		if m.Stage == kmod.Early {
			ifs = append(ifs, qemu.File{Name: rel, Data: rd(src), Mode: 0o644})
		}
	}
	sqsh := filepath.Join(dir, "rootfs.sqsh")
	if out, err := exec.Command("mksquashfs", root, sqsh, "-noappend", "-quiet", "-all-root", "-comp", "xz").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	ifs = append(ifs, qemu.File{Name: "rootfs.sqsh", Data: rd(sqsh), Mode: 0o644})
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := qemu.WriteInitramfs(initrd, ifs...); err != nil {
		t.Fatal(err)
	}
	disk := makeSystemDisk(t, dir)

	vm := qemutest.Start(t, qemu.Config{
		Arch: arch, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1 kiln.debug",
		Disk: disk, DiskSize: 256 << 20, Timeout: 8 * time.Minute,
	})
	const wait = 4 * time.Minute
	ready := regexp.MustCompile(`\[kiln\] ready api=(\S+) mode=(\S+) fingerprint=sha256:([0-9a-f]{64}) addrs=(\S+) hostname=(\S+) platform=(\S+)`)
	m, err := vm.Expect(ready, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU start → readiness line: %s: %s", time.Since(vm.Started()).Round(time.Millisecond), m[0])
	if m[2] != "maintenance" || m[6] != "node" || !strings.HasPrefix(m[5], "kiln-") || m[4] == "none" {
		t.Errorf("readiness line %q: want maintenance mode, platform node, a kiln-xxxxxx name and an address", m[0])
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := client.New(ctx, vm.Addr(), client.WithInsecure(m[3]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	api := machine.NewMachineServiceClient(c.Conn())
	v, err := api.Version(ctx, &machine.VersionRequest{})
	if err != nil {
		t.Fatalf("Version over the forwarded port: %v", err)
	}
	if v.GetPlatform() != "node" || !v.GetMaintenance() || v.GetHostname() != m[5] {
		t.Errorf("Version = %v", v)
	}
	t.Logf("QEMU start → first API answer: %s", time.Since(vm.Started()).Round(time.Millisecond))
	// Maintenance mode leaves EPHEMERAL alone; a configuration mounts and grows it
	// before it comes into force (below).
	if strings.Contains(readSerial(t, vm), "EPHEMERAL") {
		t.Errorf("the console mentions EPHEMERAL in maintenance mode:\n%s", readSerial(t, vm))
	}

	// Leave maintenance mode: the configuration goes to the store on STATE.
	b, err := secrets.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	gen, err := generate.Generate("qemu", "https://10.0.2.15:6443", b, generate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gen.ControlPlane.Machine.Machine.Hostname = "qemu-node"
	cfg, err := gen.ControlPlane.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.ApplyConfiguration(ctx, &machine.ApplyConfigurationRequest{Data: cfg}); err != nil {
		t.Fatalf("ApplyConfiguration: %v", err)
	}
	// The apply waited for it; the console line may still be on its way.
	if err := vm.ExpectString("EPHEMERAL grown", wait); err != nil {
		t.Errorf("the console does not report EPHEMERAL grown to the bigger disk once the configuration is in force: %v", err)
	}
	admin := func() machine.MachineServiceClient {
		t.Helper()
		c, err := client.New(ctx, vm.Addr(), client.WithMTLS(gen.CACrt, gen.AdminCrt, gen.AdminKey))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return machine.NewMachineServiceClient(c.Conn())
	}
	if v, err := admin().Version(ctx, &machine.VersionRequest{}); err != nil || v.GetHostname() != "qemu-node" || v.GetMaintenance() {
		t.Fatalf("Version over mTLS after the apply = %v, %v; want host name qemu-node, configured", v, err)
	}

	// Crash on request: init restarts machined, which finds its partitions
	// mounted and the configuration on STATE.
	if _, err := admin().DebugAction(ctx, &machine.DebugActionRequest{Action: "crash"}); err != nil {
		t.Fatalf("DebugAction crash: %v", err)
	}
	configured := regexp.MustCompile(`\[kiln\] ready api=\S+ mode=configured .*hostname=qemu-node`)
	if _, err := vm.Expect(configured, wait); err != nil {
		t.Fatalf("machined did not come back configured after the crash: %v\n%s", err, kilnLines(t, vm))
	}
	api2 := admin()
	if v, err := api2.Version(ctx, &machine.VersionRequest{}); err != nil || v.GetHostname() != "qemu-node" {
		t.Fatalf("Version after the restart = %v, %v", v, err)
	}
	mounts, err := api2.Mounts(ctx, &machine.MountsRequest{})
	if err != nil {
		t.Fatalf("Mounts: %v", err)
	}
	got := map[string][]string{}
	for _, mt := range mounts.GetMounts() {
		got[mt.GetTarget()] = append(got[mt.GetTarget()], mt.GetFstype())
	}
	if !slices.Equal(got["/system/state"], []string{"vfat"}) || !slices.Equal(got["/var"], []string{"tmpfs", "ext4"}) || !slices.Equal(got["/"], []string{"squashfs"}) {
		t.Errorf("mounts: %v; want STATE (vfat) once on /system/state, EPHEMERAL (ext4) once over init's tmpfs /var, the squashfs root", got)
		if s, err := api2.Dmesg(ctx, &machine.DmesgRequest{}); err == nil {
			for {
				e, err := s.Recv()
				if err != nil {
					break
				}
				if m := e.GetMessage(); strings.Contains(m, "EXT4") || strings.Contains(m, "vda") || strings.Contains(m, "FAT") {
					t.Logf("kernel: %s", m)
				}
			}
		}
	}
	socks, err := api2.Netstat(ctx, &machine.NetstatRequest{})
	if err != nil {
		t.Fatalf("Netstat: %v", err)
	}
	for _, s := range socks.GetSockets() {
		if s.GetState() == "LISTEN" && s.GetLocalPort() != 50000 {
			t.Errorf("unexpected listener %v", s)
		}
	}
	t.Logf("sockets: %v", socks.GetSockets())

	if _, err := api2.Shutdown(ctx, &machine.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := vm.ExpectString("kiln-init: power off", wait); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit cleanly after the shutdown: %v", err)
	}
	if t.Failed() {
		t.Logf("console:\n%s", kilnLines(t, vm))
	}
}

// kilnLines returns the console lines of init and machined.
func kilnLines(t *testing.T, vm *qemu.VM) string {
	var out []string
	for _, l := range strings.Split(readSerial(t, vm), "\n") {
		if strings.Contains(l, "kiln") || strings.Contains(l, "level=") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func readSerial(t *testing.T, vm *qemu.VM) string {
	t.Helper()
	b, err := os.ReadFile(vm.SerialLog())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// makeSystemDisk writes a 64 MiB raw disk in Kiln's layout: EFI (empty), META,
// STATE (FAT) and EPHEMERAL (ext4).
func makeSystemDisk(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	// Sectors: EFI 2048+16384, META 18432+2048, STATE 20480+40960, EPHEMERAL
	// 61440+65536 (32 MiB, leaving the rest of the disk for it to grow into).
	script := `label: gpt
start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"
start=18432, size=2048, name="META"
start=20480, size=40960, name="STATE"
start=61440, size=65536, name="EPHEMERAL"
`
	cmd := exec.Command("sfdisk", "--quiet", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	ephSectors := 65536
	for _, c := range [][]string{
		{"mkfs.vfat", "-n", "STATE", "--offset", "20480", img, fmt.Sprint(40960 / 2)},
		{"mkfs.ext4", "-q", "-F", "-L", "EPHEMERAL", "-E", fmt.Sprintf("offset=%d", 61440*512), img, fmt.Sprintf("%dk", ephSectors/2)},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return img
}

package provision

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/patch"
)

func TestCheckName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"kiln", true}, {"a", true}, {"dev-1", true}, {"0abc", true},
		{"", false}, {"Kiln", false}, {"-a", false}, {"a-", false}, {"a_b", false}, {"a/b", false},
		{"..", false}, {strings.Repeat("a", 41), false}, {strings.Repeat("a", 40), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckName(tt.name); (err == nil) != tt.ok {
				t.Errorf("CheckName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "config")
	for _, tt := range []struct {
		name string
		o    Options
		err  string
	}{
		{"defaults", Options{KctlConfig: kc}, ""},
		{"bad arch", Options{Arch: "riscv64", KctlConfig: kc}, "--arch"},
		{"bad boot", Options{Boot: "pxe", KctlConfig: kc}, "--boot"},
		{"kernel needs direct", Options{Kernel: "/k", KctlConfig: kc}, "--boot direct"},
		{"too little memory", Options{MemoryMiB: 64, KctlConfig: kc}, "--memory"},
		{"bad name", Options{Name: "A B", KctlConfig: kc}, "cluster name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.defaults()
			if tt.err == "" {
				if err != nil {
					t.Fatalf("defaults() = %v", err)
				}
				if tt.o.Name != DefaultName || tt.o.Boot != BootUEFI || tt.o.MemoryMiB != 1024 || tt.o.CPUs != 2 || tt.o.DiskSize != 4<<30 {
					t.Errorf("defaults() left %+v", tt.o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("defaults() = %v, want an error mentioning %q", err, tt.err)
			}
		})
	}
}

func TestKernelFilesFor(t *testing.T) {
	got := KernelFilesFor("/out/generic-amd64.raw")
	want := KernelFiles{"/out/generic-amd64-vmlinuz", "/out/generic-amd64-initramfs.zst", "/out/generic-amd64-cmdline.txt"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("KernelFilesFor() (-want +got):\n%s", diff)
	}
}

func TestQEMUArgs(t *testing.T) {
	s := vmSpec{arch: "amd64", accel: "tcg", uefi: true, memoryMiB: 1024, cpus: 2, dir: "/st/kiln"}
	got := strings.Join(qemuArgs(s, "/code.fd", "/st/kiln/efivars.fd", "/st/kiln/disk.qcow2", "/st/kiln/qemu.pid", 4242), " ")
	for _, want := range []string{
		"-accel tcg -m 1024 -smp 2",
		"-serial file:/st/kiln/serial.log -daemonize -pidfile /st/kiln/qemu.pid",
		"-nodefaults",
		"-M q35 -drive if=pflash,format=raw,unit=0,readonly=on,file=/code.fd",
		"-drive if=none,id=disk0,format=qcow2,file=/st/kiln/disk.qcow2",
		"hostfwd=tcp:127.0.0.1:4242-:50000",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("qemuArgs() = %q, want %q in it", got, want)
		}
	}
	if strings.Contains(got, "-kernel") || strings.Contains(got, "stdio") {
		t.Errorf("qemuArgs(uefi) = %q: no -kernel, no stdio (daemonised)", got)
	}
	s = vmSpec{arch: "arm64", accel: "tcg", kernel: "/k", initrd: "/i", cmdline: "quiet kiln.debug", memoryMiB: 512, cpus: 1, dir: "/a,b"}
	got = strings.Join(qemuArgs(s, "", "", "/a,b/disk.qcow2", "/a,b/qemu.pid", 1), " ")
	for _, want := range []string{"-M virt -cpu cortex-a72", "-kernel /k -initrd /i -append console=ttyAMA0 quiet kiln.debug", "file=/a,,b/disk.qcow2"} {
		if !strings.Contains(got, want) {
			t.Errorf("qemuArgs() = %q, want %q in it", got, want)
		}
	}
	s.kernel, s.cmdline = "/k", "console=ttyS0,115200 quiet"
	if got = strings.Join(qemuArgs(s, "", "", "/d.qcow2", "/p", 1), " "); !strings.Contains(got, "-append console=ttyS0,115200 quiet") {
		t.Errorf("qemuArgs() = %q: the board's console= is not kept", got)
	}
}

func TestGenerateConfig(t *testing.T) {
	p, err := patch.Load(`[{"op": "add", "path": "/machine/sysctls", "value": {"vm.swappiness": "1"}}]`)
	if err != nil {
		t.Fatal(err)
	}
	g, err := GenerateConfig("dev", "dev-controlplane-1", []patch.Patch{p})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(g.Config)
	if err != nil {
		t.Fatalf("Parse(generated) = %v", err)
	}
	if c.Hostname() != "dev-controlplane-1" || c.ClusterName() != "dev" || c.Machine.Machine.Sysctls["vm.swappiness"] != "1" {
		t.Errorf("generated config: hostname %q cluster %q sysctls %v", c.Hostname(), c.ClusterName(), c.Machine.Machine.Sysctls)
	}
	if len(g.CA) == 0 || len(g.Crt) == 0 || len(g.Key) == 0 || g.Secrets == nil {
		t.Error("GenerateConfig returned no credentials")
	}
	bad, _ := patch.Load(`[{"op": "replace", "path": "/machine/hostname", "value": "Not Valid"}]`)
	if _, err := GenerateConfig("dev", "dev", []patch.Patch{bad}); err == nil || !strings.Contains(err.Error(), "machine.hostname") {
		t.Errorf("GenerateConfig(bad patch) = %v, want a machine.hostname error", err)
	}
}

func TestContextWriteAndRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kctl", "config")
	name, err := writeContext(path, "kiln", "127.0.0.1:1111", []byte("ca"), []byte("crt"), []byte("key"))
	if err != nil || name != "kiln" {
		t.Fatalf("writeContext = %q, %v", name, err)
	}
	// A second cluster of the same name (another state dir) gets a renamed context.
	name2, err := writeContext(path, "kiln", "127.0.0.1:2222", []byte("ca"), []byte("crt"), []byte("key"))
	if err != nil || name2 != "kiln-1" {
		t.Fatalf("writeContext(second) = %q, %v; want kiln-1", name2, err)
	}
	cfg, err := clientconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Context != "kiln-1" || cfg.Contexts["kiln"].Endpoints[0] != "127.0.0.1:1111" {
		t.Errorf("client config after two writes: current %q, contexts %v", cfg.Context, cfg.Names())
	}
	// Removing with a stale endpoint leaves the context alone.
	if err := removeContext(path, "kiln", "127.0.0.1:9999"); err != nil {
		t.Fatal(err)
	}
	if err := removeContext(path, "kiln-1", "127.0.0.1:2222"); err != nil {
		t.Fatal(err)
	}
	cfg, _ = clientconfig.Load(path)
	if diff := cmp.Diff([]string{"kiln"}, cfg.Names()); diff != "" || cfg.Context != "" {
		t.Errorf("after remove: contexts (-want +got) %s, current %q", diff, cfg.Context)
	}
	if err := removeContext(filepath.Join(t.TempDir(), "none"), "x", "y"); err != nil {
		t.Errorf("removeContext(missing file) = %v", err)
	}
}

func TestWaitConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fp := strings.Repeat("ab", 32)
	go func() {
		f.WriteString("firmware\r\nkiln: booting\n")
		time.Sleep(200 * time.Millisecond)
		f.WriteString("[kiln] ready api=[::]:50000 mode=maintenance fingerp")
		time.Sleep(200 * time.Millisecond)
		f.WriteString("rint=sha256:" + fp + " addrs=10.0.2.15 hostname=none platform=node\nlater\n")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &consoleWatch{path: path}
	m, err := waitConsole(ctx, w, ReadyPattern, func() bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if got := submatch(ReadyPattern, m, "fingerprint"); got != fp {
		t.Errorf("fingerprint = %q, want %q", got, fp)
	}
	if got := submatch(ReadyPattern, m, "mode") + " " + submatch(ReadyPattern, m, "hostname"); got != "maintenance none" {
		t.Errorf("mode, hostname = %q, want \"maintenance none\"", got)
	}

	// QEMU gone: an error that carries the console's last lines.
	_, err = waitConsole(ctx, w, regexp.MustCompile("never"), func() bool { return false })
	if !errors.Is(err, ErrQEMUExited) || !strings.Contains(err.Error(), "later") {
		t.Errorf("waitConsole(exited) = %v, want ErrQEMUExited with the tail", err)
	}
	f.WriteString("[    1.0] Kernel panic - not syncing: Attempted to kill init!\n")
	_, err = waitConsole(ctx, w, regexp.MustCompile("never"), func() bool { return true })
	if err == nil || !strings.Contains(err.Error(), "kernel panic") {
		t.Errorf("waitConsole(panic) = %v, want a kernel panic error", err)
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load(t.TempDir(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load(missing) = %v, want ErrNotFound", err)
	}
	if err := Destroy(t.TempDir(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Destroy(missing) = %v, want ErrNotFound", err)
	}
}

package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		f    files
		want []string // must appear in this order as a contiguous run
		not  []string
	}{
		{
			name: "amd64 direct TCG",
			cfg:  Config{Arch: AMD64, Accel: TCG, Kernel: "/k", Initrd: "/i", Append: "quiet", MemoryMiB: 512, CPUs: 1, GuestPort: 50000, HostPort: 4242},
			want: []string{"-M", "q35", "-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0 quiet pti=auto", "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:4242-:50000"},
			not:  []string{"-no-reboot", "-cpu", "if=pflash", "-smbios"},
		},
		{
			name: "packet dump of the user network",
			cfg:  Config{Arch: AMD64, Accel: TCG, Kernel: "/k", GuestPort: 50000, HostPort: 4242, NetDump: "/run,1/net.pcap"},
			want: []string{"-device", "virtio-net-pci,netdev=net0,romfile=", "-object", "filter-dump,id=netdump0,netdev=net0,file=/run,,1/net.pcap"},
		},
		{
			name: "no network, no dump",
			cfg:  Config{Arch: AMD64, Accel: TCG, Kernel: "/k", GuestPort: -1, NetDump: "/net.pcap"},
			not:  []string{"filter-dump", "-netdev"},
		},
		{
			name: "amd64 UEFI TCG",
			cfg:  Config{Arch: AMD64, Accel: TCG, UEFI: true, FirmwareCode: "/code.fd", Disk: "/d", GuestPort: -1},
			f:    files{overlay: "/o.qcow2", vars: "/vars.fd"},
			want: []string{"-M", "q35", "-smbios", "type=11,value=io.systemd.stub.kernel-cmdline-extra=pti=auto", "-drive", "if=none,id=disk0,format=qcow2,file=/o.qcow2"},
			not:  []string{"-kernel", "-append"},
		},
		{
			name: "amd64 KVM keeps the image's isolation",
			cfg:  Config{Arch: AMD64, Accel: KVM, Kernel: "/k", Append: "pti=on", GuestPort: -1},
			want: []string{"-cpu", "host", "-append", "console=ttyS0 pti=on"},
			not:  []string{"pti=auto", "-smbios"},
		},
		{
			name: "amd64 UEFI KVM",
			cfg:  Config{Arch: AMD64, Accel: KVM, UEFI: true, FirmwareCode: "/code.fd", Disk: "/d", GuestPort: -1},
			f:    files{overlay: "/o.qcow2", vars: "/vars.fd"},
			want: []string{"-cpu", "host"},
			not:  []string{"-smbios", "pti="},
		},
		{
			name: "arm64 UEFI disk no reboot",
			cfg:  Config{Arch: ARM64, Accel: TCG, UEFI: true, FirmwareCode: "/code.fd", Disk: "/d", NoReboot: true, GuestPort: -1},
			f:    files{overlay: "/o,1.qcow2", vars: "/vars.fd"},
			want: []string{"-M", "virt", "-cpu", "cortex-a72", "-no-reboot", "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/code.fd", "-drive", "if=pflash,format=raw,unit=1,file=/vars.fd", "-drive", "if=none,id=disk0,format=qcow2,file=/o,,1.qcow2"},
			not:  []string{"-netdev", "-kernel", "-smbios"},
		},
		{
			name: "caller console kept",
			cfg:  Config{Arch: ARM64, Accel: KVM, Kernel: "/k", Append: "console=hvc0 x", GuestPort: -1},
			want: []string{"-cpu", "host", "-kernel", "/k", "-append", "console=hvc0 x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := args(&tt.cfg, tt.f)
			joined := "\x00" + strings.Join(got, "\x00") + "\x00"
			for _, seq := range splitRuns(tt.want) {
				if !strings.Contains(joined, "\x00"+strings.Join(seq, "\x00")+"\x00") {
					t.Errorf("args() = %q, want the run %q", got, seq)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(joined, n) {
					t.Errorf("args() = %q, must not contain %q", got, n)
				}
			}
		})
	}
}

// splitRuns splits a flag list into option+value pairs, so tests do not depend on the
// order of unrelated options.
func splitRuns(s []string) [][]string {
	var out [][]string
	for i := 0; i < len(s); i++ {
		if i+1 < len(s) && strings.HasPrefix(s[i], "-") && !strings.HasPrefix(s[i+1], "-") {
			out = append(out, s[i:i+2])
			i++
			continue
		}
		out = append(out, s[i:i+1])
	}
	return out
}

func TestConsoleExpect(t *testing.T) {
	panicked := make(chan struct{}, 1)
	c := newConsole(func() { panicked <- struct{}{} })
	c.add([]byte("booting\r\nkiln: rea"))
	go func() {
		c.add([]byte("dy addr=10.0.2.15\nnext line\n"))
	}()
	m, err := c.expect(regexp.MustCompile(`kiln: ready addr=(\S+)`), time.Minute)
	if err != nil {
		t.Fatalf("expect: %v", err)
	}
	if diff := cmp.Diff([]string{"kiln: ready addr=10.0.2.15", "10.0.2.15"}, m); diff != "" {
		t.Errorf("submatches (-want +got):\n%s", diff)
	}
	// Consumed: "booting" must not match any more.
	c.add([]byte("[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n"))
	if _, err := c.expect(regexp.MustCompile(`booting`), time.Minute); !errors.Is(err, ErrKernelPanic) {
		t.Errorf("expect after panic = %v, want ErrKernelPanic", err)
	}
	select {
	case <-panicked:
	default:
		t.Error("onPanic was not called")
	}
	if _, err := c.expect(regexp.MustCompile(`never`), time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("expect = %v, want ErrTimeout", err)
	}
	c.add([]byte("tail without newline"))
	c.close()
	if _, err := c.expect(regexp.MustCompile(`without`), time.Minute); err != nil {
		t.Errorf("expect on the flushed partial line: %v", err)
	}
	if _, err := c.expect(regexp.MustCompile(`never`), time.Minute); !errors.Is(err, ErrExited) {
		t.Errorf("expect after close = %v, want ErrExited", err)
	}
}

// A QEMU that exits on its own before the awaited line: Expect's error carries its
// exit status and stderr, though the console ends a moment before the process is
// reaped (a CI run once showed "QEMU exited" with neither).
func TestExpectReportsHowQEMUExited(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "qemu-fake")
	script := "#!/bin/sh\necho booting\necho 'qemu: assertion failed' >&2\nexit 3\n"
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		vm, err := Start(t.Context(), Config{Binary: fake, Kernel: kernel, GuestPort: -1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		err = vm.ExpectString("never", time.Minute)
		vm.Close()
		if !errors.Is(err, ErrExited) {
			t.Fatalf("Expect = %v, want ErrExited", err)
		}
		for _, want := range []string{"booting", "exit status 3", "QEMU stderr: qemu: assertion failed"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Expect's error lacks %q:\n%v", want, err)
			}
		}
	}
}

func TestImageFormat(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ name, data, want string }{
		{"q.img", "QFI\xfb\x00\x00\x00\x03rest", "qcow2"},
		{"r.img", "\x00\x00\x00\x00", "raw"},
		{"short.img", "Q", "raw"},
	} {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, []byte(tt.data), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ImageFormat(p)
		if err != nil || got != tt.want {
			t.Errorf("ImageFormat(%q) = %q, %v, want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing to boot", Config{Arch: AMD64}, "nothing to boot"},
		{"uefi without disk", Config{Arch: AMD64, UEFI: true}, "needs a Disk"},
		{"bad arch", Config{Arch: "riscv64", Kernel: "/k"}, "unsupported arch"},
		{"missing kernel", Config{Arch: AMD64, Kernel: "/nonexistent/vmlinuz"}, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.setDefaults()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("setDefaults() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

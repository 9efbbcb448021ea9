package qemu

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"time"
)

// ProbeKVM reports whether a KVM boot works: /dev/kvm opens, and the kernel and initrd
// (a trivial init printing marker) boot with -accel kvm until marker appears. On hosts
// that are themselves guests, /dev/kvm may exist while every guest kernel fails with a
// KVM emulation error, so only a real boot decides. Pick KVM only when it returns nil.
func ProbeKVM(ctx context.Context, arch Arch, kernel, initrd string, marker *regexp.Regexp) error {
	if arch != HostArch() {
		return fmt.Errorf("kvm probe: guest %s differs from host %s", arch, HostArch())
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("kvm probe: %w", err)
	}
	f.Close()
	vm, err := Start(ctx, Config{Arch: arch, Accel: KVM, Kernel: kernel, Initrd: initrd,
		Append: "quiet panic=-1", GuestPort: -1, NoReboot: true, Timeout: 2 * time.Minute})
	if err != nil {
		return fmt.Errorf("kvm probe: %w", err)
	}
	defer vm.Close()
	if _, err := vm.Expect(marker, time.Minute); err != nil {
		return fmt.Errorf("kvm probe: %w", err)
	}
	return nil
}

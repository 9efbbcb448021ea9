package qemu

import (
	"fmt"
	"strings"
)

// files are the per-VM paths the command line refers to.
type files struct {
	overlay string // qcow2 overlay over Config.Disk
	vars    string // copy of the UEFI variable store
}

// args builds QEMU's command line. It is pure so tests can check it.
func args(c *Config, f files) []string {
	a := append(MachineArgs(c, f.overlay, f.vars), "-serial", "stdio")
	return append(a, c.ExtraArgs...)
}

// MachineArgs is QEMU's command line for the machine c describes, without the serial
// port and ExtraArgs (c as given: Start fills in the defaults before it calls this):
// accelerator, memory, CPUs, board, firmware with vars as its variable store, the
// kernel (EmulationKernelArgs after the given command line, or on a UEFI boot in
// systemd-stub's SMBIOS string), overlay as the virtio disk, the user network with c's
// forwards (and its packet dump with NetDump), and an entropy device. Paths are
// escaped for QEMU's option syntax. tools/provision starts daemonised nodes with it.
func MachineArgs(c *Config, overlay, vars string) []string {
	esc := EscapeOptionValue
	a := []string{
		"-accel", string(c.Accel),
		"-m", fmt.Sprint(c.MemoryMiB),
		"-smp", fmt.Sprint(c.CPUs),
		"-display", "none",
		"-monitor", "none",
		"-nodefaults",
	}
	switch c.Arch {
	case ARM64:
		a = append(a, "-M", "virt", "-cpu", "cortex-a72")
		if c.Accel == KVM {
			a[len(a)-1] = "host"
		}
	default:
		a = append(a, "-M", "q35")
		if c.Accel == KVM {
			a = append(a, "-cpu", "host")
		}
	}
	if c.NoReboot {
		a = append(a, "-no-reboot")
	}
	if c.UEFI {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+esc(c.FirmwareCode),
			"-drive", "if=pflash,format=raw,unit=1,file="+esc(vars),
		)
	}
	extra := EmulationKernelArgs(c)
	if c.Kernel != "" {
		a = append(a, "-kernel", c.Kernel)
		if c.Initrd != "" {
			a = append(a, "-initrd", c.Initrd)
		}
		a = append(a, "-append", kernelCmdline(c.Arch, strings.TrimSpace(c.Append+" "+extra)))
	} else if c.UEFI && extra != "" {
		// systemd-stub appends this SMBIOS string to the UKI's command line (systemd
		// 254 and later; ignored in a confidential VM).
		a = append(a, "-smbios", "type=11,value="+esc(stubCmdlineExtra+extra))
	}
	if overlay != "" {
		a = append(a,
			"-drive", "if=none,id=disk0,format=qcow2,file="+esc(overlay),
			"-device", "virtio-blk-pci,drive=disk0",
		)
	}
	if c.GuestPort > 0 {
		netdev := fmt.Sprintf("user,id=net0,hostfwd=tcp:127.0.0.1:%d-:%d", c.HostPort, c.GuestPort)
		for _, f := range c.Forwards {
			netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-%s:%d", f.HostPort, f.GuestAddr, f.GuestPort)
		}
		a = append(a,
			"-netdev", netdev,
			"-device", "virtio-net-pci,netdev=net0,romfile=",
		)
		if c.NetDump != "" {
			a = append(a, "-object", "filter-dump,id=netdump0,netdev=net0,file="+esc(c.NetDump))
		}
	}
	// Entropy for the guest's crypto/rand early in boot (TLS keys in maintenance mode).
	return append(a, "-device", "virtio-rng-pci")
}

// stubCmdlineExtra is the SMBIOS type 11 string systemd-stub reads for more kernel
// arguments.
const stubCmdlineExtra = "io.systemd.stub.kernel-cmdline-extra="

// EmulationKernelArgs are the kernel arguments MachineArgs adds to the guest's own (for
// a UEFI boot, through systemd-stub): "pti=auto" for an amd64 guest under TCG, nothing
// otherwise. The generic board forces page-table isolation (pti=on, as Talos does) to
// keep KASLR from side channels of the CPU's page walks and speculation. Under TCG the
// guest's privilege checks are QEMU's software MMU, not the host CPU's, so the guest's
// isolation protects nothing there; and TCG emulates no PCID, so every entry to the
// guest's kernel flushes the emulated TLB: the boot pays about 0.16 s for it. The
// kernel's own choice applies instead (isolation on CPUs that need it against
// Meltdown). Under KVM the guest runs on the real CPU and keeps pti=on.
func EmulationKernelArgs(c *Config) string {
	if c.Accel == TCG && c.Arch == AMD64 {
		return "pti=auto"
	}
	return ""
}

// EscapeOptionValue escapes v (a path) for a QEMU option value such as file=v: a
// comma would end the value.
func EscapeOptionValue(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// kernelCmdline prepends the serial console argument unless the caller chose one.
func kernelCmdline(a Arch, s string) string {
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(f, "console=") {
			return s
		}
	}
	return strings.TrimSpace(ConsoleArg(a) + " " + s)
}

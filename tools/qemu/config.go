package qemu

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Arch is a guest architecture, spelled as GOARCH.
type Arch string

// Supported guest architectures.
const (
	AMD64 Arch = "amd64"
	ARM64 Arch = "arm64"
)

// HostArch is the architecture of the machine running the harness.
func HostArch() Arch { return Arch(runtime.GOARCH) }

// Accel selects QEMU's accelerator.
type Accel string

// Accelerators. KVM is chosen only by the caller, after ProbeKVM said it works.
const (
	TCG Accel = "tcg"
	KVM Accel = "kvm"
)

// APIPort is the guest port of the machine API; Config.GuestPort defaults to it.
const APIPort = 50000

// Config describes one VM. Either Kernel (direct boot) or UEFI with Disk must be set.
type Config struct {
	Arch Arch // default: HostArch()
	// Accel defaults to TCG.
	Accel Accel

	// Direct kernel boot.
	Kernel string
	Initrd string
	// Append is the kernel command line; ConsoleArg(Arch) is prepended when it names no
	// console=, and EmulationKernelArgs are appended.
	Append string

	// UEFI boots the disk through OVMF (amd64) or AAVMF (arm64). Firmware files default to
	// the Debian packages' paths (ovmf, qemu-efi-aarch64).
	UEFI         bool
	FirmwareCode string
	FirmwareVars string // template; the VM gets its own copy

	// Disk is a raw or qcow2 image attached as virtio-blk through a qcow2 overlay; the
	// image itself is opened read-only by QEMU. DiskSize, when set, grows the overlay's
	// virtual size (bytes), as a user would give a node a bigger disk.
	Disk     string
	DiskSize int64

	MemoryMiB int // default 1024
	CPUs      int // default 2

	// GuestPort is forwarded from 127.0.0.1:<HostPort> (a free port is picked when
	// HostPort is 0). Default APIPort; negative disables networking.
	GuestPort int
	HostPort  int
	// Forwards are more TCP forwards on the same user network (needs GuestPort > 0),
	// e.g. to a second guest address.
	Forwards []Forward

	// NetDump, when set, is a pcap file that receives every packet of the guest's NIC
	// with the host's timestamps (QEMU's filter-dump; needs GuestPort > 0): how a
	// call's time splits between the guest and the wire, packet by packet.
	NetDump string

	// NoReboot makes QEMU exit when the guest reboots (-no-reboot).
	NoReboot bool

	// Dir receives the overlay, the firmware variables and serial.log. Default: a new
	// temporary directory, removed by Close unless KeepDir.
	Dir     string
	KeepDir bool

	// Timeout bounds the VM's whole life; QEMU is killed after it. Default 10 minutes.
	Timeout time.Duration

	// Binary overrides qemu-system-<arch>.
	Binary string
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string

	Logger *slog.Logger
}

// Forward is a TCP forward from 127.0.0.1:HostPort (FreePort finds one) to
// GuestAddr:GuestPort; an empty GuestAddr is the guest's first DHCP address
// (10.0.2.15), as for Config.GuestPort.
type Forward struct {
	HostPort  int
	GuestAddr string
	GuestPort int
}

// ConsoleArg returns the kernel argument that puts the console on the first serial port.
func ConsoleArg(a Arch) string {
	if a == ARM64 {
		return "console=ttyAMA0"
	}
	return "console=ttyS0"
}

// Binary returns the QEMU system emulator for an architecture.
func Binary(a Arch) string {
	if a == ARM64 {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// Firmware returns the Debian paths of the UEFI code and variable template for a guest
// architecture, or an error naming the package to install.
func Firmware(a Arch) (code, vars string, err error) {
	pkg := "ovmf"
	code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	if a == ARM64 {
		pkg = "qemu-efi-aarch64"
		code, vars = "/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"
	}
	for _, p := range []string{code, vars} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("UEFI firmware for %s: %w (install the Debian package %s)", a, err, pkg)
		}
	}
	return code, vars, nil
}

func (c *Config) setDefaults() error {
	if c.Arch == "" {
		c.Arch = HostArch()
	}
	if c.Arch != AMD64 && c.Arch != ARM64 {
		return fmt.Errorf("qemu: unsupported arch %q (want amd64 or arm64)", c.Arch)
	}
	if c.Accel == "" {
		c.Accel = TCG
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1024
	}
	if c.CPUs == 0 {
		c.CPUs = 2
	}
	if c.GuestPort == 0 {
		c.GuestPort = APIPort
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Binary == "" {
		c.Binary = Binary(c.Arch)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, f := range c.Forwards {
		if c.GuestPort <= 0 || f.HostPort <= 0 || f.GuestPort <= 0 {
			return fmt.Errorf("qemu: forward %+v needs networking (GuestPort > 0) and both ports", f)
		}
	}
	if c.Kernel == "" && !c.UEFI {
		return fmt.Errorf("qemu: nothing to boot: set Kernel (direct boot) or UEFI with Disk")
	}
	if c.UEFI && c.Disk == "" {
		return fmt.Errorf("qemu: UEFI boot needs a Disk")
	}
	if c.UEFI && (c.FirmwareCode == "" || c.FirmwareVars == "") {
		code, vars, err := Firmware(c.Arch)
		if err != nil {
			return err
		}
		if c.FirmwareCode == "" {
			c.FirmwareCode = code
		}
		if c.FirmwareVars == "" {
			c.FirmwareVars = vars
		}
	}
	for _, p := range []*string{&c.Kernel, &c.Initrd, &c.Disk} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
		*p = abs
	}
	return nil
}

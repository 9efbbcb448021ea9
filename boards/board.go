// Package boards describes every board Kiln builds node images for: CPU architecture,
// kernel package, kernel modules, console, kernel arguments, firmware files, partition
// layout and the image outputs the board supports.
//
// A board is plain data behind the Board interface, so the image builder (build host) and
// init/machined (node) read the same definition. All boards are listed once, explicitly,
// in All.
package boards

import "fmt"

// Arch is a CPU architecture in Go/Debian spelling.
type Arch string

// Architectures Kiln builds for.
const (
	AMD64 Arch = "amd64"
	ARM64 Arch = "arm64"
)

// EFISuffix is the UEFI file name suffix of the architecture: "X64" or "AA64"
// (EFI/BOOT/BOOTX64.EFI, systemd-bootx64.efi, linuxx64.efi.stub).
func (a Arch) EFISuffix() string {
	switch a {
	case AMD64:
		return "X64"
	case ARM64:
		return "AA64"
	}
	return ""
}

// Format is an output the image builder can write.
type Format string

// Output formats.
const (
	FormatKernel Format = "kernel" // kernel + initramfs + cmdline for direct boot (QEMU -kernel, PXE)
	FormatUKI    Format = "uki"    // Unified Kernel Image on the systemd-boot stub
	FormatRaw    Format = "raw"    // partitioned disk image
	FormatQCOW2  Format = "qcow2"  // the raw disk image as qcow2
	FormatISO    Format = "iso"    // UEFI-bootable ISO (El Torito EFI image)
)

// AllFormats lists every format in the order the builder writes them.
var AllFormats = []Format{FormatKernel, FormatUKI, FormatRaw, FormatQCOW2, FormatISO}

// ParseFormat checks that s names a known format.
func ParseFormat(s string) (Format, error) {
	for _, f := range AllFormats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown format %q (known: kernel, uki, raw, qcow2, iso)", s)
}

// BootMethod is how the board's firmware starts the kernel.
type BootMethod string

// Boot methods.
const (
	// BootUEFI: UEFI firmware → systemd-boot → UKI, A/B with boot counting.
	BootUEFI BootMethod = "uefi"
	// BootRPiFirmware: VideoCore firmware reads config.txt → kernel + initramfs + DTB,
	// A/B through tryboot/autoboot.txt.
	BootRPiFirmware BootMethod = "rpi-firmware"
)

// PackageRef names one Debian package of the inputs lock.
type PackageRef struct {
	Name string // e.g. linux-image-6.12.95+deb12-amd64
	Arch string // Debian architecture: amd64, arm64 or all
}

func (p PackageRef) String() string { return p.Name + ":" + p.Arch }

// Kernel says where the board's kernel comes from: Debian's binary package (Package), or
// Debian's source built with the board's configuration (Build).
type Kernel struct {
	// Package is Debian's binary kernel package; empty when Build is set.
	Package PackageRef
	// Release is the kernel release (uname -r), e.g. 6.12.95+deb12-amd64; the package
	// keeps the kernel at boot/vmlinuz-<Release> and the modules under lib/modules/<Release>.
	Release string
	// Build, when set, builds the kernel from Debian's source instead (make kernel).
	Build *KernelBuild
}

// KernelBuild is a kernel built from Debian's source package with Debian's configuration
// and the board's changes to it (images/kernel.Build). The configuration has no modules:
// the board lists none, and the fragment builds in what they would be.
type KernelBuild struct {
	Source PackageRef // linux-source-X.Y: the source tarball with Debian's patches
	Config PackageRef // linux-config-X.Y: Debian's configurations
	// ConfigName is the file in the config package to start from, e.g.
	// config.amd64_none_amd64.xz (the one Debian's linux-image-*-amd64 is built with).
	ConfigName string
	// Fragment holds the board's lines (boards/kernel/<board>.config); every CONFIG_ line
	// must hold after make olddefconfig.
	Fragment string
}

// Modules are kernel module names (as in modinfo name=, dashes or underscores). The
// builder adds every dependency; modules built into the kernel are skipped.
type Modules struct {
	// Initramfs names the modules the initramfs carries (with their dependencies):
	// what mounting the root squashfs needs (loop, squashfs). Every module, these too,
	// is also in the root filesystem.
	Initramfs []string
	// Early modules load first after the switch of root, beside machined's start: the
	// disks' drivers (block, storage buses) when coldplug finds their devices, and the
	// filesystems of the disk layout.
	Early []string
	// Late modules go into the root filesystem and are loaded by modalias or on demand.
	Late []string
}

// FileFromPackage copies one file from a Debian package into an image.
type FileFromPackage struct {
	Package PackageRef
	Src     string // path inside the package's data.tar, without leading "./"
	Dst     string // path inside the target filesystem
}

// Boot describes the boot chain: the files the boot partition holds besides the kernel.
type Boot struct {
	Method BootMethod
	// Bootloader: for UEFI the systemd-boot binary, copied to EFI/BOOT/BOOT<arch>.EFI.
	Bootloader *FileFromPackage
	// Stub: for UEFI the systemd-boot EFI stub the UKI is built on.
	Stub *FileFromPackage
	// Firmware files copied to the boot partition (Raspberry Pi: bootcode.bin, start*.elf,
	// fixup*.dat, DTBs from the kernel package).
	Firmware []FileFromPackage
	// ConfigTxt is the Raspberry Pi config.txt; empty for UEFI boards.
	ConfigTxt string
}

// PartitionTable is the disk's partitioning scheme.
type PartitionTable string

// Partition tables.
const (
	GPT PartitionTable = "gpt"
	MBR PartitionTable = "mbr" // Raspberry Pi: the firmware's tryboot counts MBR partitions
)

// Filesystem of a partition.
type Filesystem string

// Filesystems a partition can carry.
const (
	FAT32       Filesystem = "vfat"
	Ext4        Filesystem = "ext4"
	Unformatted Filesystem = "none" // left zeroed: the node writes it (META records, EPHEMERAL mkfs)
)

// Partition labels shared by the builder and machined.
const (
	LabelEFI       = "EFI"
	LabelBoot      = "BOOT" // Raspberry Pi firmware partition (A), BOOT-B for slot B
	LabelMeta      = "META"
	LabelState     = "STATE"
	LabelEphemeral = "EPHEMERAL"
)

// Partition is one partition of the board's disk layout, in on-disk order.
type Partition struct {
	Label string
	// Size in bytes; multiple of 1 MiB. EPHEMERAL's size is the image's initial size:
	// the node grows it to fill the disk on first boot.
	Size       int64
	Filesystem Filesystem
	// MBRNumber is the partition's number in an MBR table (1-based), 0 on GPT.
	MBRNumber int
}

// Layout is the disk layout of the board.
type Layout struct {
	Table      PartitionTable
	Partitions []Partition
}

// MiB is 1<<20 bytes.
const MiB = int64(1) << 20

// Board is one kind of machine Kiln images boot on.
type Board interface {
	Name() string
	Arch() Arch
	Kernel() Kernel
	Modules() Modules
	// Console is the serial console device with options, e.g. "ttyS0,115200".
	Console() string
	// KernelArgs are the kernel command line arguments besides console=.
	KernelArgs() []string
	Boot() Boot
	Layout() Layout
	// Outputs are the formats the board supports.
	Outputs() []Format
}

// Cmdline is the kernel command line of the board: console first, then its arguments.
func Cmdline(b Board) string {
	s := "console=" + b.Console()
	for _, a := range b.KernelArgs() {
		s += " " + a
	}
	return s
}

// Packages lists every input package the board needs, without duplicates, in a stable order.
func Packages(b Board) []PackageRef {
	var out []PackageRef
	seen := map[PackageRef]bool{}
	add := func(p PackageRef) {
		if p.Name != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	k := b.Kernel()
	add(k.Package)
	if k.Build != nil {
		add(k.Build.Source)
		add(k.Build.Config)
	}
	boot := b.Boot()
	if boot.Bootloader != nil {
		add(boot.Bootloader.Package)
	}
	if boot.Stub != nil {
		add(boot.Stub.Package)
	}
	for _, f := range boot.Firmware {
		add(f.Package)
	}
	add(CACertificates)
	return out
}

// CACertificates is the package the root filesystem takes its CA bundle from.
var CACertificates = PackageRef{Name: "ca-certificates", Arch: "all"}

// Supports reports whether the board supports the format.
func Supports(b Board, f Format) bool {
	for _, o := range b.Outputs() {
		if o == f {
			return true
		}
	}
	return false
}

// EFI partition sizing. A UKI holds the kernel, the initramfs and the root squashfs, so
// its size depends on what the image carries (about 17 MB bare, about 100 MB with the
// Kubernetes components); the EFI partition holds two of them (slots A and B).
const (
	// EFIHeadroomDiv: each slot gets room for a UKI a quarter larger than this build's,
	// so an update to a somewhat bigger release still fits beside the running one.
	EFIHeadroomDiv = 4
	// EFIOverhead covers the FAT tables, directories and cluster rounding.
	EFIOverhead = 4 * MiB
	// EFIAlign is the step the partition grows by.
	EFIAlign = 16 * MiB
)

// EFISize is the EFI partition size for UKIs of ukiSize bytes plus other bytes of files
// (bootloader, loader.conf) on a board whose layout asks for min: min when two UKIs with
// headroom fit in it, otherwise the size they need rounded up to EFIAlign. Images whose
// UKIs fit the board's size keep exactly the board's layout.
func EFISize(min, ukiSize, other int64) int64 {
	need := 2*(ukiSize+ukiSize/EFIHeadroomDiv) + other + EFIOverhead
	if need <= min {
		return min
	}
	return (need + EFIAlign - 1) / EFIAlign * EFIAlign
}

// WithEFISize returns a copy of l with the EFI partition's size set to size.
func (l Layout) WithEFISize(size int64) Layout {
	out := Layout{Table: l.Table, Partitions: append([]Partition(nil), l.Partitions...)}
	for i := range out.Partitions {
		if out.Partitions[i].Label == LabelEFI {
			out.Partitions[i].Size = size
		}
	}
	return out
}

// PartitionSize is the size of the partition labelled label, 0 if l has none.
func (l Layout) PartitionSize(label string) int64 {
	for _, p := range l.Partitions {
		if p.Label == label {
			return p.Size
		}
	}
	return 0
}

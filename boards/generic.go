package boards

import _ "embed"

// generic is a UEFI VM or PC board that boots systemd-boot and a UKI from a GPT disk.
type generic struct {
	name    string
	arch    Arch
	release string
	console string
	// kernelConfig, when set, is the board's fragment: the kernel is built from Debian's
	// source (Kernel.Build) instead of taken from Debian's binary package.
	kernelConfig string
}

// genericAMD64Config: Kiln's changes to Debian's amd64 configuration. The boot path's
// drivers (and the rest of genericEarly and genericLate) are built in, and modules are off.
//
//go:embed kernel/generic-amd64.config
var genericAMD64Config string

// genericInitramfs: the initramfs holds the root squashfs image, which init mounts
// through a loop device before anything else loads.
var genericInitramfs = []string{"loop", "squashfs"}

// Early modules: block and storage drivers, the root squashfs, the filesystems of the
// disk layout (nls_cp437 and nls_ascii: Debian's FAT default codepage and iocharset,
// which a vfat mount loads and nothing else Kiln mounts asks for another;
// crc32c_generic: ext4 asks the crypto API for it at mount time, which no dependency
// records). virtio, virtio_pci,
// devtmpfs and serial are built in. Init loads a driver (a module with bus aliases:
// ahci, nvme, usb_storage, …) only when coldplug finds its device, so a long list costs
// a VM nothing; the others (filesystems) load every boot, beside machined's start and
// before its first mounts, so keep them to what those mounts need.
var genericEarly = []string{
	"virtio_blk", "virtio_scsi", "nvme", "ahci", "sd_mod", "sr_mod", "mmc_block", "sdhci_pci",
	"usb_storage", "uas", "xhci_pci", "loop", "squashfs", "vfat", "nls_cp437",
	"nls_ascii", "crc32c_generic", "ext4",
}

// Late modules: networking, netfilter, bridging and tunnels for the pod network and
// the service proxy, overlay (containerd's snapshots) and dm-verity. Init loads them
// after the switch of root, beside machined's start.
var genericLate = []string{
	"virtio_net", "e1000", "e1000e", "bridge", "br_netfilter", "veth", "vxlan", "nf_conntrack",
	"nf_nat", "xt_conntrack", "xt_MASQUERADE", "iptable_nat", "iptable_filter", "ip6table_filter",
	"ip6table_nat", "sch_fq_codel", "tun", "wireguard", "dummy", "virtio_rng", "efivarfs", "overlay", "dm_verity",
}

func (g generic) Name() string { return g.name }
func (g generic) Arch() Arch   { return g.arch }

func (g generic) Kernel() Kernel {
	if g.kernelConfig != "" {
		return Kernel{
			Release: g.release,
			Build: &KernelBuild{
				Source:     PackageRef{Name: "linux-source-6.12", Arch: "all"},
				Config:     PackageRef{Name: "linux-config-6.12", Arch: string(g.arch)},
				ConfigName: "config." + string(g.arch) + "_none_" + string(g.arch) + ".xz",
				Fragment:   g.kernelConfig,
			},
		}
	}
	return Kernel{
		Package: PackageRef{Name: "linux-image-" + g.release, Arch: string(g.arch)},
		Release: g.release,
	}
}

// Modules: none for a kernel built by Kiln (its fragment builds them in).
func (g generic) Modules() Modules {
	if g.kernelConfig != "" {
		return Modules{}
	}
	return Modules{Initramfs: genericInitramfs, Early: genericEarly, Late: genericLate}
}
func (g generic) Console() string { return g.console }

// KernelArgs: besides the hardening, no default bond0 or dummy0. The bonding and
// dummy drivers (built in on amd64, dummy a late module on arm64) make one device each
// when they start unless told not to; a node gets the links its configuration names
// and no others, and a configured bond0 is Kiln's to make in the configured mode (an
// unmarked bond0 of the kernel's default mode would not match it and stay as it was).
// init passes the module parameters to a module it loads, as modprobe would.
func (g generic) KernelArgs() []string {
	args := []string{"quiet", "panic=-1", "init_on_alloc=1", "slab_nomerge", "bonding.max_bonds=0", "dummy.numdummies=0"}
	if g.arch == AMD64 {
		args = append(args, "pti=on")
	}
	return args
}

func (g generic) Boot() Boot {
	sdboot := PackageRef{Name: "systemd-boot-efi", Arch: string(g.arch)}
	suf := g.arch.EFISuffix()
	lower := map[Arch]string{AMD64: "x64", ARM64: "aa64"}[g.arch]
	return Boot{
		Method: BootUEFI,
		Bootloader: &FileFromPackage{
			Package: sdboot,
			Src:     "usr/lib/systemd/boot/efi/systemd-boot" + lower + ".efi",
			Dst:     "EFI/BOOT/BOOT" + suf + ".EFI",
		},
		Stub: &FileFromPackage{
			Package: sdboot,
			Src:     "usr/lib/systemd/boot/efi/linux" + lower + ".efi.stub",
		},
	}
}

func (g generic) Layout() Layout {
	return Layout{
		Table: GPT,
		Partitions: []Partition{
			// At least this: two UKIs (A and B) of up to ~100 MB each with a quarter of
			// headroom, plus systemd-boot. The builder grows it for bigger UKIs (EFISize).
			{Label: LabelEFI, Size: 256 * MiB, Filesystem: FAT32},
			{Label: LabelMeta, Size: 1 * MiB, Filesystem: Unformatted},
			{Label: LabelState, Size: 100 * MiB, Filesystem: FAT32},
			// ext4 made at build time (a node has no mkfs); machined grows it to the disk.
			{Label: LabelEphemeral, Size: 64 * MiB, Filesystem: Ext4},
		},
	}
}

func (g generic) Outputs() []Format { return AllFormats }

// GenericAMD64 is an x86_64 UEFI VM or PC.
func GenericAMD64() Board {
	return generic{name: "generic-amd64", arch: AMD64, release: "6.12.95+kiln-amd64", console: "ttyS0,115200",
		kernelConfig: genericAMD64Config}
}

// GenericARM64 is an arm64 UEFI VM (QEMU virt, cloud) or server.
func GenericARM64() Board {
	return generic{name: "generic-arm64", arch: ARM64, release: "6.12.95+deb12-arm64", console: "ttyAMA0,115200"}
}

package modules

import (
	"strings"
)

// DeviceBound reports whether a module drives devices of a bus: it has at least one
// alias naming a bus modalias ("pci:…", "virtio:…", "usb:…", "acpi*:…", "of:…",
// "platform:…", "scsi:…", "mmc:…", …). Such a module is loaded only when coldplug finds
// a device for it. Aliases without a colon (fs-ext4, crypto-crc32c, block-major-7-*,
// rtnl-link-*) and devname: aliases are requests by name, not devices.
func DeviceBound(mod Module) bool {
	for _, a := range mod.Aliases {
		bus, _, ok := strings.Cut(a, ":")
		if ok && bus != "devname" {
			return true
		}
	}
	return false
}

// Unconditional returns the modules of a stage that are loaded whatever the hardware,
// with their dependencies, in load order: the stage's modules that are not device-bound
// and that no other module of the stage depends on (filesystems, loop, crc32c_generic),
// plus what they need. Device-bound modules and the helpers only they use (scsi_mod,
// libata, mmc_core) are left to coldplug.
func (m *Manifest) Unconditional(stage string) []Module {
	mods := m.Stage(stage)
	needed := map[string]bool{}
	for _, mod := range mods {
		for _, d := range mod.Depends {
			needed[d] = true
		}
	}
	var roots []string
	for _, mod := range mods {
		if !needed[mod.Name] && !DeviceBound(mod) {
			roots = append(roots, mod.Name)
		}
	}
	// Every root is a manifest module and a missing dependency counts as built in, so
	// WithDeps cannot fail here.
	out, _ := m.WithDeps(roots...)
	return out
}

// Providers returns the modules with an alias matching name (e.g. "fs-squashfs",
// "devname:loop-control"), in manifest order: what the kernel's request_module(name)
// would load.
func (m *Manifest) Providers(name string) []string {
	var out []string
	for _, mod := range m.Modules {
		for _, a := range mod.Aliases {
			if Glob(a, name) {
				out = append(out, mod.Name)
				break
			}
		}
	}
	return out
}

// FATModules returns the names of the modules in mods that are the FAT filesystem or
// its code pages (under kernel/fs/fat and kernel/fs/nls), in the order of mods. STATE
// and the EFI partition are FAT on every board, so a node reaches its configuration as
// soon as these are in, before the larger filesystems (ext4) the rest of its disk
// needs. Load them with Set.Load, which adds what they depend on.
func FATModules(mods []Module) []string {
	var out []string
	for _, mod := range mods {
		if strings.Contains(mod.Path, "/fs/fat/") || strings.Contains(mod.Path, "/fs/nls/") {
			out = append(out, mod.Name)
		}
	}
	return out
}

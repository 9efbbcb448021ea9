// Package handoff holds what Kiln's init and machined agree on at run time: paths init
// creates for machined to read, and how a machined that init started before the root
// mount enters the root (EnterRoot, its only code). It needs nothing but x/sys, so
// machined can import it without pulling in init.
//
// Init's boot phase loads, beside machined's start, what a node needs to be reachable:
// the FAT filesystem of STATE with the hardware random number drivers (FATLoaded), and
// the drivers of the network devices present (NetworkDriversLoaded), beside the
// drivers of every device coldplug finds (DriversLoaded). A child of init then loads
// the rest of the board's early filesystems, ext4 for EPHEMERAL (FilesystemsLoaded),
// and the board's late modules (ModulesLoaded). Each mark is an empty file. FilesystemsLoaded
// implies FATLoaded, and ModulesLoaded implies every other mark.
//
// Init starts machined before it has made /etc writable and mounted the tmpfs on /var,
// and makes every mark after that: machined writes to /etc and /var only after it has
// seen a mark.
package handoff

// FATLoaded is created once the FAT filesystem and its code pages (vfat, nls_*) and
// the hardware random number drivers are loaded or have failed. machined waits for it
// before it mounts STATE (FAT on every board) and makes its keys.
const FATLoaded = "/run/kiln/fat-loaded"

// FilesystemsLoaded is created once every filesystem module of the board's early list
// (ext4 and what it needs, besides FAT) is loaded or has failed. machined waits for it
// before it mounts EPHEMERAL, and before STATE when STATE is not FAT.
const FilesystemsLoaded = "/run/kiln/filesystems-loaded"

// NetworkDriversLoaded is created once the drivers of the network devices present when
// init's driver loading started are loaded or have failed (modules under
// kernel/drivers/net matched by coldplug's first scan). machined waits for it before it
// lists the links it names the node after and brings up. A NIC found later (behind a
// USB hub that enumerates late) appears as a link when its driver loads.
const NetworkDriversLoaded = "/run/kiln/network-drivers-loaded"

// DriversLoaded is created (empty) by init once every device driver that coldplug found
// is loaded or has failed. Until it exists, a disk may still be appearing: machined
// waits for the system disk until then (a live ISO has none).
const DriversLoaded = "/run/kiln/drivers-loaded"

// ModulesLoaded is created (empty) by init once the board's late modules (bridge,
// netfilter, overlay, bonding, …) are loaded or have failed, after DriversLoaded.
// machined waits for it before it applies a stored configuration, which may ask for
// links or filesystems those modules provide; maintenance mode does not wait.
const ModulesLoaded = "/run/kiln/modules-loaded"

// Init starts machined from the initramfs, before it mounts the root filesystem, so
// that machined's start (the longest step of a boot under emulation) overlaps the
// mount. That machined finds EarlyEnv set to "1" and two descriptors: EarlyProcFD is
// /proc/1, opened before the switch of root, and EarlyReadyFD is a pipe on which init
// writes one byte once it has switched root. machined waits for the byte and then
// enters init's root through /proc/1/root, before it touches any file. A machined
// that init restarts later runs from the root (kiln.machined), without EarlyEnv.
const (
	EarlyEnv     = "KILN_EARLY_START"
	EarlyProcFD  = 3
	EarlyReadyFD = 4
)

// Package boot holds init's steps from the initramfs to the real root: early mounts,
// kernel settings, the console banner and kmsg logging, the loop-mounted squashfs root,
// writable tmpfs directories, the switch of root, and unmounting everything in reverse
// order on the way down. Each file is one concern; init's main calls them in order.
package boot

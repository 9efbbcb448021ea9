// Package disk writes partitioned disk images with go-diskfs, layered as go-diskfs is:
// a file backend, a GPT partition table from the board's layout, FAT32 filesystems filled
// from fstree trees. Partition and disk GUIDs derive from a seed, and FAT timestamps and
// serials from the build epoch, so the same inputs give the same bytes.
package disk

// Package platform is machined's node-only Linux layer: it finds the system disk by its
// GPT partition labels (EFI, META, STATE, EPHEMERAL), mounts STATE and EPHEMERAL, grows
// EPHEMERAL and its ext4 filesystem online to fill the disk (GPT rewrite, BLKPG,
// EXT4_IOC_RESIZE_FS), sets the kernel hostname, and reads /proc for the API's views of
// mounts and listening sockets. It needs Linux and, for most calls, root; nothing here
// belongs in the pure packages kctl builds on.
package platform

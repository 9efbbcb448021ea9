// Package qemu starts Kiln nodes (or any kernel) in QEMU for tests, benchmarks and
// `kctl cluster create`: TCG by default (KVM only after a successful probe boot),
// x86_64 (-M q35) and arm64 (-M virt), direct kernel boot or UEFI disk boot, user
// networking with the machine API port forwarded to a free loopback port, the disk as a
// qcow2 copy-on-write overlay so a run never changes the built image, and the serial
// console written to a log file and watched line by line (Expect), with a fast failure on
// a kernel panic and a deadline per boot.
package qemu

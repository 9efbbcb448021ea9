// Package build assembles node images for a board: it verifies the pinned inputs, takes
// the kernel and modules out of their package, writes the root squashfs (with the
// upstream components of Options.Components, see package components) and the
// initramfs, wraps them into a UKI, sizes the EFI partition for two such UKIs, and writes
// the requested outputs (kernel, uki, raw, qcow2, iso) into a temporary directory that is
// renamed into place only when every output succeeded.
//
// The pipeline shows in the file names: options.go → binaries.go → trees.go → build.go.
package build

// Package provision brings up and tears down local Kiln clusters for `kctl cluster
// create|destroy` and the end-to-end tests. The QEMU provisioner boots one node from a
// built image (UEFI disk boot, or direct kernel boot with the image's kernel and
// initramfs), daemonised so it outlives kctl, with the machine API forwarded to a free
// loopback port and the disk behind a copy-on-write overlay; it waits for the node's
// readiness line on the serial console, applies a generated machine config in
// maintenance mode, waits until the API answers over mTLS with the new identity and
// writes a kctl context for 127.0.0.1:PORT.
//
// Everything a cluster owns lives in one directory, <state>/<name> (default
// ~/.kctl/clusters/<name>): cluster.json (what Destroy needs), the QEMU pidfile, the
// serial log, the disk overlay, the UEFI variables, the secrets bundle and the applied
// machine config. The QEMU provisioner runs on Linux; elsewhere Create says so.
package provision

// Package e2e holds Kiln's QEMU end-to-end tests (test layer 3): TestMain builds a
// node image once from the real init and machined, then each test boots it in QEMU
// (TCG) and drives the node with the real kctl binary and, for the views kctl does not
// print, the Go client: maintenance mode and apply-config over UEFI boot, reboot with
// the config, host name and EPHEMERAL growth kept, shutdown, a machined crash that init
// recovers from, a read-only root with nothing listening but the API, power loss during
// apply-config, and `kctl cluster create|destroy`.
//
// They run only with -e2e, so that go test ./... stays fast, and skip with a reason when
// QEMU, qemu-img, OVMF, mksquashfs or the pinned inputs in _out/cache are missing. They
// need far more than go test's default 10 minute timeout:
//
//	go test -count=1 -timeout 40m ./tools/e2e/... -e2e
//
// Serial logs of failed tests are kept as test artifacts (go test -artifacts).
package e2e

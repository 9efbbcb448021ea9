// Package handoff holds what Kiln's init and machined agree on at run time: paths init
// creates for machined to read. It has no code, so machined can import it without
// pulling in init.
package handoff

// DriversLoaded is created (empty) by init once every device driver that coldplug found
// is loaded or has failed. Until it exists, a disk may still be appearing: machined
// waits for the system disk until then (a live ISO has none).
const DriversLoaded = "/run/kiln/drivers-loaded"

// ModulesLoaded is created (empty) by init once the board's late modules (bridge,
// netfilter, overlay, bonding, …) are loaded or have failed, after DriversLoaded.
// machined waits for it before it applies a stored configuration, which may ask for
// links or filesystems those modules provide; maintenance mode does not wait.
const ModulesLoaded = "/run/kiln/modules-loaded"

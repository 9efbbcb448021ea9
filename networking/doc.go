// Package networking makes a Kiln node's host network what its machine config
// says and keeps it so, on every boot and every live apply.
//
// The static part is a pipeline, a file per stage: spec.go (machine config →
// Spec), link_spec.go (Spec resolved against the node's links: selection by
// name, MAC address or driver; VLAN names; bond members → LinkSpecs),
// links_kernel.go, routes_kernel.go and addresses_kernel.go (the kernel made to
// match, writing only differences), status.go (what the kernel has, read
// back). All netlink goes through the Kernel interface (kernel.go), so a
// counting wrapper proves that a second pass writes nothing.
//
// Ownership: Kiln removes only what it made. Routes carry RouteProtocol, VLANs
// and bonds the LinkAlias marker (set right after creation: the kernel ignores
// an alias in RTM_NEWLINK), so both survive a restart of machined;
// addresses are remembered by the Reconciler (a restart re-adopts those the
// config still names). Links, addresses and routes the config does not name
// are left alone.
//
// Controller adds the dynamic part: DHCPv4 runners (dhcp), which release their
// leases when a link leaves DHCP or the Controller closes, and never remove or
// overwrite an address or route the Spec claims (claims.go: a link switched
// from DHCP to static keeps the leased address it is reached through; the
// runners stop before the static Spec is reconciled, and promote_secondaries
// is on, so a primary address that goes never takes its secondaries along); IPv6 from the
// network for links with DHCP6 (ipv6.go: the kernel's SLAAC and RA default
// route via accept_ra/autoconf, plus a DHCPv6 runner); resolv.conf, /etc/hosts
// and /etc/hostname (resolv; names.go chooses config, else DHCP, else the
// MAC-derived name); and the leases as status (leases.go). Time sync lives in
// timesync.
package networking

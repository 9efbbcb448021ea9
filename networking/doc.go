// Package networking brings a Kiln node onto the network: loopback up, then either
// the interfaces the machine config names (static addresses, routes, MTU, DHCP where
// asked) or, with none named, DHCPv4 on the first link that has a carrier; DHCP
// leases are renewed in the background and /etc/resolv.conf follows the config's
// nameservers or those learnt by DHCP.
//
// It is deliberately small: enough for a node to be reachable. The layers below are
// the places to grow it (the host-network issue): link (netlink operations on links,
// addresses and routes), dhcp (the DHCPv4 client loop), resolv (resolv.conf).
// Controller converges a Spec: applying the same Spec twice changes nothing, and what
// an earlier Spec configured but the new one does not is removed.
package networking

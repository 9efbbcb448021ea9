package networking

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/kiln-os/kiln/networking/dhcp"
)

// LeaseStatus is a DHCPv4 or DHCPv6 lease the node holds, with its options:
// the status of the dynamic part.
type LeaseStatus struct {
	Link   string
	Family string // "ipv4" or "ipv6"
	// Addr is the leased address with the subnet's length (IPv4) or /128 (IPv6).
	Addr     netip.Prefix
	Gateway  netip.Addr // IPv4: the router option; invalid when none
	Routes   []LeaseRoute
	DNS      []netip.Addr
	Domain   string
	Search   []string
	Hostname string
	MTU      int
	// Server is the server's address (IPv4) or DUID in hex (IPv6).
	Server                  string
	Obtained, Renew, Rebind time.Time
	Expires                 time.Time
}

// LeaseRoute is a route a lease asks for (option 121, or the router).
type LeaseRoute struct {
	Dst     netip.Prefix
	Gateway netip.Addr // invalid: on-link
}

// FromLease is the status of a DHCPv4 lease on a link.
func FromLease(name string, l *dhcp.Lease) LeaseStatus {
	st := LeaseStatus{
		Link: name, Family: "ipv4", Addr: l.Addr, Gateway: l.Router,
		DNS: slices.Clone(l.DNS), Domain: l.Domain, Search: slices.Clone(l.Search),
		Hostname: l.Hostname, MTU: l.MTU,
		Obtained: l.Acquired, Renew: l.Acquired.Add(l.T1), Rebind: l.Acquired.Add(l.T2), Expires: l.Expires(),
	}
	if l.ServerID.IsValid() {
		st.Server = l.ServerID.String()
	}
	for _, r := range leaseRoutes(l) {
		st.Routes = append(st.Routes, LeaseRoute{Dst: r.Dst, Gateway: r.Gateway})
	}
	return st
}

// FromLease6 is the status of a DHCPv6 lease on a link.
func FromLease6(name string, l *dhcp.Lease6) LeaseStatus {
	return LeaseStatus{
		Link: name, Family: "ipv6", Addr: netip.PrefixFrom(l.Addr, 128),
		DNS: slices.Clone(l.DNS), Search: slices.Clone(l.Search), Server: l.ServerID,
		Obtained: l.Acquired, Renew: l.Acquired.Add(l.T1), Rebind: l.Acquired.Add(l.T2), Expires: l.Expires(),
	}
}

// LeaseStatus lists the leases held, by link name, IPv4 first.
func (c *Controller) LeaseStatus() []LeaseStatus {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	var out []LeaseStatus
	for n, l := range c.leases {
		out = append(out, FromLease(n, l))
	}
	for n, l := range c.leases6 {
		out = append(out, FromLease6(n, l))
	}
	slices.SortFunc(out, func(a, b LeaseStatus) int {
		if c := strings.Compare(a.Link, b.Link); c != 0 {
			return c
		}
		return strings.Compare(a.Family, b.Family)
	})
	return out
}

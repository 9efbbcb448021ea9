package networking

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkStatus is a link as the kernel reports it: the status stage.
type LinkStatus struct {
	Name         string
	Index        int
	Type         string // netlink's kind: "device", "veth", "vlan", "bond", ...
	HardwareAddr string
	MTU          int
	Up           bool // administratively
	Carrier      bool
	Master       string // the bond or bridge it belongs to
	Managed      bool   // created by Kiln
}

// AddressStatus is an address on a link.
type AddressStatus struct {
	Link    string
	Prefix  netip.Prefix
	Scope   string // "global", "link", "host"
	Source  string // SourceConfig, SourceDHCP, "" (not Kiln's)
	Dynamic bool   // has a finite lifetime
}

// RouteStatus is a main-table route.
type RouteStatus struct {
	Link     string
	Dst      netip.Prefix
	Gateway  netip.Addr
	Source   netip.Addr
	Metric   uint32
	Protocol string // "kernel", "boot", "static", "dhcp", "kiln" or a number
	Scope    string
}

// Status is the host network as the kernel has it.
type Status struct {
	Links     []LinkStatus
	Addresses []AddressStatus
	Routes    []RouteStatus
}

// ReadStatus reads links, addresses and routes through k. owner names the
// source of an address ("" when Kiln did not put it there); nil marks none.
func ReadStatus(k Kernel, owner func(link string, p netip.Prefix) string) (Status, error) {
	var s Status
	ls, err := k.LinkList()
	if err != nil {
		return s, err
	}
	slices.SortFunc(ls, func(a, b netlink.Link) int { return a.Attrs().Index - b.Attrs().Index })
	names := map[int]string{}
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range ls {
		a := l.Attrs()
		st := LinkStatus{
			Name: a.Name, Index: a.Index, Type: l.Type(), MTU: a.MTU,
			Up:      a.Flags&net.FlagUp != 0,
			Carrier: a.OperState == netlink.OperUp || a.RawFlags&unix.IFF_LOWER_UP != 0,
			Master:  names[a.MasterIndex],
			Managed: managedLink(l),
		}
		if len(a.HardwareAddr) > 0 {
			st.HardwareAddr = a.HardwareAddr.String()
		}
		s.Links = append(s.Links, st)
		as, err := k.AddrList(l)
		if err != nil {
			return s, err
		}
		for _, ad := range as {
			p, ok := fromIPNet(ad.IPNet)
			if !ok {
				continue
			}
			st := AddressStatus{Link: a.Name, Prefix: p, Scope: scopeName(netlink.Scope(ad.Scope)),
				Dynamic: dynamicAddr(ad)}
			if owner != nil {
				st.Source = owner(a.Name, p)
			}
			s.Addresses = append(s.Addresses, st)
		}
	}
	rs, err := k.RouteList()
	if err != nil {
		return s, err
	}
	for _, r := range rs {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		key := keyOf(r)
		s.Routes = append(s.Routes, RouteStatus{
			Link: names[r.LinkIndex], Dst: key.dst, Gateway: key.gateway, Source: key.source,
			Metric: key.metric, Protocol: protocolName(r.Protocol), Scope: scopeName(r.Scope),
		})
	}
	return s, nil
}

func scopeName(s netlink.Scope) string {
	switch s {
	case netlink.SCOPE_UNIVERSE:
		return "global"
	case netlink.SCOPE_LINK:
		return "link"
	case netlink.SCOPE_HOST:
		return "host"
	case netlink.SCOPE_SITE:
		return "site"
	}
	return strings.ToLower(s.String())
}

func protocolName(p netlink.RouteProtocol) string {
	if p == RouteProtocol {
		return "kiln"
	}
	return p.String()
}

// Status reads the host network; addresses are attributed to the config or
// to DHCP when the Controller put them there.
func (c *Controller) Status() (Status, error) {
	c.mu.Lock()
	owned := map[string][]netip.Prefix{}
	for l, ps := range c.rec.owned {
		owned[l] = slices.Clone(ps)
	}
	c.mu.Unlock()
	leased := map[string][]netip.Prefix{}
	for _, l := range c.LeaseStatus() {
		leased[l.Link] = append(leased[l.Link], l.Addr)
	}
	return ReadStatus(c.k, func(link string, p netip.Prefix) string {
		if slices.Contains(owned[link], p) {
			return SourceConfig
		}
		if slices.Contains(leased[link], p) {
			return SourceDHCP
		}
		return ""
	})
}

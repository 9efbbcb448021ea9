// Package link is the netlink layer of host networking: it lists links, brings them
// up, waits for a carrier, and adds, replaces and removes addresses and routes. It acts
// on the network namespace of the calling process.
package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// carrierPoll is how often WaitCarrier looks at the links.
const carrierPoll = 50 * time.Millisecond

// Link is a network interface.
type Link struct {
	Name         string
	Index        int
	HardwareAddr net.HardwareAddr
	Type         string // netlink's type: "device", "veth", "bridge", ...
	Up           bool   // administratively up
	Carrier      bool   // the lower layer is up (cable, peer)
	Loopback     bool
}

func fromNetlink(l netlink.Link) Link {
	a := l.Attrs()
	return Link{
		Name:         a.Name,
		Index:        a.Index,
		HardwareAddr: a.HardwareAddr,
		Type:         l.Type(),
		Up:           a.Flags&net.FlagUp != 0,
		Carrier:      a.OperState == netlink.OperUp || a.RawFlags&unix.IFF_LOWER_UP != 0,
		Loopback:     a.Flags&net.FlagLoopback != 0,
	}
}

// List returns the links in index order.
func List() ([]Link, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		out = append(out, fromNetlink(l))
	}
	slices.SortFunc(out, func(a, b Link) int { return a.Index - b.Index })
	return out, nil
}

// ByName returns one link.
func ByName(name string) (Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return Link{}, fmt.Errorf("link %s: %w", name, err)
	}
	return fromNetlink(l), nil
}

// ByHardwareAddr returns the link with the given MAC address.
func ByHardwareAddr(mac net.HardwareAddr) (Link, error) {
	ls, err := List()
	if err != nil {
		return Link{}, err
	}
	for _, l := range ls {
		if !l.Loopback && slices.Equal(l.HardwareAddr, mac) {
			return l, nil
		}
	}
	return Link{}, fmt.Errorf("no link has hardware address %s", mac)
}

// Physical reports whether a link is a NIC worth running DHCP on by default: not
// loopback, with an Ethernet address, and not a virtual device that Kiln or
// Kubernetes creates (bridges, VXLAN, tunnels).
func (l Link) Physical() bool {
	if l.Loopback || len(l.HardwareAddr) != 6 {
		return false
	}
	switch l.Type {
	case "device", "veth", "": // veth: a container or a test's namespace
		return true
	}
	return false
}

// SetUp brings a link up.
func SetUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// SetMTU sets a link's MTU when it differs.
func SetMTU(name string, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if l.Attrs().MTU == mtu {
		return nil
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU of %s to %d: %w", name, mtu, err)
	}
	return nil
}

// WaitCarrier brings every physical link up and waits until one has a carrier; it
// returns the one with the lowest index among those that have.
func WaitCarrier(ctx context.Context) (Link, error) {
	upped := map[string]bool{}
	for {
		ls, err := List()
		if err != nil {
			return Link{}, err
		}
		// A link reports its carrier as soon as it is up (IFF_LOWER_UP): after
		// bringing links up, look again at once instead of after a poll.
		again := false
		for _, l := range ls {
			if !l.Physical() {
				continue
			}
			if l.Carrier && l.Up {
				return l, nil
			}
			if !l.Up && !upped[l.Name] {
				upped[l.Name] = true
				if err := SetUp(l.Name); err != nil {
					return Link{}, err
				}
				again = true
			}
		}
		if again {
			continue
		}
		select {
		case <-ctx.Done():
			return Link{}, fmt.Errorf("no network link has a carrier: %w", context.Cause(ctx))
		case <-time.After(carrierPoll):
		}
	}
}

// Addr is an address on a link. Lifetimes of zero mean forever.
type Addr struct {
	Prefix    netip.Prefix
	Valid     time.Duration
	Preferred time.Duration
}

// ToIPNet converts a prefix to netlink's form.
func ToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// FromIPNet converts netlink's form to a prefix; nil is not one.
func FromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// ReplaceAddr adds an address to a link or updates its lifetimes.
func ReplaceAddr(name string, a Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	na := &netlink.Addr{IPNet: ToIPNet(a.Prefix)}
	if a.Valid > 0 {
		na.ValidLft = int(a.Valid / time.Second)
		na.PreferedLft = int(a.Preferred / time.Second)
		if na.PreferedLft == 0 {
			na.PreferedLft = na.ValidLft
		}
	}
	if err := netlink.AddrReplace(l, na); err != nil {
		return fmt.Errorf("add %s to %s: %w", a.Prefix, name, err)
	}
	return nil
}

// DelAddr removes an address from a link; a missing address or link is no error.
func DelAddr(name string, p netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: ToIPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from %s: %w", p, name, err)
	}
	return nil
}

// Addrs returns the addresses of a link (every link when name is empty), IPv4 and IPv6.
func Addrs(name string) ([]netip.Prefix, error) {
	var l netlink.Link
	if name != "" {
		var err error
		if l, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("link %s: %w", name, err)
		}
	}
	as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range as {
		if p, ok := FromIPNet(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// Route is a route through a link. A zero Gateway is an on-link route.
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Source  netip.Addr
	Metric  uint32
}

func (r Route) netlink(index int) *netlink.Route {
	nr := &netlink.Route{LinkIndex: index, Dst: ToIPNet(r.Dst), Priority: int(r.Metric)}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.Source.IsValid() {
		nr.Src = r.Source.AsSlice()
	}
	return nr
}

// ReplaceRoute adds a route through a link or replaces the route to the same
// destination with the same metric.
func ReplaceRoute(name string, r Route) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.RouteReplace(r.netlink(l.Attrs().Index)); err != nil {
		return fmt.Errorf("route %s via %s on %s: %w", r.Dst, r.Gateway, name, err)
	}
	return nil
}

// DelRoute removes a route; a missing route or link is no error.
func DelRoute(name string, r Route) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.RouteDel(r.netlink(l.Attrs().Index)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove route %s on %s: %w", r.Dst, name, err)
	}
	return nil
}

// Routes returns the main-table routes through a link.
func Routes(name string) ([]Route, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	rs, err := netlink.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", name, err)
	}
	var out []Route
	for _, r := range rs {
		var rt Route
		if p, ok := FromIPNet(r.Dst); ok {
			rt.Dst = p
		} else if r.Family == netlink.FAMILY_V6 {
			rt.Dst = netip.MustParsePrefix("::/0")
		} else {
			rt.Dst = netip.MustParsePrefix("0.0.0.0/0")
		}
		if a, ok := netip.AddrFromSlice(r.Gw); ok {
			rt.Gateway = a.Unmap()
		}
		if a, ok := netip.AddrFromSlice(r.Src); ok {
			rt.Source = a.Unmap()
		}
		rt.Metric = uint32(r.Priority)
		out = append(out, rt)
	}
	return out, nil
}

package networking

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/kiln-os/kiln/machined/config"
)

// Spec is the host network a node should have: the config stage of the
// pipeline (config → Spec → LinkSpecs against the kernel → kernel → Status).
type Spec struct {
	// Interfaces to configure. None: DHCP on the first link with a carrier.
	Interfaces []Interface
	// Nameservers for resolv.conf; none: those learnt by DHCP.
	Nameservers []netip.Addr
	// Hostname from the config; empty: from DHCP, else FallbackHostname.
	Hostname string
	// ExtraHosts are extra /etc/hosts entries.
	ExtraHosts []Host
}

// Host is an /etc/hosts entry.
type Host struct {
	IP      netip.Addr
	Aliases []string
}

// Interface configures one link, named or selected by its MAC address or
// driver; with Bond it is a bond Kiln creates.
type Interface struct {
	Name         string
	HardwareAddr net.HardwareAddr
	Driver       string
	Down         bool
	DHCP         bool
	// DHCP6: accept Router Advertisements (SLAAC) and run DHCPv6.
	DHCP6     bool
	Addresses []netip.Prefix
	Routes    []Route
	MTU       int
	VLANs     []VLAN
	Bond      *Bond
}

// VLAN is an 802.1Q link on top of an Interface, named parent.ID.
type VLAN struct {
	ID        int
	DHCP      bool
	DHCP6     bool
	Addresses []netip.Prefix
	Routes    []Route
	MTU       int
}

// Bond makes an Interface a bond of Members.
type Bond struct {
	Mode    string // config.BondActiveBackup or config.Bond8023AD
	Members []string
}

// Route is a static route through an interface.
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Source  netip.Addr
	Metric  uint32
}

// Auto reports whether the Spec leaves the choice of link to the node.
func (s Spec) Auto() bool { return len(s.Interfaces) == 0 }

// SpecFromConfig is the network a machine config asks for; nil (maintenance mode) is
// DHCP on the first link with a carrier. The config was validated already; an error
// here means the two disagree.
func SpecFromConfig(cfg *config.Config) (Spec, error) {
	var s Spec
	if cfg == nil {
		return s, nil
	}
	n := cfg.Machine.Machine.Network
	s.Hostname = cfg.Hostname()
	for i, ns := range n.Nameservers {
		a, err := netip.ParseAddr(ns)
		if err != nil {
			return Spec{}, fmt.Errorf("machine.network.nameservers[%d]: %w", i, err)
		}
		s.Nameservers = append(s.Nameservers, a)
	}
	for i, h := range n.ExtraHosts {
		a, err := netip.ParseAddr(h.IP)
		if err != nil {
			return Spec{}, fmt.Errorf("machine.network.extraHosts[%d].ip: %w", i, err)
		}
		s.ExtraHosts = append(s.ExtraHosts, Host{IP: a, Aliases: h.Aliases})
	}
	for i, ic := range n.Interfaces {
		path := fmt.Sprintf("machine.network.interfaces[%d]", i)
		it := Interface{Name: ic.Interface, DHCP: ic.DHCP, DHCP6: ic.DHCP6, MTU: ic.MTU, Down: ic.Down}
		if ic.DeviceSelector != nil {
			it.Driver = ic.DeviceSelector.Driver
			if ic.DeviceSelector.HardwareAddr != "" {
				mac, err := net.ParseMAC(ic.DeviceSelector.HardwareAddr)
				if err != nil {
					return Spec{}, fmt.Errorf("%s.deviceSelector.hardwareAddr: %w", path, err)
				}
				it.HardwareAddr = mac
			}
		}
		if ic.Bond != nil {
			it.Bond = &Bond{Mode: ic.Bond.Mode, Members: append([]string(nil), ic.Bond.Interfaces...)}
		}
		var err error
		if it.Addresses, it.Routes, err = addrsAndRoutes(path, ic.Addresses, ic.Routes); err != nil {
			return Spec{}, err
		}
		for k, vc := range ic.VLANs {
			vp := fmt.Sprintf("%s.vlans[%d]", path, k)
			v := VLAN{ID: vc.VLANID, DHCP: vc.DHCP, DHCP6: vc.DHCP6, MTU: vc.MTU}
			if v.Addresses, v.Routes, err = addrsAndRoutes(vp, vc.Addresses, vc.Routes); err != nil {
				return Spec{}, err
			}
			it.VLANs = append(it.VLANs, v)
		}
		s.Interfaces = append(s.Interfaces, it)
	}
	return s, nil
}

func addrsAndRoutes(path string, addrs []string, routes []config.Route) ([]netip.Prefix, []Route, error) {
	var ps []netip.Prefix
	var rs []Route
	for j, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.addresses[%d]: %w", path, j, err)
		}
		ps = append(ps, p)
	}
	for j, r := range routes {
		rt, err := routeFromConfig(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.routes[%d]: %w", path, j, err)
		}
		rs = append(rs, rt)
	}
	return ps, rs, nil
}

func routeFromConfig(r config.Route) (Route, error) {
	dst, err := netip.ParsePrefix(r.Network)
	if err != nil {
		return Route{}, fmt.Errorf("network: %w", err)
	}
	rt := Route{Dst: dst.Masked(), Metric: r.Metric}
	if r.Gateway != "" {
		if rt.Gateway, err = netip.ParseAddr(r.Gateway); err != nil {
			return Route{}, fmt.Errorf("gateway: %w", err)
		}
	}
	if r.Source != "" {
		if rt.Source, err = netip.ParseAddr(r.Source); err != nil {
			return Route{}, fmt.Errorf("source: %w", err)
		}
	}
	return rt, nil
}

package networking

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/kiln-os/kiln/machined/config"
)

// Spec is the host network a node should have.
type Spec struct {
	// Interfaces to configure. None: DHCP on the first link with a carrier.
	Interfaces []Interface
	// Nameservers for resolv.conf; none: those learnt by DHCP.
	Nameservers []netip.Addr
	// Hostname is sent to DHCP servers.
	Hostname string
}

// Interface configures one link, named or selected by its MAC address.
type Interface struct {
	Name         string
	HardwareAddr net.HardwareAddr
	DHCP         bool
	Addresses    []netip.Prefix
	Routes       []Route
	MTU          int
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
	for i, ic := range n.Interfaces {
		path := fmt.Sprintf("machine.network.interfaces[%d]", i)
		it := Interface{Name: ic.Interface, DHCP: ic.DHCP, MTU: ic.MTU}
		if ic.DeviceSelector != nil && ic.DeviceSelector.HardwareAddr != "" {
			mac, err := net.ParseMAC(ic.DeviceSelector.HardwareAddr)
			if err != nil {
				return Spec{}, fmt.Errorf("%s.deviceSelector.hardwareAddr: %w", path, err)
			}
			it.HardwareAddr = mac
		}
		for j, a := range ic.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return Spec{}, fmt.Errorf("%s.addresses[%d]: %w", path, j, err)
			}
			it.Addresses = append(it.Addresses, p)
		}
		for j, r := range ic.Routes {
			rt, err := routeFromConfig(r)
			if err != nil {
				return Spec{}, fmt.Errorf("%s.routes[%d]: %w", path, j, err)
			}
			it.Routes = append(it.Routes, rt)
		}
		s.Interfaces = append(s.Interfaces, it)
	}
	return s, nil
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

package networking

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/machined/config"
)

// Link kinds of a LinkSpec.
const (
	KindExisting = ""     // a link the node has (NIC, veth): configured, never created
	KindVLAN     = "vlan" // created by Kiln on Parent
	KindBond     = "bond" // created by Kiln
)

// LinkSpec is one link as the kernel should have it: the spec stage, a Spec
// resolved against the links the node has (selectors matched, VLAN names made,
// bond members listed).
type LinkSpec struct {
	Name      string
	Kind      string
	Parent    string // KindVLAN
	VLANID    int    // KindVLAN
	BondMode  string // KindBond
	Master    string // a bond member: the bond's name
	Down      bool
	MTU       int // 0: leave alone
	DHCP      bool
	DHCP6     bool // accept Router Advertisements (SLAAC) and run DHCPv6
	Addresses []netip.Prefix
	Routes    []Route
}

// maxLinkName is IFNAMSIZ less the terminating NUL.
const maxLinkName = 15

// vlanName is parent.id, with the parent's name shortened to fit IFNAMSIZ.
func vlanName(parent string, id int) string {
	suffix := "." + strconv.Itoa(id)
	if len(parent)+len(suffix) > maxLinkName {
		parent = parent[:maxLinkName-len(suffix)]
	}
	return parent + suffix
}

// ResolveLinks matches the Spec's interfaces to the node's links. An interface
// the node lacks is skipped with a warning (a NIC may come later; a missing one
// must not keep the node from starting). The loopback link is always up.
func ResolveLinks(spec Spec, links []netlink.Link, driver func(string) (string, error), log *slog.Logger) []LinkSpec {
	out := []LinkSpec{{Name: "lo"}}
	have := map[string]bool{}
	for _, l := range links {
		have[l.Attrs().Name] = true
	}
	taken := map[string]bool{"lo": true}
	byIndex := slices.Clone(links)
	slices.SortFunc(byIndex, func(a, b netlink.Link) int { return a.Attrs().Index - b.Attrs().Index })

	for i, it := range spec.Interfaces {
		name := it.Name
		switch {
		case it.Bond != nil:
			// Created below; members need not exist yet to be named.
		case name != "":
			if !have[name] {
				log.Warn("network interface not found; skipped", "interface", name)
				continue
			}
		default:
			name = selectLink(it, byIndex, taken, driver)
			if name == "" {
				log.Warn("no network interface matches the selector; skipped", "index", i,
					"hardware_addr", it.HardwareAddr.String(), "driver", it.Driver)
				continue
			}
		}
		taken[name] = true
		ls := LinkSpec{Name: name, Down: it.Down, MTU: it.MTU, DHCP: it.DHCP && !it.Down, DHCP6: it.DHCP6 && !it.Down}
		if !it.Down {
			ls.Addresses, ls.Routes = it.Addresses, it.Routes
		}
		if it.Bond != nil {
			ls.Kind, ls.BondMode = KindBond, it.Bond.Mode
			for _, m := range it.Bond.Members {
				if !have[m] {
					log.Warn("bond member not found; skipped", "bond", name, "interface", m)
					continue
				}
				taken[m] = true
				out = append(out, LinkSpec{Name: m, Master: name})
			}
		}
		out = append(out, ls)
		if it.Down {
			continue
		}
		for _, v := range it.VLANs {
			out = append(out, LinkSpec{
				Name: vlanName(name, v.ID), Kind: KindVLAN, Parent: name, VLANID: v.ID,
				MTU: v.MTU, DHCP: v.DHCP, DHCP6: v.DHCP6, Addresses: v.Addresses, Routes: v.Routes,
			})
		}
	}
	return out
}

// selectLink returns the first link (by index) not yet taken that matches
// the interface's MAC address and driver, or "".
func selectLink(it Interface, byIndex []netlink.Link, taken map[string]bool, driver func(string) (string, error)) string {
	for _, l := range byIndex {
		a := l.Attrs()
		if taken[a.Name] || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		if len(it.HardwareAddr) > 0 && !slices.Equal(a.HardwareAddr, it.HardwareAddr) {
			continue
		}
		if it.Driver != "" {
			if d, err := driver(a.Name); err != nil || d != it.Driver {
				continue
			}
		}
		return a.Name
	}
	return ""
}

// bondMode maps the config's mode names to the kernel's.
func bondMode(mode string) (netlink.BondMode, error) {
	switch mode {
	case config.BondActiveBackup:
		return netlink.BOND_MODE_ACTIVE_BACKUP, nil
	case config.Bond8023AD:
		return netlink.BOND_MODE_802_3AD, nil
	}
	return 0, fmt.Errorf("unknown bond mode %q", mode)
}

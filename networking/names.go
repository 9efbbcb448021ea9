package networking

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/kiln-os/kiln/networking/dhcp"
	"github.com/kiln-os/kiln/networking/resolv"
)

// Sources of a name setting.
const (
	SourceConfig = "config"
	SourceDHCP   = "dhcp"
	SourceMAC    = "mac"
)

// Names are the resolver and naming settings machined owns: what it writes to
// resolv.conf, /etc/hosts and /etc/hostname, and where each came from.
type Names struct {
	Hostname         string
	HostnameSource   string // SourceConfig, SourceDHCP, SourceMAC or "" (none)
	Nameservers      []netip.Addr
	NameserverSource string // SourceConfig, SourceDHCP or "" (none)
	Search           []string
	ExtraHosts       []Host
}

// ChooseNames decides the names: the config's host name, else the first
// lease's (by link name) that carries one, else the fallback derived from the
// MAC address; the config's nameservers, else those of the DHCPv4 leases and
// then of the DHCPv6 leases.
func ChooseNames(hostname, fallback string, servers []netip.Addr, extra []Host, leases map[string]*dhcp.Lease, leases6 map[string]*dhcp.Lease6) Names {
	n := Names{ExtraHosts: extra}
	links := make([]string, 0, len(leases))
	for l := range leases {
		links = append(links, l)
	}
	slices.Sort(links)
	switch {
	case hostname != "":
		n.Hostname, n.HostnameSource = hostname, SourceConfig
	default:
		for _, l := range links {
			if h := leases[l].Hostname; h != "" {
				n.Hostname, n.HostnameSource = h, SourceDHCP
				break
			}
		}
		if n.Hostname == "" && fallback != "" {
			n.Hostname, n.HostnameSource = fallback, SourceMAC
		}
	}
	if len(servers) > 0 {
		n.Nameservers, n.NameserverSource = slices.Clone(servers), SourceConfig
		return n
	}
	for _, l := range links {
		ls := leases[l]
		for _, a := range ls.DNS {
			if !slices.Contains(n.Nameservers, a) {
				n.Nameservers = append(n.Nameservers, a)
			}
		}
		for _, d := range append([]string{ls.Domain}, ls.Search...) {
			if d != "" && !slices.Contains(n.Search, d) {
				n.Search = append(n.Search, d)
			}
		}
	}
	for _, l := range slices.Sorted(maps.Keys(leases6)) {
		ls := leases6[l]
		for _, a := range ls.DNS {
			if !slices.Contains(n.Nameservers, a) {
				n.Nameservers = append(n.Nameservers, a)
			}
		}
		for _, d := range ls.Search {
			if d != "" && !slices.Contains(n.Search, d) {
				n.Search = append(n.Search, d)
			}
		}
	}
	if len(n.Nameservers) > 0 {
		n.NameserverSource = SourceDHCP
	}
	return n
}

// writeNames writes resolv.conf, /etc/hosts and /etc/hostname from the Spec
// and the leases, and sets the kernel's host name when it changed.
func (c *Controller) writeNames() error {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	n := ChooseNames(c.hostSpec, c.fallbackHostname, c.dns, c.extraHosts, c.leases, c.leases6)
	c.names = n
	wrote, err := resolv.Write(c.resolvPath, n.Nameservers, n.Search)
	if err != nil {
		return fmt.Errorf("networking: %w", err)
	}
	if wrote {
		c.log.Info("resolv.conf written", "nameservers", n.Nameservers, "source", n.NameserverSource)
	}
	if c.opts.Hosts != "" {
		hs := make([]resolv.Host, 0, len(n.ExtraHosts))
		for _, h := range n.ExtraHosts {
			hs = append(hs, resolv.Host{IP: h.IP, Names: h.Aliases})
		}
		if _, err := resolv.WriteFile(c.opts.Hosts, resolv.RenderHosts(n.Hostname, hs)); err != nil {
			return fmt.Errorf("networking: %w", err)
		}
	}
	if n.Hostname == "" {
		return nil
	}
	if c.opts.HostnameFile != "" {
		if _, err := resolv.WriteFile(c.opts.HostnameFile, []byte(n.Hostname+"\n")); err != nil {
			return fmt.Errorf("networking: %w", err)
		}
	}
	if c.opts.SetHostname != nil && c.kernelHost != n.Hostname {
		if err := c.opts.SetHostname(n.Hostname); err != nil {
			return fmt.Errorf("networking: set host name %q: %w", n.Hostname, err)
		}
		c.kernelHost = n.Hostname
		c.log.Info("host name set", "hostname", n.Hostname, "source", n.HostnameSource)
	}
	return nil
}

// Names returns the resolver and naming settings last written.
func (c *Controller) Names() Names {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	n := c.names
	n.Nameservers = slices.Clone(n.Nameservers)
	n.Search = slices.Clone(n.Search)
	return n
}

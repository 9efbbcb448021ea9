package networking

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/networking/dhcp"
	"github.com/kiln-os/kiln/networking/link"
)

// IPv6 from the network (a link with DHCP6): the kernel does SLAAC and
// learns the default route from Router Advertisements once accept_ra and
// autoconf allow it; a DHCPv6 runner adds an address (IA_NA) and DNS servers.
//
// accept_ra is set to 2, which accepts RAs even when the node forwards
// (net.ipv6.conf.all.forwarding=1, as a Kubernetes node does); with 1 the
// kernel would ignore them there. The values found before are put back when
// the link leaves DHCP6; links the config does not give DHCP6 are not touched.

// raSysctls are a link's IPv6 autoconfiguration sysctls.
type raSysctls struct {
	acceptRA, autoconf string
}

// raWanted is what DHCP6 sets.
var raWanted = raSysctls{acceptRA: "2", autoconf: "1"}

func (c *Controller) sysctlPath(name, key string) string {
	root := c.opts.ProcSys
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, "net", "ipv6", "conf", name, key)
}

func (c *Controller) readRA(name string) (raSysctls, error) {
	var v raSysctls
	for _, f := range []struct {
		key string
		dst *string
	}{{"accept_ra", &v.acceptRA}, {"autoconf", &v.autoconf}} {
		b, err := os.ReadFile(c.sysctlPath(name, f.key))
		if err != nil {
			return v, fmt.Errorf("networking: IPv6 settings of %s: %w", name, err)
		}
		*f.dst = strings.TrimSpace(string(b))
	}
	return v, nil
}

// writeRA writes the sysctls that differ from have.
func (c *Controller) writeRA(name string, have, want raSysctls) error {
	for _, f := range []struct{ key, have, want string }{
		{"accept_ra", have.acceptRA, want.acceptRA},
		{"autoconf", have.autoconf, want.autoconf},
	} {
		if f.have == f.want {
			continue
		}
		if err := os.WriteFile(c.sysctlPath(name, f.key), []byte(f.want+"\n"), 0o644); err != nil {
			return fmt.Errorf("networking: set %s of %s to %s: %w", f.key, name, f.want, err)
		}
	}
	return nil
}

// applyRA gives the links with DHCP6 their IPv6 autoconfiguration sysctls and
// puts back those of links that left DHCP6. Called with mu held.
func (c *Controller) applyRA(specs []LinkSpec) error {
	want := map[string]bool{}
	var errs []error
	for _, ls := range specs {
		if !ls.DHCP6 {
			continue
		}
		want[ls.Name] = true
		have, err := c.readRA(ls.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, ok := c.ra[ls.Name]; !ok {
			c.ra[ls.Name] = have
		}
		if err := c.writeRA(ls.Name, have, raWanted); err != nil {
			errs = append(errs, err)
		}
	}
	for name, before := range c.ra {
		if want[name] {
			continue
		}
		delete(c.ra, name)
		have, err := c.readRA(name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the link is gone (a VLAN Kiln removed)
			}
			errs = append(errs, err)
			continue
		}
		if err := c.writeRA(name, have, before); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// startDHCP6 runs DHCPv6 on a link until the run is cancelled. It first asks
// for Router Advertisements, so that SLAAC and the default route need not
// wait for the router's next periodic one.
func (c *Controller) startDHCP6(name string) *dhcpRun {
	ctx, cancel := context.WithCancel(context.Background())
	run := &dhcpRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		log := c.log.With("interface", name, "family", "ipv6")
		l, err := link.ByName(name)
		if err != nil {
			log.Error("DHCPv6", "err", err)
			return
		}
		if !waitLinkLocal(ctx, name) {
			return
		}
		if err := solicitRouters(name, l.HardwareAddr); err != nil {
			log.Warn("router solicitation", "err", err)
		}
		cl := &dhcp.Client6{
			Interface:    name,
			HardwareAddr: l.HardwareAddr,
			Log:          c.log,
			Retry:        c.retry,
			Bound:        func(ls *dhcp.Lease6) error { return c.bound6(name, ls) },
			Lost:         func(ls *dhcp.Lease6) { c.lost6(name, ls) },
		}
		if err := cl.Run(ctx); err != nil {
			log.Error("DHCPv6 stopped", "err", err)
		}
	}()
	return run
}

// waitLinkLocal waits until the link has a link-local IPv6 address that
// passed duplicate address detection, or ctx ends.
func waitLinkLocal(ctx context.Context, name string) bool {
	for {
		if l, err := netlink.LinkByName(name); err == nil {
			as, _ := netlink.AddrList(l, netlink.FAMILY_V6)
			for _, a := range as {
				if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
					return true
				}
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// solicitRouters sends one Router Solicitation to all routers on the link.
func solicitRouters(name string, mac net.HardwareAddr) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	conn, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return err
	}
	defer conn.Close()
	rs := &ndp.RouterSolicitation{}
	if len(mac) > 0 {
		rs.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
	}
	return conn.WriteTo(rs, nil, netip.MustParseAddr("ff02::2"))
}

// bound6 installs a DHCPv6 address: a /128, as RFC 8415 asks (the on-link
// prefix is the Router Advertisements' business), with the lease's lifetimes.
// An address the Spec claims is left to the static reconciler.
func (c *Controller) bound6(name string, ls *dhcp.Lease6) error {
	c.leaseMu.Lock()
	c.leases6[name] = ls
	claimed := c.claims[name].addr(netip.PrefixFrom(ls.Addr, 128))
	c.leaseMu.Unlock()
	if err := c.writeNames(); err != nil {
		return err
	}
	if claimed {
		return nil
	}
	return link.ReplaceAddr(name, link.Addr{Prefix: netip.PrefixFrom(ls.Addr, 128), Valid: ls.Valid, Preferred: ls.Preferred})
}

func (c *Controller) lost6(name string, ls *dhcp.Lease6) {
	c.leaseMu.Lock()
	claimed := c.claims[name].addr(netip.PrefixFrom(ls.Addr, 128))
	c.leaseMu.Unlock()
	if claimed {
		c.log.Info("leased address kept: the config claims it", "interface", name, "addr", ls.Addr)
	} else if err := link.DelAddr(name, netip.PrefixFrom(ls.Addr, 128)); err != nil {
		c.log.Warn("remove DHCPv6 address", "interface", name, "err", err)
	}
	c.leaseMu.Lock()
	delete(c.leases6, name)
	c.leaseMu.Unlock()
	if err := c.writeNames(); err != nil {
		c.log.Warn("resolver and names", "err", err)
	}
}

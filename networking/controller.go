package networking

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/kiln-os/kiln/networking/dhcp"
	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/resolv"
)

// dhcpRouteMetric is the metric of routes learnt by DHCP: above the kernel's
// default for static routes, so that a configured route wins.
const dhcpRouteMetric = 1024

// autoKey names the DHCP runner of an automatic Spec.
const autoKey = "*auto*"

// Options configures New.
type Options struct {
	Log *slog.Logger
	// ResolvConf is written with the nameservers (resolv.DefaultPath when empty).
	ResolvConf string
	// DHCPRetry is the pause between failed DHCP rounds (dhcp.DefaultRetry when zero).
	DHCPRetry time.Duration
}

// Controller converges the host network to a Spec. It acts on the network namespace
// of the process.
type Controller struct {
	log        *slog.Logger
	resolvPath string
	retry      time.Duration

	// mu serialises Apply and Close and guards what they own.
	mu     sync.Mutex
	spec   Spec
	static map[string]owned    // by link name: what the Spec put there
	runs   map[string]*dhcpRun // by link name, or autoKey
	closed bool

	// leaseMu guards leases; DHCP runners take it, never mu, so that Apply can
	// wait for a runner to stop while holding mu.
	leaseMu sync.Mutex
	leases  map[string]*dhcp.Lease // by link name
	dns     []netip.Addr           // from the Spec, copied for the runners
}

type owned struct {
	addrs  []netip.Prefix
	routes []Route
}

type dhcpRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Controller that has configured nothing yet.
func New(opts Options) *Controller {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = resolv.DefaultPath
	}
	return &Controller{
		log:        opts.Log,
		resolvPath: opts.ResolvConf,
		retry:      opts.DHCPRetry,
		static:     map[string]owned{},
		runs:       map[string]*dhcpRun{},
		leases:     map[string]*dhcp.Lease{},
	}
}

// Apply makes the host network what spec says. Static settings are in place when it
// returns; DHCP runs in the background (see WaitAddress). A link the Spec names but
// the node lacks is skipped with a warning: a NIC may come later, and a missing one
// must not keep machined from starting.
func (c *Controller) Apply(ctx context.Context, spec Spec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("networking: controller closed")
	}
	if err := link.SetUp("lo"); err != nil {
		return err
	}

	type resolved struct {
		name string
		it   Interface
	}
	var want []resolved
	for i, it := range spec.Interfaces {
		name := it.Name
		if len(it.HardwareAddr) > 0 {
			l, err := link.ByHardwareAddr(it.HardwareAddr)
			if err != nil {
				c.log.Warn("network interface not found; skipped", "index", i, "hardware_addr", it.HardwareAddr.String(), "err", err)
				continue
			}
			name = l.Name
		} else if _, err := link.ByName(name); err != nil {
			c.log.Warn("network interface not found; skipped", "interface", name, "err", err)
			continue
		}
		want = append(want, resolved{name, it})
	}

	var errs []error
	next := map[string]owned{}
	for _, r := range want {
		o, err := c.applyStatic(r.name, r.it, c.static[r.name])
		next[r.name] = o
		if err != nil {
			errs = append(errs, err)
		}
	}
	for name, o := range c.static {
		if _, ok := next[name]; !ok {
			c.removeOwned(name, o, owned{})
		}
	}
	c.static = next

	// DHCP runners: keep those still wanted, stop the others, start the new.
	dhcpWant := map[string]bool{}
	if spec.Auto() {
		dhcpWant[autoKey] = true
	}
	for _, r := range want {
		if r.it.DHCP {
			dhcpWant[r.name] = true
		}
	}
	for key, run := range c.runs {
		if !dhcpWant[key] {
			run.cancel()
			<-run.done
			delete(c.runs, key)
		}
	}
	c.leaseMu.Lock()
	c.dns = slices.Clone(spec.Nameservers)
	c.leaseMu.Unlock()
	for key := range dhcpWant {
		if _, ok := c.runs[key]; !ok {
			c.runs[key] = c.startDHCP(key, spec.Hostname)
		}
	}
	c.spec = spec
	if err := c.writeResolv(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// applyStatic configures one link and removes what prev put there that it no longer
// wants. It returns what the link now holds from the Spec.
func (c *Controller) applyStatic(name string, it Interface, prev owned) (owned, error) {
	var o owned
	if it.MTU > 0 {
		if err := link.SetMTU(name, it.MTU); err != nil {
			return o, err
		}
	}
	if err := link.SetUp(name); err != nil {
		return o, err
	}
	for _, p := range it.Addresses {
		if err := link.ReplaceAddr(name, link.Addr{Prefix: p}); err != nil {
			return o, err
		}
		o.addrs = append(o.addrs, p)
	}
	for _, r := range it.Routes {
		if err := link.ReplaceRoute(name, link.Route(r)); err != nil {
			return o, err
		}
		o.routes = append(o.routes, r)
	}
	c.removeOwned(name, prev, o)
	return o, nil
}

// removeOwned removes from a link what prev configured and keep does not.
func (c *Controller) removeOwned(name string, prev, keep owned) {
	for _, r := range prev.routes {
		if !slices.Contains(keep.routes, r) {
			if err := link.DelRoute(name, link.Route(r)); err != nil {
				c.log.Warn("remove route", "interface", name, "route", r.Dst, "err", err)
			}
		}
	}
	for _, p := range prev.addrs {
		if !slices.Contains(keep.addrs, p) {
			if err := link.DelAddr(name, p); err != nil {
				c.log.Warn("remove address", "interface", name, "addr", p, "err", err)
			}
		}
	}
}

// startDHCP runs DHCP on a link, or with autoKey on the first link that has a
// carrier, until the run is cancelled.
func (c *Controller) startDHCP(key, hostname string) *dhcpRun {
	ctx, cancel := context.WithCancel(context.Background())
	run := &dhcpRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		var l link.Link
		var err error
		if key == autoKey {
			c.log.Info("waiting for a network link with a carrier")
			if l, err = link.WaitCarrier(ctx); err != nil {
				if ctx.Err() == nil {
					c.log.Error("DHCP", "err", err)
				}
				return
			}
		} else if l, err = link.ByName(key); err != nil {
			c.log.Error("DHCP", "err", err)
			return
		}
		if err := link.SetUp(l.Name); err != nil {
			c.log.Error("DHCP", "err", err)
			return
		}
		name := l.Name
		cl := &dhcp.Client{
			Interface:    name,
			HardwareAddr: l.HardwareAddr,
			Hostname:     hostname,
			Log:          c.log,
			Retry:        c.retry,
			Bound:        func(ls *dhcp.Lease) error { return c.bound(name, ls) },
			Lost:         func(ls *dhcp.Lease) { c.lost(name, ls) },
		}
		if err := cl.Run(ctx); err != nil {
			c.log.Error("DHCP stopped", "interface", name, "err", err)
		}
	}()
	return run
}

// leaseRoutes are the routes a lease asks for: its classless static routes or,
// without them, the default route through its router (RFC 3442).
func leaseRoutes(ls *dhcp.Lease) []link.Route {
	var rs []link.Route
	for _, r := range ls.StaticNets {
		rs = append(rs, link.Route{Dst: r.Dst, Gateway: r.Gateway, Source: ls.Addr.Addr(), Metric: dhcpRouteMetric})
	}
	if len(rs) == 0 && ls.Router.IsValid() {
		rs = append(rs, link.Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: ls.Router, Source: ls.Addr.Addr(), Metric: dhcpRouteMetric})
	}
	for i := range rs {
		if rs[i].Gateway.IsUnspecified() {
			rs[i].Gateway = netip.Addr{} // on-link
		}
	}
	return rs
}

func (c *Controller) bound(name string, ls *dhcp.Lease) error {
	if ls.MTU >= 576 {
		if err := link.SetMTU(name, ls.MTU); err != nil {
			c.log.Warn("MTU from DHCP", "interface", name, "mtu", ls.MTU, "err", err)
		}
	}
	if err := link.ReplaceAddr(name, link.Addr{Prefix: ls.Addr, Valid: ls.Duration}); err != nil {
		return err
	}
	for _, r := range leaseRoutes(ls) {
		if err := link.ReplaceRoute(name, r); err != nil {
			return err
		}
	}
	c.leaseMu.Lock()
	c.leases[name] = ls
	c.leaseMu.Unlock()
	return c.writeResolv()
}

func (c *Controller) lost(name string, ls *dhcp.Lease) {
	for _, r := range leaseRoutes(ls) {
		if err := link.DelRoute(name, r); err != nil {
			c.log.Warn("remove DHCP route", "interface", name, "err", err)
		}
	}
	if err := link.DelAddr(name, ls.Addr); err != nil {
		c.log.Warn("remove DHCP address", "interface", name, "err", err)
	}
	c.leaseMu.Lock()
	delete(c.leases, name)
	c.leaseMu.Unlock()
	if err := c.writeResolv(); err != nil {
		c.log.Warn("resolv.conf", "err", err)
	}
}

// writeResolv writes the Spec's nameservers or, without any, those of the leases.
func (c *Controller) writeResolv() error {
	c.leaseMu.Lock()
	servers := slices.Clone(c.dns)
	var search []string
	if len(servers) == 0 {
		names := make([]string, 0, len(c.leases))
		for n := range c.leases {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			ls := c.leases[n]
			for _, a := range ls.DNS {
				if !slices.Contains(servers, a) {
					servers = append(servers, a)
				}
			}
			for _, d := range append([]string{ls.Domain}, ls.Search...) {
				if d != "" && !slices.Contains(search, d) {
					search = append(search, d)
				}
			}
		}
	}
	wrote, err := resolv.Write(c.resolvPath, servers, search)
	c.leaseMu.Unlock()
	if err != nil {
		return fmt.Errorf("networking: %w", err)
	}
	if wrote {
		c.log.Info("resolv.conf written", "nameservers", servers)
	}
	return nil
}

// Leases returns the DHCP leases held, by link name.
func (c *Controller) Leases() map[string]dhcp.Lease {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	out := map[string]dhcp.Lease{}
	for n, l := range c.leases {
		out[n] = *l
	}
	return out
}

// GlobalAddrs returns the global unicast addresses of the node's links (no loopback,
// no link-local).
func GlobalAddrs() ([]netip.Addr, error) {
	ps, err := link.Addrs("")
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, p := range ps {
		if a := p.Addr(); a.IsGlobalUnicast() {
			out = append(out, a)
		}
	}
	return out, nil
}

// WaitAddress waits until a link has a global unicast address (from the Spec or a
// lease) or ctx ends; it reports whether one appeared.
func (c *Controller) WaitAddress(ctx context.Context) bool {
	for {
		if as, err := GlobalAddrs(); err == nil && len(as) > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops DHCP (removing the leased addresses) and forgets the Spec; static
// settings stay, so that a node keeps its address while it shuts down.
func (c *Controller) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for key, run := range c.runs {
		run.cancel()
		<-run.done
		delete(c.runs, key)
	}
}

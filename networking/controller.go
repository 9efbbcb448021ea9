package networking

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/networking/dhcp"
	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/resolv"
)

// dhcpRouteMetric is the metric of routes learnt by DHCP: above the kernel's
// default for static routes, so that a configured route wins.
const dhcpRouteMetric = 1024

// autoKey names the DHCP runner of an automatic Spec.
const autoKey = "*auto*"

// runKey names a DHCP runner: DHCPv4 on a link (or autoKey), or DHCPv6.
type runKey struct {
	link string
	v6   bool
}

// Options configures New.
type Options struct {
	Log *slog.Logger
	// Kernel is the netlink seam (the calling process's namespace when nil).
	Kernel Kernel
	// ResolvConf is written with the nameservers (resolv.DefaultPath when empty).
	ResolvConf string
	// Hosts and HostnameFile are written with the host name and the extra
	// hosts; empty: not written (tests, process mode).
	Hosts, HostnameFile string
	// SetHostname sets the kernel's host name when the chosen one changes;
	// nil: not set.
	SetHostname func(string) error
	// FallbackHostname is the host name when neither the Spec nor DHCP gives
	// one (kiln-xxxxxx from the first NIC's MAC address).
	FallbackHostname string
	// DHCPRetry is the pause between failed DHCP rounds (dhcp.DefaultRetry when zero).
	DHCPRetry time.Duration
	// ProcSys is where sysctls are read and set (/proc/sys when empty): the
	// IPv6 ones of links, and promote_secondaries through the Kernel when
	// Kernel is nil.
	ProcSys string
}

// Controller converges the host network to a Spec. It acts on the network namespace
// of the process.
type Controller struct {
	log  *slog.Logger
	opts Options
	k    Kernel
	rec  *Reconciler

	resolvPath       string
	retry            time.Duration
	fallbackHostname string

	// mu serialises Apply and Close and guards what they own.
	mu     sync.Mutex
	spec   Spec
	runs   map[runKey]*dhcpRun
	closed bool
	// ra holds, by link name, the IPv6 sysctls as they were before DHCP6
	// changed them, to be put back when the link leaves DHCP6.
	ra map[string]raSysctls

	// startV4 starts a DHCPv4 runner (startDHCP; a test's fake).
	startV4 func(key, hostname string) *dhcpRun

	// leaseMu guards the fields below; DHCP runners take it, never mu, so
	// that Apply can wait for a runner to stop while holding mu.
	leaseMu sync.Mutex
	// claims is what the Spec of the latest Apply puts on each link: a
	// runner neither removes nor overwrites it.
	claims     map[string]linkClaims
	leases     map[string]*dhcp.Lease  // by link name
	leases6    map[string]*dhcp.Lease6 // by link name
	dns        []netip.Addr            // from the Spec, copied for the runners
	hostSpec   string
	extraHosts []Host
	names      Names // last written
	kernelHost string
	// binding counts the leases being installed (bound); boundCh is closed and
	// replaced when one is done, for WaitAddress.
	binding int
	boundCh chan struct{}
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
	if opts.Kernel == nil {
		k := NewNetlinkKernel(nil)
		k.ProcSys = opts.ProcSys
		opts.Kernel = k
	}
	c := &Controller{
		log:              opts.Log,
		opts:             opts,
		k:                opts.Kernel,
		rec:              NewReconciler(opts.Kernel, opts.Log),
		resolvPath:       opts.ResolvConf,
		retry:            opts.DHCPRetry,
		fallbackHostname: opts.FallbackHostname,
		runs:             map[runKey]*dhcpRun{},
		ra:               map[string]raSysctls{},
		leases:           map[string]*dhcp.Lease{},
		leases6:          map[string]*dhcp.Lease6{},
		boundCh:          make(chan struct{}),
	}
	c.startV4 = c.startDHCP
	return c
}

// Apply makes the host network what spec says. Static settings are in place when it
// returns; DHCP runs in the background (see WaitAddress). A link the Spec names but
// the node lacks is skipped with a warning: a NIC may come later, and a missing one
// must not keep machined from starting.
//
// The order matters when a link goes from DHCP to static addressing: the
// runners no longer wanted stop (releasing their leases) before the static
// Spec is reconciled, and they leave in place what the Spec claims (an
// address kept from the lease, a route), so the node never loses the address
// a client reaches it through and the end state is exactly the Spec.
func (c *Controller) Apply(ctx context.Context, spec Spec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("networking: controller closed")
	}
	var errs []error
	hostname := cmp.Or(spec.Hostname, c.fallbackHostname)
	// The first Apply of an automatic Spec (maintenance mode) starts DHCP before the
	// rest: there is nothing to stop or reconcile first, and the node's address is what
	// its user waits for.
	if len(c.runs) == 0 && spec.Auto() {
		c.runs[runKey{link: autoKey}] = c.startV4(autoKey, hostname)
	}
	if err := c.promoteSecondaries(); err != nil {
		errs = append(errs, err)
	}
	specs, err := c.rec.Resolve(spec)
	if err != nil {
		errs = append(errs, fmt.Errorf("networking: %w", err))
	}

	// DHCP runners: keep those still wanted, stop the others (they release
	// their leases), start the new.
	dhcpWant := map[runKey]bool{}
	if spec.Auto() {
		dhcpWant[runKey{link: autoKey}] = true
	}
	for _, ls := range specs {
		if ls.DHCP {
			dhcpWant[runKey{link: ls.Name}] = true
		}
		if ls.DHCP6 {
			dhcpWant[runKey{link: ls.Name, v6: true}] = true
		}
	}
	c.leaseMu.Lock()
	c.claims = claimsOf(specs)
	c.leaseMu.Unlock()
	for key, run := range c.runs {
		if !dhcpWant[key] {
			run.cancel()
			<-run.done
			delete(c.runs, key)
		}
	}
	if specs != nil {
		if err := c.rec.ReconcileLinks(specs); err != nil {
			errs = append(errs, fmt.Errorf("networking: %w", err))
		}
		if err := c.promoteOnLinks(specs); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.applyRA(specs); err != nil {
		errs = append(errs, err)
	}
	c.leaseMu.Lock()
	c.dns = slices.Clone(spec.Nameservers)
	c.hostSpec = spec.Hostname
	c.extraHosts = slices.Clone(spec.ExtraHosts)
	c.leaseMu.Unlock()
	for key := range dhcpWant {
		if _, ok := c.runs[key]; ok {
			continue
		}
		if key.v6 {
			c.runs[key] = c.startDHCP6(key.link)
		} else {
			c.runs[key] = c.startV4(key.link, hostname)
		}
	}
	c.spec = spec
	if err := c.writeNames(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
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
		} else if err := link.SetUp(l.Name); err != nil {
			// WaitCarrier returns only a link that is up; a named one may not be.
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

// kernelLink finds a link by name through the Kernel.
func (c *Controller) kernelLink(name string) (netlink.Link, error) {
	ls, err := c.k.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		if l.Attrs().Name == name {
			return l, nil
		}
	}
	return nil, fmt.Errorf("link %s: %w", name, errNoDevice)
}

// leaseRoute is a lease's route through the link with index in netlink's
// form. Its protocol is left to the kernel (boot), so the static
// reconciler, which removes only RouteProtocol routes, never takes it.
func leaseRoute(index int, r link.Route) *netlink.Route {
	nr := &netlink.Route{LinkIndex: index, Dst: toIPNet(r.Dst), Priority: int(r.Metric)}
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

// bound installs a new or renewed lease, except what the Spec claims: that
// is the static reconciler's, with no lifetime.
func (c *Controller) bound(name string, ls *dhcp.Lease) error {
	// Names first: whoever sees the address may resolve names at once.
	c.leaseMu.Lock()
	c.leases[name] = ls
	claims := c.claims[name]
	c.binding++
	c.leaseMu.Unlock()
	defer func() {
		c.leaseMu.Lock()
		c.binding--
		close(c.boundCh)
		c.boundCh = make(chan struct{})
		c.leaseMu.Unlock()
	}()
	if err := c.writeNames(); err != nil {
		return err
	}
	l, err := c.kernelLink(name)
	if err != nil {
		return err
	}
	if ls.MTU >= 576 && l.Attrs().MTU != ls.MTU {
		if err := c.k.LinkSetMTU(l, ls.MTU); err != nil {
			c.log.Warn("MTU from DHCP", "interface", name, "mtu", ls.MTU, "err", err)
		}
	}
	if !claims.addr(ls.Addr) {
		a := &netlink.Addr{IPNet: toIPNet(ls.Addr)}
		if secs := int(ls.Duration / time.Second); secs > 0 {
			a.ValidLft, a.PreferedLft = secs, secs
		}
		if err := c.k.AddrReplace(l, a); err != nil {
			return err
		}
	}
	for _, r := range leaseRoutes(ls) {
		if claims.route(r) {
			continue
		}
		if err := c.k.RouteReplace(leaseRoute(l.Attrs().Index, r)); err != nil {
			return err
		}
	}
	return nil
}

// lost removes a lease that ended (released, expired, refused), except what
// the Spec claims. Deleting a claimed address would be more than untidy: it
// may be its subnet's primary address, and then the kernel (without
// promote_secondaries) deletes the secondaries with it, and the routes
// through them.
func (c *Controller) lost(name string, ls *dhcp.Lease) {
	c.leaseMu.Lock()
	claims := c.claims[name]
	c.leaseMu.Unlock()
	switch l, err := c.kernelLink(name); {
	case err == nil:
		for _, r := range leaseRoutes(ls) {
			if claims.route(r) {
				continue
			}
			if err := c.k.RouteDel(leaseRoute(l.Attrs().Index, r)); err != nil {
				c.log.Warn("remove DHCP route", "interface", name, "err", err)
			}
		}
		if claims.addr(ls.Addr) {
			c.log.Info("leased address kept: the config claims it", "interface", name, "addr", ls.Addr)
		} else if err := c.k.AddrDel(l, &netlink.Addr{IPNet: toIPNet(ls.Addr)}); err != nil {
			c.log.Warn("remove DHCP address", "interface", name, "err", err)
		}
	case !isNotFound(err):
		c.log.Warn("remove DHCP lease", "interface", name, "err", err)
	}
	c.leaseMu.Lock()
	delete(c.leases, name)
	c.leaseMu.Unlock()
	if err := c.writeNames(); err != nil {
		c.log.Warn("resolver and names", "err", err)
	}
}

// Leases returns the DHCPv4 leases held, by link name.
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
// lease) and no lease is half installed (its address in, its routes not yet), or
// until ctx ends; it reports whether an address appeared. A finished lease wakes it
// at once; other addresses are looked for every 50 ms.
func (c *Controller) WaitAddress(ctx context.Context) bool {
	for {
		c.leaseMu.Lock()
		binding, bound := c.binding > 0, c.boundCh
		c.leaseMu.Unlock()
		if !binding {
			if as, err := GlobalAddrs(); err == nil && len(as) > 0 {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-bound:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops DHCP (releasing the leases and removing the leased addresses
// the Spec does not claim) and forgets the Spec; static settings stay, so
// that a node keeps its address while it shuts down.
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

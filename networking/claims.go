package networking

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/kiln-os/kiln/networking/link"
)

// linkClaims is what a Spec puts on one link: its static addresses and
// routes. DHCP runners leave these alone, whichever came first.
type linkClaims struct {
	addrs  []netip.Prefix
	routes []routeClaim
}

// routeClaim identifies a route as the kernel does when it replaces one:
// destination, gateway and metric.
type routeClaim struct {
	dst     netip.Prefix
	gateway netip.Addr
	metric  uint32
}

func claimsOf(specs []LinkSpec) map[string]linkClaims {
	out := map[string]linkClaims{}
	for _, ls := range specs {
		if len(ls.Addresses) == 0 && len(ls.Routes) == 0 {
			continue
		}
		cl := linkClaims{addrs: ls.Addresses}
		for _, r := range ls.Routes {
			cl.routes = append(cl.routes, routeClaim{dst: r.Dst.Masked(), gateway: r.Gateway, metric: kernelMetric(r.Dst, r.Metric)})
		}
		out[ls.Name] = cl
	}
	return out
}

// addr reports whether p is claimed: the same address and length for IPv4
// (the kernel keeps 10.0.0.1/24 and 10.0.0.1/16 apart), the same address for
// IPv6 (the kernel keeps one).
func (cl linkClaims) addr(p netip.Prefix) bool {
	for _, q := range cl.addrs {
		if q == p || (p.Addr().Is6() && q.Addr() == p.Addr()) {
			return true
		}
	}
	return false
}

func (cl linkClaims) route(r link.Route) bool {
	want := routeClaim{dst: r.Dst.Masked(), gateway: r.Gateway, metric: kernelMetric(r.Dst, r.Metric)}
	for _, c := range cl.routes {
		if c == want {
			return true
		}
	}
	return false
}

// promoteKey is the sysctl that makes the kernel promote a secondary IPv4
// address when its subnet's primary goes, instead of deleting every
// secondary (and the routes through them) with it. Kiln wants that
// everywhere: a primary may go for many reasons (a lease released, a
// config change) and must not take unrelated configured addresses along.
func promoteKey(link string) string { return "net/ipv4/conf/" + link + "/promote_secondaries" }

// ensureSysctl sets key to value through the Kernel unless it has it already.
func (c *Controller) ensureSysctl(key, value string) error {
	v, err := c.k.Sysctl(key)
	if err != nil {
		return err
	}
	if v == value {
		return nil
	}
	return c.k.SetSysctl(key, value)
}

// promoteSecondaries sets promote_secondaries for all links and as the
// default of new ones. Apply calls it first, each time (it writes only
// what differs).
func (c *Controller) promoteSecondaries() error {
	var errs []error
	for _, name := range []string{"all", "default"} {
		if err := c.ensureSysctl(promoteKey(name), "1"); err != nil {
			errs = append(errs, fmt.Errorf("networking: %w", err))
		}
	}
	return errors.Join(errs...)
}

// promoteOnLinks sets promote_secondaries on each link of the specs that
// exists (the kernel ORs it with "all"; set on the link, it survives an
// operator's change of "all").
func (c *Controller) promoteOnLinks(specs []LinkSpec) error {
	var errs []error
	for _, ls := range specs {
		if err := c.ensureSysctl(promoteKey(ls.Name), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("networking: %w", err))
		}
	}
	return errors.Join(errs...)
}

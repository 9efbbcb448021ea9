package networking

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeKey identifies a route for comparison: what the kernel reports back
// for what Kiln asked.
type routeKey struct {
	link    int
	dst     netip.Prefix
	gateway netip.Addr
	source  netip.Addr
	metric  uint32
}

// kernelMetric is the metric the kernel stores for m: IPv6 routes without one
// get 1024.
func kernelMetric(dst netip.Prefix, m uint32) uint32 {
	if m == 0 && dst.Addr().Is6() {
		return 1024
	}
	return m
}

func keyOf(nr netlink.Route) routeKey {
	k := routeKey{link: nr.LinkIndex, metric: uint32(nr.Priority)}
	if p, ok := fromIPNet(nr.Dst); ok {
		k.dst = p
	} else if nr.Family == netlink.FAMILY_V6 {
		k.dst = netip.MustParsePrefix("::/0")
	} else {
		k.dst = netip.MustParsePrefix("0.0.0.0/0")
	}
	if a, ok := netip.AddrFromSlice(nr.Gw); ok {
		k.gateway = a.Unmap()
	}
	if a, ok := netip.AddrFromSlice(nr.Src); ok {
		k.source = a.Unmap()
	}
	return k
}

func (k routeKey) netlink() *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: k.link,
		Dst:       toIPNet(k.dst),
		Priority:  int(k.metric),
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Family:    netlink.FAMILY_V4,
	}
	if k.dst.Addr().Is6() {
		nr.Family = netlink.FAMILY_V6
	}
	if k.gateway.IsValid() {
		nr.Gw = k.gateway.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if k.source.IsValid() {
		nr.Src = k.source.AsSlice()
	}
	return nr
}

// removeRoutes deletes the routes Kiln installed (RouteProtocol) that the
// specs no longer ask for. It runs before the address stage, so that a route
// never outlives the source address it names.
func (r *Reconciler) removeRoutes(want map[routeKey]bool, have []netlink.Route) error {
	var errs []error
	for _, nr := range have {
		if nr.Protocol != RouteProtocol || want[keyOf(nr)] {
			continue
		}
		if err := r.k.RouteDel(&nr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// addRoutes installs the wanted routes that the kernel lacks.
func (r *Reconciler) addRoutes(want []routeKey, have []netlink.Route) error {
	present := map[routeKey]bool{}
	for _, nr := range have {
		if nr.Protocol == RouteProtocol {
			present[keyOf(nr)] = true
		}
	}
	var errs []error
	for _, k := range want {
		if present[k] {
			continue
		}
		if err := r.k.RouteReplace(k.netlink()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// wantedRoutes lists the routes of the specs whose links exist.
func wantedRoutes(specs []LinkSpec, t linkTable) []routeKey {
	var out []routeKey
	for _, ls := range specs {
		l, ok := t[ls.Name]
		if !ok {
			continue
		}
		for _, rt := range ls.Routes {
			out = append(out, routeKey{
				link: l.Attrs().Index, dst: rt.Dst.Masked(), gateway: rt.Gateway, source: rt.Source,
				metric: kernelMetric(rt.Dst, rt.Metric),
			})
		}
	}
	return out
}

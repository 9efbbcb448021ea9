package networking

import (
	"errors"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/networking/link"
)

func toIPNet(p netip.Prefix) *net.IPNet { return link.ToIPNet(p) }

func fromIPNet(n *net.IPNet) (netip.Prefix, bool) { return link.FromIPNet(n) }

// dynamicAddr reports whether the kernel will drop a by itself: it has a
// finite lifetime (a lease's, SLAAC's).
func dynamicAddr(a netlink.Addr) bool {
	return a.ValidLft > 0 && a.ValidLft != 0xffffffff
}

// addresses is the address stage: every link of the specs gets its static
// addresses, permanent (one already there with a lifetime, such as the
// address of a lease the Spec now makes static, loses its lifetime); the
// addresses this Reconciler added earlier and the specs no longer ask for are
// removed. Addresses it did not add (DHCP's, an operator's, the kernel's
// link-local ones) are left alone.
func (r *Reconciler) addresses(specs []LinkSpec, t linkTable) error {
	var errs []error
	next := map[string][]netip.Prefix{}
	for _, ls := range specs {
		if len(ls.Addresses) > 0 {
			next[ls.Name] = ls.Addresses
		}
	}
	names := map[string]bool{}
	for n := range next {
		names[n] = true
	}
	for n := range r.owned {
		names[n] = true
	}
	for name := range names {
		l, ok := t[name]
		if !ok {
			continue // gone, and its addresses with it
		}
		as, err := r.k.AddrList(l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var have []netip.Prefix
		dynamic := map[netip.Prefix]bool{}
		for _, a := range as {
			if p, ok := fromIPNet(a.IPNet); ok {
				have = append(have, p)
				dynamic[p] = dynamicAddr(a)
			}
		}
		for _, p := range r.owned[name] {
			if slices.Contains(next[name], p) || !slices.Contains(have, p) {
				continue
			}
			if err := r.k.AddrDel(l, &netlink.Addr{IPNet: toIPNet(p)}); err != nil {
				errs = append(errs, err)
			}
		}
		var added []netip.Prefix
		for _, p := range next[name] {
			present := slices.Contains(have, p)
			if present && !dynamic[p] {
				added = append(added, p)
				continue
			}
			a := &netlink.Addr{IPNet: toIPNet(p)}
			if p.Addr().Is6() {
				// A configured address is the operator's promise that it is
				// unique: skip duplicate address detection, so that it (and
				// routes with it as source) work at once.
				a.Flags = unix.IFA_F_NODAD
			}
			var err error
			if present {
				err = r.k.AddrReplace(l, a) // no lifetimes: permanent
			} else if err = r.k.AddrAdd(l, a); errors.Is(err, unix.EEXIST) {
				err = nil
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			added = append(added, p)
		}
		if len(added) > 0 {
			next[name] = added
		} else {
			delete(next, name)
		}
	}
	r.owned = next
	return errors.Join(errs...)
}

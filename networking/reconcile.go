package networking

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
)

// Reconciler makes the kernel's links, addresses and routes match a Spec, in
// stages: links (create, enslave, MTU, up/down), routes no longer wanted out,
// addresses, routes in. Each stage compares with what the kernel reports and
// writes only the difference, so a second pass with the same Spec writes
// nothing. It is not safe for concurrent use.
type Reconciler struct {
	k   Kernel
	log *slog.Logger
	// owned lists, by link name, the addresses this Reconciler added (or
	// found already there when the Spec asked for them).
	owned map[string][]netip.Prefix
	// foreign holds, by link name, what was last said about a link that has a
	// configured name but is not Kiln's and does not match, so that the warning
	// comes once and not at every reconcile; again when the link or the
	// configuration changes.
	foreign map[string]string
}

// NewReconciler returns a Reconciler working through k.
func NewReconciler(k Kernel, log *slog.Logger) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{k: k, log: log, owned: map[string][]netip.Prefix{}, foreign: map[string]string{}}
}

// Reconcile applies spec and returns the links it resolved to (for DHCP).
// It goes as far as it can and reports every failure.
func (r *Reconciler) Reconcile(spec Spec) ([]LinkSpec, error) {
	specs, err := r.Resolve(spec)
	if err != nil {
		return nil, err
	}
	return specs, r.ReconcileLinks(specs)
}

// Resolve matches spec to the kernel's links (ResolveLinks), without a write.
func (r *Reconciler) Resolve(spec Spec) ([]LinkSpec, error) {
	ls, err := r.k.LinkList()
	if err != nil {
		return nil, err
	}
	return ResolveLinks(spec, ls, r.k.Driver, r.log), nil
}

// ReconcileLinks applies resolved specs (from Resolve). It goes as far as it
// can and reports every failure.
func (r *Reconciler) ReconcileLinks(specs []LinkSpec) error {
	var errs []error
	t, err := r.links(specs)
	if err != nil {
		errs = append(errs, err)
	}
	if t == nil {
		return errors.Join(errs...)
	}
	want := wantedRoutes(specs, t)
	wantSet := map[routeKey]bool{}
	for _, k := range want {
		wantSet[k] = true
	}
	have, err := r.k.RouteList()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := r.removeRoutes(wantSet, have); err != nil {
		errs = append(errs, err)
	}
	if err := r.addresses(specs, t); err != nil {
		errs = append(errs, err)
	}
	if have, err = r.k.RouteList(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := r.addRoutes(want, have); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Owns reports whether the Reconciler put p on the link.
func (r *Reconciler) Owns(link string, p netip.Prefix) bool {
	return slices.Contains(r.owned[link], p)
}

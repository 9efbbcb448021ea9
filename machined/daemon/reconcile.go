package daemon

import (
	"context"
	"fmt"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/server"
)

// reconciler brings one part of the node in line with a configuration; a nil
// configuration is maintenance mode. Reconcilers are idempotent: the same
// list is run to apply a configuration and to restore the previous one.
type reconciler struct {
	name string
	run  func(ctx context.Context, cfg *config.Config) error
}

// reconcilers is everything a configuration drives, in order. The identity
// comes first because it is the likeliest to fail (a bad CA) and the
// cheapest to undo.
func (d *Daemon) reconcilers() []reconciler {
	return []reconciler{
		{"identity", d.reconcileIdentity},
		{"hostname", d.reconcileHostname},
		{"network", d.reconcileNetwork},
		{"services", d.reconcileServices},
	}
}

// reconcile runs every reconciler for cfg. Called with d.mu held.
func (d *Daemon) reconcile(ctx context.Context, cfg *config.Config) error {
	return d.reconcileSome(ctx, cfg, func(string) bool { return true })
}

// reconcileSome runs, in order, the reconcilers for cfg whose name want accepts.
// Called with d.mu held.
func (d *Daemon) reconcileSome(ctx context.Context, cfg *config.Config, want func(name string) bool) error {
	for _, r := range d.reconcilers() {
		if !want(r.name) {
			continue
		}
		if err := r.run(ctx, cfg); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	return nil
}

// reconcileIdentity switches the API between maintenance mode and the
// node's configured identity, live on the same listener.
func (d *Daemon) reconcileIdentity(_ context.Context, cfg *config.Config) error {
	if cfg == nil {
		return d.srv.SetIdentity(server.Identity{Certificate: d.maintenanceCert, Maintenance: true})
	}
	id, err := d.configuredIdentity(cfg)
	if err != nil {
		return err
	}
	return d.srv.SetIdentity(id)
}

// reconcileHostname records the host name (the configured one, else the
// fallback) and hands it to the system's HostnameSetter, if there is one.
func (d *Daemon) reconcileHostname(_ context.Context, cfg *config.Config) error {
	name := ""
	if cfg != nil {
		name = cfg.Hostname()
	}
	if name == "" {
		name = d.opts.FallbackHostname
	}
	if name == d.hostname {
		return nil
	}
	if d.opts.Hostname != nil && name != "" {
		if err := d.opts.Hostname.SetHostname(name); err != nil {
			return fmt.Errorf("set host name %q: %w", name, err)
		}
	}
	d.hostname = name
	return nil
}

// reconcileNetwork hands the configuration to the host network, if machined
// manages one (node mode).
func (d *Daemon) reconcileNetwork(ctx context.Context, cfg *config.Config) error {
	if d.opts.Network == nil {
		return nil
	}
	return d.opts.Network.Reconcile(ctx, cfg)
}

package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// reconcileServices makes the supervised extension services those of cfg.
func (d *Daemon) reconcileServices(ctx context.Context, cfg *config.Config) error {
	var specs []supervisor.Spec
	if cfg != nil {
		for _, s := range cfg.Services {
			specs = append(specs, serviceSpec(s))
		}
	}
	return d.sup.Reconcile(ctx, specs)
}

// serviceSpec turns a ServiceConfig document into what the supervisor runs.
func serviceSpec(s *config.ServiceConfig) supervisor.Spec {
	spec := supervisor.Spec{
		ID:        s.Name,
		Kind:      supervisor.KindExtension,
		Command:   s.Command,
		Args:      s.Args,
		Env:       envList(s.Environment),
		DependsOn: s.DependsOn,
		Restart:   supervisor.RestartPolicy(s.Restart),
	}
	if h := s.HealthCheck; h != nil {
		spec.Health = &supervisor.HealthCheck{
			Exec:     h.Exec,
			TCP:      h.TCP,
			Interval: h.Interval,
			Timeout:  h.Timeout,
		}
	}
	return spec
}

// envList turns an environment map into KEY=VALUE entries, sorted so that an
// unchanged service compares equal and is not restarted.
func envList(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// serviceEvent publishes a service's state change on the bus.
func (d *Daemon) serviceEvent(st supervisor.Status, ev supervisor.Event) {
	state := fmt.Sprint(ev.State)
	msg := fmt.Sprintf("%s: %s", st.ID, state)
	if ev.Message != "" {
		msg += ": " + ev.Message
	}
	d.bus.Publish("service.state", msg, map[string]string{"service": st.ID, "kind": st.Kind, "state": state})
}

// Services lists the supervised services.
func (d *Daemon) Services(context.Context) ([]supervisor.Status, error) {
	return d.sup.List(), nil
}

// StartService starts a service.
func (d *Daemon) StartService(_ context.Context, id string) error { return d.sup.Start(id) }

// StopService stops a service.
func (d *Daemon) StopService(_ context.Context, id string) error { return d.sup.Stop(id) }

// RestartService restarts a service.
func (d *Daemon) RestartService(_ context.Context, id string) error { return d.sup.Restart(id) }

// ServiceLog returns the log of a service.
func (d *Daemon) ServiceLog(_ context.Context, id string) (server.LogSource, error) {
	l, err := d.sup.Log(id)
	if err != nil {
		return nil, err
	}
	return l, nil
}

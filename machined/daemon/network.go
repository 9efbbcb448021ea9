package daemon

import (
	"context"
	"os"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/networking"
	"github.com/kiln-os/kiln/networking/resolv"
	"github.com/kiln-os/kiln/networking/timesync"
)

// NetworkReporter is a Network that reports the state it manages (a node's).
type NetworkReporter interface {
	Status() (networking.Status, error)
	Names() networking.Names
	TimeStatus() timesync.Status
	LeaseStatus() []networking.LeaseStatus
}

// NetworkStatus reads the host network of machined's namespace. A node
// reports what its network controller manages (address sources, names, time
// sync); in process mode machined manages none of it and only reads.
func (d *Daemon) NetworkStatus(context.Context) (*server.NetworkStatus, error) {
	if r, ok := d.opts.Network.(NetworkReporter); ok {
		st, err := r.Status()
		if err != nil {
			return nil, err
		}
		out := toServerStatus(st, r.Names(), r.TimeStatus())
		for _, l := range r.LeaseStatus() {
			out.Leases = append(out.Leases, toServerLease(l))
		}
		return out, nil
	}
	st, err := networking.ReadStatus(networking.NewNetlinkKernel(nil), nil)
	if err != nil {
		return nil, err
	}
	names := networking.Names{Hostname: d.Hostname()}
	if names.Hostname != "" {
		names.HostnameSource = networking.SourceConfig
	}
	if data, err := os.ReadFile(resolv.DefaultPath); err == nil {
		names.Nameservers, names.Search = resolv.Parse(data)
	}
	return toServerStatus(st, names, timesync.Status{}), nil
}

func toServerStatus(st networking.Status, n networking.Names, ts timesync.Status) *server.NetworkStatus {
	out := &server.NetworkStatus{
		Nameservers: n.Nameservers, Search: n.Search, NameserverSource: n.NameserverSource,
		Hostname: n.Hostname, HostnameSource: n.HostnameSource,
		Time: server.TimeStatus{
			Enabled: ts.Enabled, Synced: ts.Synced, Servers: ts.Servers, Server: ts.Server,
			Offset: ts.Offset, Delay: ts.Delay, Stratum: ts.Stratum, LastSync: ts.LastSync,
			LastError: ts.LastError, Steps: ts.Steps, Slews: ts.Slews,
		},
	}
	for _, l := range st.Links {
		out.Links = append(out.Links, server.NetLink{Name: l.Name, Type: l.Type, HardwareAddr: l.HardwareAddr,
			Master: l.Master, Index: l.Index, MTU: l.MTU, Up: l.Up, Carrier: l.Carrier, Managed: l.Managed})
	}
	for _, a := range st.Addresses {
		out.Addresses = append(out.Addresses, server.NetAddress{Link: a.Link, Prefix: a.Prefix, Scope: a.Scope,
			Source: a.Source, Dynamic: a.Dynamic})
	}
	for _, r := range st.Routes {
		out.Routes = append(out.Routes, server.NetRoute{Link: r.Link, Dst: r.Dst, Gateway: r.Gateway, Source: r.Source,
			Metric: r.Metric, Protocol: r.Protocol, Scope: r.Scope})
	}
	return out
}

func toServerLease(l networking.LeaseStatus) server.NetLease {
	out := server.NetLease{
		Link: l.Link, Family: l.Family, Address: l.Addr, Gateway: l.Gateway, DNS: l.DNS, Domain: l.Domain,
		Search: l.Search, Hostname: l.Hostname, MTU: l.MTU, Server: l.Server,
		Obtained: l.Obtained, Renew: l.Renew, Rebind: l.Rebind, Expires: l.Expires,
	}
	for _, r := range l.Routes {
		out.Routes = append(out.Routes, server.NetLeaseRoute{Dst: r.Dst, Gateway: r.Gateway})
	}
	return out
}

// ControllerNetwork adapts a networking.Controller (and, optionally, a time
// sync service) to the daemon's Network seam.
type ControllerNetwork struct {
	C    *networking.Controller
	Time *timesync.Service // nil: no time sync
}

// Reconcile applies the network and time parts of cfg.
func (w ControllerNetwork) Reconcile(ctx context.Context, cfg *config.Config) error {
	spec, err := networking.SpecFromConfig(cfg)
	if err != nil {
		return err
	}
	if w.Time != nil {
		var servers []string
		if cfg != nil && !cfg.Machine.Machine.Time.Disabled {
			servers = cfg.Machine.Machine.Time.Servers
		}
		w.Time.Apply(servers)
	}
	return w.C.Apply(ctx, spec)
}

// WaitAddress waits for a global address.
func (w ControllerNetwork) WaitAddress(ctx context.Context) bool { return w.C.WaitAddress(ctx) }

// Status implements NetworkReporter.
func (w ControllerNetwork) Status() (networking.Status, error) { return w.C.Status() }

// Names implements NetworkReporter.
func (w ControllerNetwork) Names() networking.Names { return w.C.Names() }

// LeaseStatus implements NetworkReporter.
func (w ControllerNetwork) LeaseStatus() []networking.LeaseStatus { return w.C.LeaseStatus() }

// TimeStatus implements NetworkReporter.
func (w ControllerNetwork) TimeStatus() timesync.Status {
	if w.Time == nil {
		return timesync.Status{}
	}
	return w.Time.Status()
}

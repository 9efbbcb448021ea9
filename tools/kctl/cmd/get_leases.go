package cmd

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

// leaseRow is one DHCP lease as -o json|yaml prints it.
type leaseRow struct {
	Node     string          `json:"node" yaml:"node"`
	Link     string          `json:"link" yaml:"link"`
	Family   string          `json:"family" yaml:"family"`
	Address  string          `json:"address" yaml:"address"`
	Gateway  string          `json:"gateway,omitempty" yaml:"gateway,omitempty"`
	Routes   []leaseRouteRow `json:"routes,omitempty" yaml:"routes,omitempty"`
	DNS      []string        `json:"dns,omitempty" yaml:"dns,omitempty"`
	Domain   string          `json:"domain,omitempty" yaml:"domain,omitempty"`
	Search   []string        `json:"search,omitempty" yaml:"search,omitempty"`
	Hostname string          `json:"hostname,omitempty" yaml:"hostname,omitempty"`
	MTU      uint32          `json:"mtu,omitempty" yaml:"mtu,omitempty"`
	Server   string          `json:"server,omitempty" yaml:"server,omitempty"`
	Obtained *time.Time      `json:"obtained,omitempty" yaml:"obtained,omitempty"`
	Renew    *time.Time      `json:"renew,omitempty" yaml:"renew,omitempty"`
	Rebind   *time.Time      `json:"rebind,omitempty" yaml:"rebind,omitempty"`
	Expires  *time.Time      `json:"expires,omitempty" yaml:"expires,omitempty"`
}

// leaseRouteRow is a route a lease installs.
type leaseRouteRow struct {
	Destination string `json:"destination" yaml:"destination"`
	Gateway     string `json:"gateway,omitempty" yaml:"gateway,omitempty"`
}

func optTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

func timeCell(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func leaseRows(node string, r *machine.LeasesResponse) []leaseRow {
	var out []leaseRow
	for _, l := range r.GetLeases() {
		row := leaseRow{Node: node, Link: l.GetLink(), Family: l.GetFamily(), Address: l.GetAddress(), Gateway: l.GetGateway(),
			DNS: l.GetDns(), Domain: l.GetDomain(), Search: l.GetSearch(), Hostname: l.GetHostname(), MTU: l.GetMtu(),
			Server: l.GetServer(), Obtained: optTime(l.GetObtained()), Renew: optTime(l.GetRenew()),
			Rebind: optTime(l.GetRebind()), Expires: optTime(l.GetExpires())}
		for _, rt := range l.GetRoutes() {
			row.Routes = append(row.Routes, leaseRouteRow{Destination: rt.GetDestination(), Gateway: rt.GetGateway()})
		}
		out = append(out, row)
	}
	return out
}

func newGetLeasesCommand(g *globals) *cobra.Command {
	return getView(g, "leases", "List the DHCPv4 and DHCPv6 leases of each node with their options",
		func(ctx context.Context, c *client.Client) (*machine.LeasesResponse, error) {
			return c.Leases(ctx, &machine.LeasesRequest{})
		},
		leaseRows,
		[]string{"NODE", "LINK", "FAMILY", "ADDRESS", "GATEWAY", "DNS", "SERVER", "RENEW", "EXPIRES"},
		func(l leaseRow) []string {
			return []string{l.Node, l.Link, l.Family, l.Address, l.Gateway, strings.Join(l.DNS, ","), l.Server,
				timeCell(l.Renew), timeCell(l.Expires)}
		})
}

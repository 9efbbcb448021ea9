package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// TestNetworkViews: a reader sees links, addresses, routes, resolvers, host
// name and time status as the Machine reports them.
func TestNetworkViews(t *testing.T) {
	e := startServer(t, false)
	c := readerClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for _, tt := range []struct {
		name string
		call func() (proto.Message, error)
		want proto.Message
	}{
		{"Links", func() (proto.Message, error) { return c.Links(ctx, &machine.LinksRequest{}) }, &machine.LinksResponse{Links: []*machine.Link{
			{Name: "lo", Index: 1, Type: "device", Mtu: 65536, Up: true, Carrier: true},
			{Name: "bond0", Index: 4, Type: "bond", HardwareAddr: "52:54:00:12:34:56", Mtu: 1500, Up: true, Carrier: true, Managed: true},
		}}},
		{"Addresses", func() (proto.Message, error) { return c.Addresses(ctx, &machine.AddressesRequest{}) }, &machine.AddressesResponse{
			Addresses: []*machine.Address{{Link: "bond0", Address: "10.0.0.2/24", Scope: "global", Source: "config"}}}},
		{"Routes", func() (proto.Message, error) { return c.Routes(ctx, &machine.RoutesRequest{}) }, &machine.RoutesResponse{
			Routes: []*machine.Route{{Link: "bond0", Destination: "0.0.0.0/0", Gateway: "10.0.0.1", Metric: 100, Protocol: "kiln", Scope: "global"}}}},
		{"Resolvers", func() (proto.Message, error) { return c.Resolvers(ctx, &machine.ResolversRequest{}) }, &machine.ResolversResponse{
			Nameservers: []string{"10.0.0.53"}, Search: []string{"example.com"}, Source: "config"}},
		{"Hostname", func() (proto.Message, error) { return c.Hostname(ctx, &machine.HostnameRequest{}) }, &machine.HostnameResponse{
			Hostname: "cp-1", Source: "config"}},
		{"TimeStatus", func() (proto.Message, error) { return c.TimeStatus(ctx, &machine.TimeStatusRequest{}) }, &machine.TimeStatusResponse{
			Enabled: true, Synced: true, Servers: []string{"10.0.0.123"}, Server: "10.0.0.123",
			Offset: durationpb.New(1500 * time.Microsecond), Delay: durationpb.New(300 * time.Microsecond), Stratum: 2,
			LastSync: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)), Steps: 1, Slews: 3}},
		{"Leases", func() (proto.Message, error) { return c.Leases(ctx, &machine.LeasesRequest{}) }, &machine.LeasesResponse{
			Leases: []*machine.Lease{
				{Link: "bond0", Family: "ipv4", Address: "10.0.0.9/24", Gateway: "10.0.0.1",
					Routes: []*machine.LeaseRoute{{Destination: "0.0.0.0/0", Gateway: "10.0.0.1"}},
					Dns:    []string{"10.0.0.53"}, Domain: "example.com", Hostname: "cp-1", Mtu: 1500, Server: "10.0.0.1",
					Obtained: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)),
					Renew:    timestamppb.New(time.Date(2026, 11, 28, 12, 30, 0, 0, time.UTC)),
					Rebind:   timestamppb.New(time.Date(2026, 11, 28, 12, 52, 30, 0, time.UTC)),
					Expires:  timestamppb.New(time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC))},
				{Link: "bond0", Family: "ipv6", Address: "2001:db8::9/128", Dns: []string{"2001:db8::53"}, Server: "00030001020000000001",
					Obtained: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)),
					Expires:  timestamppb.New(time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC))},
			}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.name, diff)
			}
		})
	}
}

package cmd

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// netNode answers the network views from fixed data.
type netNode struct {
	machine.UnimplementedMachineServiceServer
}

func (netNode) Links(context.Context, *machine.LinksRequest) (*machine.LinksResponse, error) {
	return &machine.LinksResponse{Links: []*machine.Link{
		{Name: "lo", Index: 1, Type: "device", Mtu: 65536, Up: true, Carrier: true},
		{Name: "bond0", Index: 4, Type: "bond", HardwareAddr: "52:54:00:12:34:56", Mtu: 1500, Up: true, Carrier: true, Managed: true},
	}}, nil
}

func (netNode) Addresses(context.Context, *machine.AddressesRequest) (*machine.AddressesResponse, error) {
	return &machine.AddressesResponse{Addresses: []*machine.Address{
		{Link: "bond0", Address: "10.0.0.2/24", Scope: "global", Source: "config"},
		{Link: "eth2", Address: "192.0.2.10/24", Scope: "global", Source: "dhcp", Dynamic: true},
	}}, nil
}

func (netNode) Routes(context.Context, *machine.RoutesRequest) (*machine.RoutesResponse, error) {
	return &machine.RoutesResponse{Routes: []*machine.Route{
		{Link: "bond0", Destination: "0.0.0.0/0", Gateway: "10.0.0.1", Source: "10.0.0.2", Metric: 100, Protocol: "kiln", Scope: "global"},
	}}, nil
}

func (netNode) Resolvers(context.Context, *machine.ResolversRequest) (*machine.ResolversResponse, error) {
	return &machine.ResolversResponse{Nameservers: []string{"10.0.0.53", "10.0.0.54"}, Search: []string{"example.com"}, Source: "config"}, nil
}

func (netNode) Hostname(context.Context, *machine.HostnameRequest) (*machine.HostnameResponse, error) {
	return &machine.HostnameResponse{Hostname: "kiln-123456", Source: "mac"}, nil
}

func (netNode) TimeStatus(context.Context, *machine.TimeStatusRequest) (*machine.TimeStatusResponse, error) {
	return &machine.TimeStatusResponse{Enabled: true, Synced: true, Servers: []string{"10.0.0.123"}, Server: "10.0.0.123",
		Offset: durationpb.New(1500 * time.Microsecond), Delay: durationpb.New(300 * time.Microsecond), Stratum: 2,
		LastSync: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)), Steps: 1, Slews: 3}, nil
}

func (netNode) Leases(context.Context, *machine.LeasesRequest) (*machine.LeasesResponse, error) {
	return &machine.LeasesResponse{Leases: []*machine.Lease{
		{Link: "eth2", Family: "ipv4", Address: "192.0.2.10/24", Gateway: "192.0.2.1",
			Routes: []*machine.LeaseRoute{{Destination: "0.0.0.0/0", Gateway: "192.0.2.1"}},
			Dns:    []string{"192.0.2.53"}, Domain: "example.com", Mtu: 1500, Server: "192.0.2.1",
			Obtained: timestamppb.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)),
			Renew:    timestamppb.New(time.Date(2026, 11, 28, 12, 30, 0, 0, time.UTC)),
			Rebind:   timestamppb.New(time.Date(2026, 11, 28, 12, 52, 30, 0, time.UTC)),
			Expires:  timestamppb.New(time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC))},
		{Link: "eth2", Family: "ipv6", Address: "2001:db8::10/128", Dns: []string{"2001:db8::53"}, Server: "0003000102",
			Expires: timestamppb.New(time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC))},
	}}, nil
}

func startNetNode(t *testing.T) string {
	t.Helper()
	return serveFake(t, "net", netNode{})
}

func TestGetNetworkViews(t *testing.T) {
	isolate(t)
	node := startNetNode(t)
	pad := func(s string) string { return s + strings.Repeat(" ", len(node)-len(s)) } // NODE column
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "links"}, pad("NODE") + "   LINK    TYPE     HWADDR              MTU     STATE   CARRIER   MASTER   KILN\n" +
			node + "   lo      device   -                   65536   up      yes       -        no\n" +
			node + "   bond0   bond     52:54:00:12:34:56   1500    up      yes       -        yes\n"},
		{[]string{"get", "addresses"}, pad("NODE") + "   LINK    ADDRESS         SCOPE    SOURCE   DYNAMIC\n" +
			node + "   bond0   10.0.0.2/24     global   config   no\n" +
			node + "   eth2    192.0.2.10/24   global   dhcp     yes\n"},
		{[]string{"get", "routes"}, pad("NODE") + "   LINK    DESTINATION   GATEWAY    SOURCE     METRIC   PROTOCOL   SCOPE\n" +
			node + "   bond0   0.0.0.0/0     10.0.0.1   10.0.0.2   100      kiln       global\n"},
		{[]string{"get", "resolvers"}, pad("NODE") + "   NAMESERVERS           SEARCH        SOURCE\n" +
			node + "   10.0.0.53,10.0.0.54   example.com   config\n"},
		{[]string{"get", "hostname", "-o", "yaml"}, "- node: " + node + "\n  hostname: kiln-123456\n  source: mac\n"},
		{[]string{"get", "leases"}, pad("NODE") + "   LINK   FAMILY   ADDRESS            GATEWAY     DNS            SERVER       RENEW                  EXPIRES\n" +
			node + "   eth2   ipv4     192.0.2.10/24      192.0.2.1   192.0.2.53     192.0.2.1    2026-11-28T12:30:00Z   2026-11-28T13:00:00Z\n" +
			node + "   eth2   ipv6     2001:db8::10/128   -           2001:db8::53   0003000102   -                      2026-11-28T14:00:00Z\n"},
		{[]string{"get", "leases", "-o", "yaml"}, "- node: " + node + "\n  link: eth2\n  family: ipv4\n  address: 192.0.2.10/24\n  gateway: 192.0.2.1\n" +
			"  routes:\n    - destination: 0.0.0.0/0\n      gateway: 192.0.2.1\n  dns:\n    - 192.0.2.53\n  domain: example.com\n  mtu: 1500\n" +
			"  server: 192.0.2.1\n  obtained: 2026-11-28T12:00:00Z\n  renew: 2026-11-28T12:30:00Z\n  rebind: 2026-11-28T12:52:30Z\n" +
			"  expires: 2026-11-28T13:00:00Z\n- node: " + node + "\n  link: eth2\n  family: ipv6\n  address: 2001:db8::10/128\n  dns:\n    - 2001:db8::53\n" +
			"  server: \"0003000102\"\n  expires: 2026-11-28T14:00:00Z\n"},
		{[]string{"get", "timestatus"}, pad("NODE") + "   ENABLED   SYNCED   SERVER       OFFSET   STRATUM   LAST SYNC              ERROR\n" +
			node + "   yes       yes      10.0.0.123   1.5ms    2         2026-11-28T12:00:00Z   -\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"--insecure", "-n", node}, tt.args...)
			stdout, stderr, err := kctl(t, args...)
			if err != nil {
				t.Fatalf("kctl %v: %v\n%s", args, err, stderr)
			}
			if diff := cmp.Diff(tt.want, stdout); diff != "" {
				t.Errorf("kctl %v (-want +got):\n%s", args, diff)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		stdout, stderr, err := kctl(t, "--insecure", "-n", node, "get", "routes", "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		var got []routeRow
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("-o json is not JSON: %v\n%s", err, stdout)
		}
		want := []routeRow{{Node: node, Link: "bond0", Destination: "0.0.0.0/0", Gateway: "10.0.0.1", Source: "10.0.0.2",
			Metric: 100, Protocol: "kiln", Scope: "global"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("routes -o json (-want +got):\n%s", diff)
		}
	})
}

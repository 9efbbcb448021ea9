package networking

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/networking/dhcp"
	"github.com/kiln-os/kiln/networking/link"
)

var cmpNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestSpecFromConfig(t *testing.T) {
	if s, err := SpecFromConfig(nil); err != nil || !s.Auto() {
		t.Errorf("SpecFromConfig(nil) = %+v, %v; want an automatic Spec", s, err)
	}
	cfg := &config.Config{Machine: &config.MachineConfig{}}
	cfg.Machine.Machine.Hostname = "cp1"
	cfg.Machine.Machine.Network = config.NetworkConfig{
		Nameservers: []string{"10.0.0.53"},
		Interfaces: []config.InterfaceConfig{
			{Interface: "eth0", Addresses: []string{"10.0.0.2/24", "fd00::2/64"}, MTU: 1450,
				Routes: []config.Route{{Network: "0.0.0.0/0", Gateway: "10.0.0.1", Metric: 100}}},
			{DeviceSelector: &config.DeviceSelector{HardwareAddr: "52:54:00:12:34:56"}, DHCP: true, DHCP6: true},
		},
	}
	got, err := SpecFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	want := Spec{
		Hostname:    "cp1",
		Nameservers: []netip.Addr{netip.MustParseAddr("10.0.0.53")},
		Interfaces: []Interface{
			{Name: "eth0", MTU: 1450,
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24"), netip.MustParsePrefix("fd00::2/64")},
				Routes:    []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1"), Metric: 100}}},
			{HardwareAddr: mac, DHCP: true, DHCP6: true},
		},
	}
	if diff := cmp.Diff(want, got, cmpNetip); diff != "" {
		t.Errorf("SpecFromConfig (-want +got):\n%s", diff)
	}
	if got.Auto() {
		t.Error("a Spec with interfaces is automatic")
	}

	for name, mutate := range map[string]func(c *config.Config){
		"bad nameserver": func(c *config.Config) { c.Machine.Machine.Network.Nameservers = []string{"ten"} },
		"bad address":    func(c *config.Config) { c.Machine.Machine.Network.Interfaces[0].Addresses = []string{"10.0.0.300/24"} },
		"bad gateway":    func(c *config.Config) { c.Machine.Machine.Network.Interfaces[0].Routes[0].Gateway = "x" },
	} {
		t.Run(name, func(t *testing.T) {
			c := &config.Config{Machine: &config.MachineConfig{}}
			c.Machine.Machine.Network = config.NetworkConfig{Interfaces: []config.InterfaceConfig{
				{Interface: "eth0", Routes: []config.Route{{Network: "0.0.0.0/0"}}},
			}}
			mutate(c)
			if _, err := SpecFromConfig(c); err == nil {
				t.Errorf("SpecFromConfig succeeded, want an error")
			}
		})
	}
}

func TestLeaseRoutes(t *testing.T) {
	addr := netip.MustParsePrefix("10.0.2.15/24")
	for _, tt := range []struct {
		name  string
		lease dhcp.Lease
		want  []link.Route
	}{
		{"no router", dhcp.Lease{Addr: addr}, nil},
		{"router", dhcp.Lease{Addr: addr, Router: netip.MustParseAddr("10.0.2.2")}, []link.Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.2.2"), Source: addr.Addr(), Metric: dhcpRouteMetric},
		}},
		// RFC 3442: with classless static routes the router option is ignored.
		{"classless", dhcp.Lease{Addr: addr, Router: netip.MustParseAddr("10.0.2.2"), StaticNets: []dhcp.StaticRoute{
			{Dst: netip.MustParsePrefix("10.0.2.0/24"), Gateway: netip.MustParseAddr("0.0.0.0")},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.2.3")},
		}}, []link.Route{
			{Dst: netip.MustParsePrefix("10.0.2.0/24"), Source: addr.Addr(), Metric: dhcpRouteMetric},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.2.3"), Source: addr.Addr(), Metric: dhcpRouteMetric},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, leaseRoutes(&tt.lease), cmpNetip); diff != "" {
				t.Errorf("leaseRoutes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpecFromConfigBondVLANDriver(t *testing.T) {
	cfg := &config.Config{Machine: &config.MachineConfig{}}
	cfg.Machine.Machine.Network = config.NetworkConfig{
		Interfaces: []config.InterfaceConfig{
			{Interface: "bond0", Bond: &config.BondConfig{Mode: config.Bond8023AD, Interfaces: []string{"eth0", "eth1"}},
				Addresses: []string{"10.0.0.2/24"},
				VLANs: []config.VLANConfig{{VLANID: 10, DHCP: true, DHCP6: true, MTU: 1400,
					Routes: []config.Route{{Network: "10.20.0.0/16", Gateway: "10.10.0.1", Source: "10.10.0.2", Metric: 5}}}}},
			{DeviceSelector: &config.DeviceSelector{Driver: "e1000e"}, Down: true},
		},
		ExtraHosts: []config.ExtraHost{{IP: "10.0.0.5", Aliases: []string{"db"}}},
	}
	got, err := SpecFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		ExtraHosts: []Host{{IP: netip.MustParseAddr("10.0.0.5"), Aliases: []string{"db"}}},
		Interfaces: []Interface{
			{Name: "bond0", Bond: &Bond{Mode: "802.3ad", Members: []string{"eth0", "eth1"}},
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24")},
				VLANs: []VLAN{{ID: 10, DHCP: true, DHCP6: true, MTU: 1400, Routes: []Route{{Dst: netip.MustParsePrefix("10.20.0.0/16"),
					Gateway: netip.MustParseAddr("10.10.0.1"), Source: netip.MustParseAddr("10.10.0.2"), Metric: 5}}}}},
			{Driver: "e1000e", Down: true},
		},
	}
	if diff := cmp.Diff(want, got, cmpNetip); diff != "" {
		t.Errorf("SpecFromConfig (-want +got):\n%s", diff)
	}
}

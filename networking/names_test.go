package networking

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/networking/dhcp"
)

func TestChooseNames(t *testing.T) {
	leases := map[string]*dhcp.Lease{
		"eth1": {Hostname: "from-eth1", DNS: []netip.Addr{ip("192.0.2.53")}, Domain: "b.example"},
		"eth0": {DNS: []netip.Addr{ip("198.51.100.53"), ip("192.0.2.53")}, Search: []string{"a.example"}},
	}
	leases6 := map[string]*dhcp.Lease6{
		"eth0": {DNS: []netip.Addr{ip("2001:db8::53"), ip("192.0.2.53")}, Search: []string{"v6.example"}},
	}
	for _, tt := range []struct {
		name     string
		hostname string
		servers  []netip.Addr
		leases   map[string]*dhcp.Lease
		leases6  map[string]*dhcp.Lease6
		want     Names
	}{
		{"nothing", "", nil, nil, nil, Names{}},
		{"mac", "", nil, nil, nil, Names{Hostname: "kiln-000001", HostnameSource: SourceMAC}},
		{"config wins", "cp-1", []netip.Addr{ip("10.0.0.53")}, leases, leases6, Names{Hostname: "cp-1", HostnameSource: SourceConfig,
			Nameservers: []netip.Addr{ip("10.0.0.53")}, NameserverSource: SourceConfig}},
		{"dhcp", "", nil, leases, nil, Names{Hostname: "from-eth1", HostnameSource: SourceDHCP,
			Nameservers: []netip.Addr{ip("198.51.100.53"), ip("192.0.2.53")}, NameserverSource: SourceDHCP,
			Search: []string{"a.example", "b.example"}}},
		{"dhcp and dhcp6", "", nil, leases, leases6, Names{Hostname: "from-eth1", HostnameSource: SourceDHCP,
			Nameservers:      []netip.Addr{ip("198.51.100.53"), ip("192.0.2.53"), ip("2001:db8::53")},
			NameserverSource: SourceDHCP, Search: []string{"a.example", "b.example", "v6.example"}}},
		{"dhcp6 only", "", nil, nil, leases6, Names{Hostname: "kiln-000001", HostnameSource: SourceMAC,
			Nameservers: []netip.Addr{ip("2001:db8::53"), ip("192.0.2.53")}, NameserverSource: SourceDHCP, Search: []string{"v6.example"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fallback := ""
			if tt.name != "nothing" {
				fallback = "kiln-000001"
			}
			got := ChooseNames(tt.hostname, fallback, tt.servers, nil, tt.leases, tt.leases6)
			if diff := cmp.Diff(tt.want, got, cmpNetip); diff != "" {
				t.Errorf("ChooseNames (-want +got):\n%s", diff)
			}
		})
	}
}

// TestControllerWritesNames: resolv.conf, hosts and hostname are written from
// the config, then the host name follows DHCP when the config names none,
// and the kernel's host name is set only when it changes. The kernel is the
// fake: nothing here needs root.
func TestControllerWritesNames(t *testing.T) {
	dir := t.TempDir()
	var set []string
	c := New(Options{
		Kernel:           newFakeKernel("eth0"),
		ResolvConf:       filepath.Join(dir, "resolv.conf"),
		Hosts:            filepath.Join(dir, "hosts"),
		HostnameFile:     filepath.Join(dir, "hostname"),
		SetHostname:      func(n string) error { set = append(set, n); return nil },
		FallbackHostname: "kiln-000001",
	})
	defer c.Close()
	spec := Spec{
		Interfaces:  []Interface{{Name: "eth0", Addresses: []netip.Prefix{pfx("10.0.0.2/24")}}},
		Nameservers: []netip.Addr{ip("10.0.0.53")},
		ExtraHosts:  []Host{{IP: ip("10.0.0.5"), Aliases: []string{"db", "db.example"}}},
	}
	for range 2 {
		if err := c.Apply(context.Background(), spec); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	const header = "# Written by machined (Kiln); changes are overwritten.\n"
	if diff := cmp.Diff(header+"nameserver 10.0.0.53\n", read("resolv.conf")); diff != "" {
		t.Errorf("resolv.conf (-want +got):\n%s", diff)
	}
	wantHosts := header + "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"127.0.1.1\tkiln-000001\n10.0.0.5\tdb db.example\n"
	if diff := cmp.Diff(wantHosts, read("hosts")); diff != "" {
		t.Errorf("hosts (-want +got):\n%s", diff)
	}
	if got := read("hostname"); got != "kiln-000001\n" {
		t.Errorf("hostname = %q", got)
	}

	// A lease with a host name: it replaces the MAC-derived one.
	c.leaseMu.Lock()
	c.leases["eth0"] = &dhcp.Lease{Hostname: "from-dhcp"}
	c.leaseMu.Unlock()
	if err := c.writeNames(); err != nil {
		t.Fatal(err)
	}
	if got := read("hostname"); got != "from-dhcp\n" {
		t.Errorf("hostname after the lease = %q", got)
	}
	if n := c.Names(); n.Hostname != "from-dhcp" || n.HostnameSource != SourceDHCP || n.NameserverSource != SourceConfig {
		t.Errorf("Names() = %+v", n)
	}
	// The config names one: it wins.
	spec.Hostname = "cp-1"
	if err := c.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"kiln-000001", "from-dhcp", "cp-1"}, set); diff != "" {
		t.Errorf("SetHostname calls (-want +got):\n%s", diff)
	}
}

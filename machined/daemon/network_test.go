package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/networking"
	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/netnstest"
)

// withStatic configures one interface with a static address and, if gw is
// set, a default route through it.
func withStatic(name, addr, gw string) func(*config.Config) {
	return func(c *config.Config) {
		ic := config.InterfaceConfig{Interface: name, Addresses: []string{addr}}
		if gw != "" {
			ic.Routes = []config.Route{{Network: "0.0.0.0/0", Gateway: gw}}
		}
		c.Machine.Machine.Network = config.NetworkConfig{Interfaces: []config.InterfaceConfig{ic}}
	}
}

func has(t *testing.T, name, prefix string) bool {
	t.Helper()
	ps, err := link.Addrs(name)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ps, netip.MustParsePrefix(prefix))
}

func hasDefault(t *testing.T, name, gw string) bool {
	t.Helper()
	rs, err := link.Routes(name)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(rs, func(r link.Route) bool {
		return r.Dst.Bits() == 0 && r.Gateway == netip.MustParseAddr(gw)
	})
}

// TestTryNetworkChange: in a private network namespace, a network change
// applied in TRY mode (a new address and a default route through another
// gateway) is in the kernel at once, is reverted when the timeout passes
// unconfirmed, and stays when confirmed.
func TestTryNetworkChange(t *testing.T) {
	if netnstest.InNetNS(t, "applies network configs to a veth pair") {
		return
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kilntry0"}, PeerName: "kilntry0p"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	if err := link.SetUp("kilntry0p"); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	ctl := networking.New(networking.Options{ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), DHCPRetry: 100 * time.Millisecond})
	t.Cleanup(ctl.Close)
	d, err := New(Options{
		Root: root, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), SysBlock: t.TempDir(),
		Network: ControllerNetwork{C: ctl}, NetworkWait: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopDaemon(t, d) })

	good := configBytes(t, withStatic("kilntry0", "192.0.2.2/24", "192.0.2.1"))
	apply(t, d, good, machine.ApplyMode_APPLY_MODE_AUTO)
	if !has(t, "kilntry0", "192.0.2.2/24") || !hasDefault(t, "kilntry0", "192.0.2.1") {
		t.Fatal("the first config is not in the kernel")
	}

	// A wrong gateway, tried: reverted after the timeout.
	wrong := configBytes(t, withStatic("kilntry0", "198.51.100.2/24", "198.51.100.1"))
	sub := d.Events().Subscribe(0)
	defer sub.Close()
	if _, err := d.ApplyConfiguration(ctx, server.ApplyRequest{Data: wrong, Mode: machine.ApplyMode_APPLY_MODE_TRY, TryTimeout: 3 * time.Second}); err != nil {
		t.Fatalf("TRY: %v", err)
	}
	// Checked at once: the 3 s until the rollback are a wide margin, and a
	// machine so slow that it misses it fails here rather than passing wrongly.
	tried := has(t, "kilntry0", "198.51.100.2/24") && hasDefault(t, "kilntry0", "198.51.100.1") && !has(t, "kilntry0", "192.0.2.2/24")
	waitEvent(t, sub, "config.rollback")
	if !tried {
		t.Error("the tried network config was not in the kernel during the try (or the rollback came first)")
	}
	if !has(t, "kilntry0", "192.0.2.2/24") || !hasDefault(t, "kilntry0", "192.0.2.1") {
		t.Error("after the rollback, the first config's address or route is missing")
	}
	if has(t, "kilntry0", "198.51.100.2/24") || hasDefault(t, "kilntry0", "198.51.100.1") {
		t.Error("after the rollback, the tried address or route is still there")
	}

	// Tried and confirmed: it sticks.
	if _, err := d.ApplyConfiguration(ctx, server.ApplyRequest{Data: wrong, Mode: machine.ApplyMode_APPLY_MODE_TRY, TryTimeout: time.Hour}); err != nil {
		t.Fatalf("TRY: %v", err)
	}
	if _, err := d.ConfirmConfiguration(ctx); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	if !has(t, "kilntry0", "198.51.100.2/24") || !hasDefault(t, "kilntry0", "198.51.100.1") || has(t, "kilntry0", "192.0.2.2/24") {
		t.Error("the confirmed network config is not what the kernel has")
	}
	if !slices.Equal(stored(t, root), wrong) {
		t.Error("the confirmed config was not stored")
	}

	// The API reports the managed state.
	st, err := d.NetworkStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var src string
	for _, a := range st.Addresses {
		if a.Link == "kilntry0" && a.Prefix == netip.MustParsePrefix("198.51.100.2/24") {
			src = a.Source
		}
	}
	if src != networking.SourceConfig {
		t.Errorf("NetworkStatus: source of 198.51.100.2/24 = %q, want config", src)
	}
	if st.Hostname != "node-1" || st.HostnameSource != networking.SourceConfig {
		t.Errorf("NetworkStatus host name = %q (%s), want node-1 (config)", st.Hostname, st.HostnameSource)
	}
}

// TestNetworkStatusProcessMode: without a network controller machined still
// reads its namespace's links and routes (it manages none of them).
func TestNetworkStatusProcessMode(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	st, err := d.NetworkStatus(context.Background())
	if err != nil {
		t.Fatalf("NetworkStatus: %v", err)
	}
	if !slices.ContainsFunc(st.Links, func(l server.NetLink) bool { return l.Name == "lo" }) {
		t.Errorf("NetworkStatus links = %+v, want lo among them", st.Links)
	}
	for _, a := range st.Addresses {
		if a.Source != "" {
			t.Errorf("process mode claims address %+v", a)
		}
	}
	if st.Time.Enabled {
		t.Error("process mode reports time sync enabled")
	}
}

// TestLeaseConversion: a lease from the networking controller reaches the
// wire with every option.
func TestLeaseConversion(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		in   networking.LeaseStatus
		want *machine.Lease
	}{
		{"ipv4", networking.LeaseStatus{
			Link: "eth0", Family: "ipv4", Addr: netip.MustParsePrefix("192.0.2.10/24"), Gateway: netip.MustParseAddr("192.0.2.1"),
			Routes: []networking.LeaseRoute{{Dst: netip.MustParsePrefix("198.51.100.0/24")}, {Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("192.0.2.1")}},
			DNS:    []netip.Addr{netip.MustParseAddr("192.0.2.53")}, Domain: "example.org", Search: []string{"a.example"},
			Hostname: "node-1", MTU: 1400, Server: "192.0.2.1",
			Obtained: at, Renew: at.Add(30 * time.Minute), Rebind: at.Add(52 * time.Minute), Expires: at.Add(time.Hour),
		}, &machine.Lease{
			Link: "eth0", Family: "ipv4", Address: "192.0.2.10/24", Gateway: "192.0.2.1",
			Routes: []*machine.LeaseRoute{{Destination: "198.51.100.0/24"}, {Destination: "0.0.0.0/0", Gateway: "192.0.2.1"}},
			Dns:    []string{"192.0.2.53"}, Domain: "example.org", Search: []string{"a.example"}, Hostname: "node-1", Mtu: 1400,
			Server: "192.0.2.1", Obtained: timestamppb.New(at), Renew: timestamppb.New(at.Add(30 * time.Minute)),
			Rebind: timestamppb.New(at.Add(52 * time.Minute)), Expires: timestamppb.New(at.Add(time.Hour)),
		}},
		{"ipv6", networking.LeaseStatus{
			Link: "eth0", Family: "ipv6", Addr: netip.MustParsePrefix("2001:db8::10/128"),
			DNS: []netip.Addr{netip.MustParseAddr("2001:db8::53")}, Server: "00030001020000000001", Obtained: at, Expires: at.Add(2 * time.Hour),
		}, &machine.Lease{
			Link: "eth0", Family: "ipv6", Address: "2001:db8::10/128", Dns: []string{"2001:db8::53"}, Server: "00030001020000000001",
			Obtained: timestamppb.New(at), Expires: timestamppb.New(at.Add(2 * time.Hour)),
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := server.LeaseToProto(toServerLease(tt.in))
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("LeaseToProto(toServerLease(%+v)) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

package networking

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/networking/dhcp"
)

func TestLeaseStatusFromLeases(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		got  LeaseStatus
		want LeaseStatus
	}{
		{"ipv4 with a router", FromLease("eth0", &dhcp.Lease{
			Addr: pfx("192.0.2.10/24"), Router: ip("192.0.2.1"), DNS: []netip.Addr{ip("192.0.2.53")}, Domain: "example.org",
			Hostname: "n1", ServerID: ip("192.0.2.1"), Duration: time.Hour, T1: 30 * time.Minute, T2: 52 * time.Minute,
			Acquired: at, MTU: 1400,
		}), LeaseStatus{
			Link: "eth0", Family: "ipv4", Addr: pfx("192.0.2.10/24"), Gateway: ip("192.0.2.1"),
			Routes: []LeaseRoute{{Dst: pfx("0.0.0.0/0"), Gateway: ip("192.0.2.1")}}, DNS: []netip.Addr{ip("192.0.2.53")},
			Domain: "example.org", Hostname: "n1", MTU: 1400, Server: "192.0.2.1",
			Obtained: at, Renew: at.Add(30 * time.Minute), Rebind: at.Add(52 * time.Minute), Expires: at.Add(time.Hour),
		}},
		{"ipv4 with classless routes", FromLease("eth1", &dhcp.Lease{
			Addr: pfx("198.51.100.7/24"), Router: ip("198.51.100.1"), Duration: time.Hour, Acquired: at,
			StaticNets: []dhcp.StaticRoute{{Dst: pfx("203.0.113.0/24"), Gateway: ip("0.0.0.0")}, {Dst: pfx("0.0.0.0/0"), Gateway: ip("198.51.100.254")}},
		}), LeaseStatus{
			Link: "eth1", Family: "ipv4", Addr: pfx("198.51.100.7/24"), Gateway: ip("198.51.100.1"),
			Routes:   []LeaseRoute{{Dst: pfx("203.0.113.0/24")}, {Dst: pfx("0.0.0.0/0"), Gateway: ip("198.51.100.254")}},
			Obtained: at, Renew: at, Rebind: at, Expires: at.Add(time.Hour),
		}},
		{"ipv6", FromLease6("eth0", &dhcp.Lease6{
			Addr: ip("2001:db8::10"), DNS: []netip.Addr{ip("2001:db8::53")}, Search: []string{"v6.example"}, ServerID: "0003",
			Preferred: time.Hour, Valid: 2 * time.Hour, T1: 30 * time.Minute, T2: 48 * time.Minute, Acquired: at,
		}), LeaseStatus{
			Link: "eth0", Family: "ipv6", Addr: pfx("2001:db8::10/128"), DNS: []netip.Addr{ip("2001:db8::53")},
			Search: []string{"v6.example"}, Server: "0003",
			Obtained: at, Renew: at.Add(30 * time.Minute), Rebind: at.Add(48 * time.Minute), Expires: at.Add(2 * time.Hour),
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got, cmpNetip); diff != "" {
				t.Errorf("lease status (-want +got):\n%s", diff)
			}
		})
	}
}

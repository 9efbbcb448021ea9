package dhcp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestFromACK(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	req, err := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		mods []dhcpv4.Modifier
		want *Lease // nil: an error
	}{
		{"full", []dhcpv4.Modifier{
			dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
			dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
			dhcpv4.WithOption(dhcpv4.OptDomainName("example.org")),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2))),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(20 * time.Minute)),
		}, &Lease{
			Addr: netip.MustParsePrefix("10.0.2.15/24"), Router: netip.MustParseAddr("10.0.2.2"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3")}, Domain: "example.org",
			ServerID: netip.MustParseAddr("10.0.2.2"), Duration: time.Hour,
			T1: 20 * time.Minute, T2: time.Hour * 7 / 8, Acquired: now,
		}},
		{"defaults", []dhcpv4.Modifier{
			dhcpv4.WithYourIP(net.IPv4(192, 168, 1, 9)),
		}, &Lease{
			Addr: netip.MustParsePrefix("192.168.1.9/24"), Duration: defaultLease,
			T1: defaultLease / 2, T2: defaultLease * 7 / 8, Acquired: now,
		}},
		{"no address", nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := dhcpv4.NewReplyFromRequest(req, append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}, tt.mods...)...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := FromACK(ack, now)
			if tt.want == nil {
				if err == nil {
					t.Errorf("FromACK = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			opts := cmp.Options{
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
			}
			if diff := cmp.Diff(tt.want, got, opts); diff != "" {
				t.Errorf("FromACK (-want +got):\n%s", diff)
			}
		})
	}
}

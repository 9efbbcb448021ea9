package dhcp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

func TestFromReply(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	sid := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	ia := func(t1, t2 time.Duration, pref, valid time.Duration, status *dhcpv6.OptStatusCode) dhcpv6.Modifier {
		o := &dhcpv6.OptIANA{T1: t1, T2: t2}
		o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP("2001:db8::10"), PreferredLifetime: pref, ValidLifetime: valid})
		if status != nil {
			o.Options.Add(status)
		}
		return dhcpv6.WithOption(o)
	}
	for _, tt := range []struct {
		name string
		mods []dhcpv6.Modifier
		want *Lease6 // nil: an error
	}{
		{"full", []dhcpv6.Modifier{
			dhcpv6.WithServerID(sid), ia(20*time.Minute, 40*time.Minute, time.Hour, 2*time.Hour, nil),
			dhcpv6.WithDNS(net.ParseIP("2001:db8::53")), dhcpv6.WithDomainSearchList("example.org"),
		}, &Lease6{
			Addr: netip.MustParseAddr("2001:db8::10"), DNS: []netip.Addr{netip.MustParseAddr("2001:db8::53")},
			Search: []string{"example.org"}, ServerID: "00030001020000000001",
			Preferred: time.Hour, Valid: 2 * time.Hour, T1: 20 * time.Minute, T2: 40 * time.Minute, Acquired: now,
		}},
		{"server leaves T1 and T2 to the client", []dhcpv6.Modifier{ia(0, 0, time.Hour, 2*time.Hour, nil)}, &Lease6{
			Addr: netip.MustParseAddr("2001:db8::10"), Preferred: time.Hour, Valid: 2 * time.Hour,
			T1: 30 * time.Minute, T2: 48 * time.Minute, Acquired: now,
		}},
		{"refused", []dhcpv6.Modifier{ia(0, 0, time.Hour, 2*time.Hour, &dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail})}, nil},
		{"no IA_NA", nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := dhcpv6.NewMessage()
			if err != nil {
				t.Fatal(err)
			}
			m.MessageType = dhcpv6.MessageTypeReply
			for _, mod := range tt.mods {
				mod(m)
			}
			got, err := FromReply(m, now)
			if tt.want == nil {
				if err == nil {
					t.Errorf("FromReply = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("FromReply (-want +got):\n%s", diff)
			}
		})
	}
}

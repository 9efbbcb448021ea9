package platform

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNetUDP(t *testing.T) {
	// A bound DNS-like socket on 127.0.0.53:53 (state 07) and a connected
	// one (state 01) that must be left out.
	const table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 2001 2 0000000000000000 0
  2: 0100007F:A2B3 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 2002 2 0000000000000000 0
`
	got, err := ParseNetUDP(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{{Addr: netip.MustParseAddrPort("127.0.0.53:53"), Inode: 2001, UID: 101}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("ParseNetUDP() mismatch (-want +got):\n%s", diff)
	}
}

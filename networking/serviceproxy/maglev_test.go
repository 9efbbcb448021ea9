package serviceproxy

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// maglevBackends are n distinct backends of the family of base.
func maglevBackends(n int, v6 bool) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range out {
		a := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		if v6 {
			a = netip.AddrFrom16([16]byte{0xfd, 0, 2, 14: byte(i >> 8), 15: byte(i)})
		}
		out[i] = netip.AddrPortFrom(a, 8080)
	}
	return out
}

// owners maps a table of indexes into bes to the backends themselves.
func owners(table []int, bes []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, len(table))
	for i, idx := range table {
		out[i] = bes[idx]
	}
	return out
}

func TestMaglevTableDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		v6   bool
		m    int
	}{
		{"1 backend", 1, false, maglevM},
		{"3 IPv4 backends", 3, false, maglevM},
		{"10 IPv6 backends", 10, true, maglevM},
		{"100 IPv4 backends", 100, false, maglevM},
		{"7 backends, small table", 7, false, 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bes := maglevBackends(tc.n, tc.v6)
			want := owners(maglevTable(bes, tc.m), bes)
			if len(want) != tc.m {
				t.Fatalf("table of %d entries, want %d", len(want), tc.m)
			}
			r := rand.New(rand.NewPCG(uint64(tc.n), 1))
			for i := range 5 {
				shuffled := slices.Clone(bes)
				r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				if diff := cmp.Diff(want, owners(maglevTable(shuffled, tc.m), shuffled), cmpServices); diff != "" {
					t.Errorf("shuffle %d: table differs (-first +shuffled):\n%s", i, diff)
				}
			}
		})
	}
	if got := maglevTable(nil, maglevM); got != nil {
		t.Errorf("table of no backends = %v, want nil", got)
	}
}

// TestMaglevTableGolden pins the table a fixed backend set makes: a node that
// computed another one (a changed hash or seed) would disagree with its peers
// running the previous version.
func TestMaglevTableGolden(t *testing.T) {
	bes := maglevBackends(3, false)
	got := maglevTable(bes, maglevM)[:16]
	want := []int{1, 1, 1, 2, 0, 2, 0, 0, 1, 2, 1, 2, 0, 1, 1, 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first entries of the table of %v (-want +got):\n%s", bes, diff)
	}
}

func TestMaglevTableBalance(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 10, 50, 100, 500, maglevM} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			counts := make([]int, n)
			for _, idx := range maglevTable(maglevBackends(n, n%2 == 0), maglevM) {
				counts[idx]++
			}
			// The population is round robin: every backend gets ⌊M/N⌋ or
			// ⌈M/N⌉ entries.
			lo, hi := maglevM/n, (maglevM+n-1)/n
			for i, c := range counts {
				if c < lo || c > hi {
					t.Errorf("backend %d has %d entries, want %d..%d", i, c, lo, hi)
				}
			}
			t.Logf("%d backends: %d..%d entries each (fair share %.2f)", n, slices.Min(counts), slices.Max(counts), float64(maglevM)/float64(n))
		})
	}
}

// TestMaglevTableDisruption removes one backend of n and counts the entries
// that change owner: Maglev moves the removed backend's own ~M/N entries and a
// few more; the ideal is exactly M/N.
func TestMaglevTableDisruption(t *testing.T) {
	for _, n := range []int{3, 5, 10, 20, 50, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			bes := maglevBackends(n, false)
			before := owners(maglevTable(bes, maglevM), bes)
			worst := 0
			for drop := range n {
				rest := slices.Delete(slices.Clone(bes), drop, drop+1)
				after := owners(maglevTable(rest, maglevM), rest)
				moved, own := 0, 0
				for i := range before {
					if before[i] == bes[drop] {
						own++
					}
					if before[i] != after[i] {
						moved++
					}
				}
				// Every entry of the removed backend moves, whatever else.
				if moved < own {
					t.Fatalf("dropping %v: %d entries moved, fewer than its own %d", bes[drop], moved, own)
				}
				worst = max(worst, moved)
			}
			// A generous bound: the removed backend's share and as much
			// again plus 8% of the table: with M only ~20 N at N = 50, Maglev
			// moves several times the ideal share (the paper wants M ≫ N).
			ideal := float64(maglevM) / float64(n)
			bound := int(2*ideal) + maglevM/12
			if worst > bound {
				t.Errorf("removing one of %d backends moved up to %d of %d entries, more than %d (ideal %.0f)", n, worst, maglevM, bound, ideal)
			}
			t.Logf("removing one of %d backends moves at most %d of %d entries (%.1f%%; ideal %.1f%%)",
				n, worst, maglevM, 100*float64(worst)/maglevM, 100/float64(n))
		})
	}
}

func TestParseExternalLB(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    ExternalLB
		wantErr bool
	}{
		{"random", ExternalRandom, false},
		{"maglev", ExternalMaglev, false},
		{"Maglev", 0, true},
		{"", 0, true},
	} {
		got, err := ParseExternalLB(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseExternalLB(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

// flowHash is bpf/tc.c's flow_hash: jhash2 of the client's and the frontend's
// 16-byte addresses (as the program reads them: native words of network-order
// bytes), the ports (network order, the client's in the low half) and the
// protocol, seeded with FLOW_HASH_SEED. fe is the frontend key's address (the
// unspecified one for a NodePort).
func flowHash(client netip.AddrPort, fe netip.AddrPort, proto Proto) uint32 {
	var w [10]uint32
	c, f := addrWords(client.Addr()), addrWords(fe.Addr())
	copy(w[0:4], c[:])
	copy(w[4:8], f[:])
	w[8] = uint32(portNet(client.Port())) | uint32(portNet(fe.Port()))<<16
	w[9] = uint32(proto)
	return jhash2(w[:], 0x6b696c6e)
}

// jhash2 is the kernel's jhash2 (lookup3) over words.
func jhash2(k []uint32, seed uint32) uint32 {
	rol := bits.RotateLeft32
	a := 0xdeadbeef + uint32(len(k))<<2 + seed
	b, c := a, a
	for len(k) > 3 {
		a += k[0]
		b += k[1]
		c += k[2]
		a -= c
		a ^= rol(c, 4)
		c += b
		b -= a
		b ^= rol(a, 6)
		a += c
		c -= b
		c ^= rol(b, 8)
		b += a
		a -= c
		a ^= rol(c, 16)
		c += b
		b -= a
		b ^= rol(a, 19)
		a += c
		c -= b
		c ^= rol(b, 4)
		b += a
		k = k[3:]
	}
	switch len(k) {
	case 3:
		c += k[2]
		fallthrough
	case 2:
		b += k[1]
		fallthrough
	case 1:
		a += k[0]
		c ^= b
		c -= rol(b, 14)
		a ^= c
		a -= rol(c, 11)
		b ^= a
		b -= rol(a, 25)
		c ^= b
		c -= rol(b, 16)
		a ^= c
		a -= rol(c, 4)
		b ^= a
		b -= rol(a, 14)
		c ^= b
		c -= rol(b, 24)
	}
	return c
}

// TestFlowHashGolden pins flowHash: nodes running different versions must
// hash a flow alike. TestTCMaglev checks that bpf/tc.c computes the same.
func TestFlowHashGolden(t *testing.T) {
	got := []uint32{jhash2([]uint32{1}, 0), jhash2([]uint32{1, 2, 3, 4}, 0),
		flowHash(ap("192.0.2.10:40000"), ap("0.0.0.0:30080"), TCP)}
	want := []uint32{0x72a82a9b, 0x66491246, 0x6474aaf3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hashes (-want +got):\n%s", diff)
	}
}

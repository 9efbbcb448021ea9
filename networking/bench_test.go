package networking

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// benchNS makes a named network namespace (so that `ip -n` reaches it too)
// holding an up veth pair, and returns its name and a netlink handle in it.
// The build host's kernel has no dummy links; a veth pair with both ends in
// the namespace serves as well. No packet leaves the namespace.
func benchNS(b *testing.B) (string, *netlink.Handle) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("needs iproute2's ip: the anchor of the comparison")
	}
	name := fmt.Sprintf("kilnbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v\n%s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kb0"}, PeerName: "kb0p"}); err != nil {
		b.Fatal(err)
	}
	for _, n := range []string{"lo", "kb0", "kb0p"} {
		l, err := h.LinkByName(n)
		if err != nil {
			b.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			b.Fatal(err)
		}
	}
	return name, h
}

// benchSpec is 100 addresses and 100 routes on kb0; shift replaces the
// last address by another (the one-address change). Not the first: that is
// the subnet's primary address, and without promote_secondaries the kernel
// drops every secondary address (and their routes) with it.
func benchSpec(shift bool) Spec {
	it := Interface{Name: "kb0"}
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})
		if shift && i == 99 {
			a = netip.AddrFrom4([4]byte{10, 1, 1, 1})
		}
		it.Addresses = append(it.Addresses, netip.PrefixFrom(a, 16))
		it.Routes = append(it.Routes, Route{
			Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24), Gateway: netip.MustParseAddr("10.1.255.1"), Metric: 100,
		})
	}
	return Spec{Interfaces: []Interface{it}}
}

// ipBatch runs `ip -n ns -batch` with the commands for spec (add or del).
func ipBatch(b *testing.B, ns string, spec Spec, op string, addrs, routes bool) {
	b.Helper()
	var sb strings.Builder
	it := spec.Interfaces[0]
	if routes && op == "del" {
		for _, r := range it.Routes {
			fmt.Fprintf(&sb, "route %s %s via %s dev kb0 metric %d\n", op, r.Dst, r.Gateway, r.Metric)
		}
	}
	if addrs {
		as := it.Addresses
		if op == "del" { // secondaries first: the primary takes them along
			as = slices.Clone(as)
			slices.Reverse(as)
		}
		for _, a := range as {
			fmt.Fprintf(&sb, "address %s %s dev kb0\n", op, a)
		}
	}
	if routes && op == "add" {
		for _, r := range it.Routes {
			fmt.Fprintf(&sb, "route %s %s via %s dev kb0 metric %d\n", op, r.Dst, r.Gateway, r.Metric)
		}
	}
	runBatch(b, ns, sb.String())
}

func runBatch(b *testing.B, ns, cmds string) {
	b.Helper()
	f := filepath.Join(b.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(cmds), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", ns, "-batch", f).CombinedOutput(); err != nil {
		b.Fatalf("ip -batch: %v\n%s", err, out)
	}
}

// BenchmarkScratch: 100 addresses and 100 routes on an empty link, by the
// reconciler and by `ip -batch` (one process per round, as a script would).
func BenchmarkScratch(b *testing.B) {
	b.Run("kiln", func(b *testing.B) {
		_, h := benchNS(b)
		k := Counting(NewNetlinkKernel(h))
		r := NewReconciler(k, nil)
		spec := benchSpec(false)
		var writes int64
		for b.Loop() {
			b.StopTimer()
			if _, err := r.Reconcile(Spec{}); err != nil {
				b.Fatal(err)
			}
			before := k.Writes()
			b.StartTimer()
			if _, err := r.Reconcile(spec); err != nil {
				b.Fatal(err)
			}
			writes = k.Writes() - before
		}
		b.ReportMetric(float64(writes), "writes/op")
	})
	b.Run("ip-batch", func(b *testing.B) {
		ns, _ := benchNS(b)
		spec := benchSpec(false)
		ipBatch(b, ns, spec, "add", true, true)
		for b.Loop() {
			b.StopTimer()
			ipBatch(b, ns, spec, "del", true, false) // the routes go with the addresses
			b.StartTimer()
			ipBatch(b, ns, spec, "add", true, true)
		}
	})
}

// BenchmarkOneAddress: one address of the hundred replaced by another.
func BenchmarkOneAddress(b *testing.B) {
	b.Run("kiln", func(b *testing.B) {
		_, h := benchNS(b)
		k := Counting(NewNetlinkKernel(h))
		r := NewReconciler(k, nil)
		specs := []Spec{benchSpec(false), benchSpec(true)}
		if _, err := r.Reconcile(specs[0]); err != nil {
			b.Fatal(err)
		}
		i := 0
		var writes int64
		for b.Loop() {
			i++
			before := k.Writes()
			if _, err := r.Reconcile(specs[i%2]); err != nil {
				b.Fatal(err)
			}
			writes = k.Writes() - before
		}
		b.ReportMetric(float64(writes), "writes/op")
	})
	b.Run("ip-batch", func(b *testing.B) {
		ns, _ := benchNS(b)
		ipBatch(b, ns, benchSpec(false), "add", true, true)
		cmds := []string{
			"address del 10.1.0.100/16 dev kb0\naddress add 10.1.1.1/16 dev kb0\n",
			"address del 10.1.1.1/16 dev kb0\naddress add 10.1.0.100/16 dev kb0\n",
		}
		i := 0
		for b.Loop() {
			runBatch(b, ns, cmds[i%2])
			i++
		}
	})
}

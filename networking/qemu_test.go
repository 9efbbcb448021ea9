package networking

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/netnstest"
	"github.com/kiln-os/kiln/tools/qemu/vmtest"
)

// inKernelTests are the privileged tests TestQemuNetworkingInKernel runs in a guest
// with the kernel a node boots, where VLANs and bonding exist (the build host's kernel
// lacks them, so there the VLAN and bond tests skip).
var inKernelTests = []string{
	"TestVLANAndBondInKernel",
	"TestBond8023adInKernel",
	"TestStaticConverges",
	"TestReconcileIdempotentInKernel",
	"TestDHCPOnFirstLinkWithCarrier",
	"TestDHCPToStaticKeepsAddress",
}

// TestQemuNetworkingInKernel builds this package's tests for amd64 and arm64, boots the
// kernel a node of each boots in QEMU (generic-amd64: Kiln's build, everything built
// in; generic-arm64: Debian's, with 8021q, bonding and veth loaded), with the board's
// command line, runs inKernelTests there as root and requires each to pass, not skip:
// VLANs and bonds (active-backup and 802.3ad with an LACP partner) proven in the
// nodes' kernels.
func TestQemuNetworkingInKernel(t *testing.T) {
	if os.Getenv(vmtest.GuestEnv) == "1" {
		t.Skip("already inside a vmtest guest")
	}
	// RequirePassed looks at top-level results only: netnstest logs the namespace
	// copy's output indented.
	vmtest.RequirePassInNodeKernels(t, "github.com/kiln-os/kiln/networking", inKernelTests,
		vmtest.Options{Modules: []string{"8021q", "bonding", "veth"}})
}

// LACP port state bits (IEEE 802.1AX): the partner's port is in sync with ours and
// collecting and distributing frames.
const lacpInUse = 0x08 | 0x10 | 0x20

// TestBond8023adInKernel makes an 802.3ad bond of two veth links whose peers are an
// 802.3ad bond in another namespace (the LACP partner): both members join one
// aggregator in sync with the partner, TCP works across it, a second pass writes
// nothing, a mode change to active-backup recreates the bond with its members, and
// leaving the Spec removes it. The build host's kernel lacks bonding: there it skips
// (TestQemuNetworkingInKernel runs it in the Debian kernel, where it must pass).
func TestBond8023adInKernel(t *testing.T) {
	if netnstest.InNetNS(t, "creates 802.3ad bonds with an LACP partner") {
		return
	}
	probe := netlink.NewLinkBond(netlink.LinkAttrs{Name: "kilnprobe"})
	if err := netlink.LinkAdd(probe); err != nil {
		t.Skipf("needs a kernel with CONFIG_BONDING: %v", err)
	}
	netlink.LinkDel(probe)

	members := []string{"kilnl1", "kilnl2"}
	peerNS := netnstest.PeerNS(t)
	for _, n := range members {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
			t.Fatalf("add veth: %v", err)
		}
		p, err := netlink.LinkByName(n + "p")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetNsFd(p, int(peerNS)); err != nil {
			t.Fatalf("move veth peer: %v", err)
		}
	}
	// The partner, made with netlink directly (not by the code under test).
	var ln net.Listener
	netnstest.Do(t, peerNS, func() {
		b := netlink.NewLinkBond(netlink.LinkAttrs{Name: "kilnpeer"})
		b.Mode = netlink.BOND_MODE_802_3AD
		b.LacpRate = netlink.BOND_LACP_RATE_FAST
		b.Miimon = 100
		if err := netlink.LinkAdd(b); err != nil {
			t.Fatalf("partner bond: %v", err)
		}
		for _, n := range members {
			p, err := netlink.LinkByName(n + "p")
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.LinkSetMasterByIndex(p, b.Attrs().Index); err != nil {
				t.Fatalf("enslave %s to the partner bond: %v", n+"p", err)
			}
		}
		for _, n := range []string{"lo", "kilnpeer", "kilnl1p", "kilnl2p"} {
			if err := link.SetUp(n); err != nil {
				t.Fatal(err)
			}
		}
		if err := link.ReplaceAddr("kilnpeer", link.Addr{Prefix: pfx("198.51.100.1/24")}); err != nil {
			t.Fatal(err)
		}
		var err error
		if ln, err = net.Listen("tcp", "198.51.100.1:0"); err != nil {
			t.Fatalf("listen in the partner namespace: %v", err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "hello over LACP\n")
			c.Close()
		}
	}()

	k := Counting(NewNetlinkKernel(nil))
	r := NewReconciler(k, testLog(t))
	spec := func(mode string) Spec {
		return Spec{Interfaces: []Interface{{Name: "kilnbond1",
			Bond:      &Bond{Mode: mode, Members: members},
			Addresses: []netip.Prefix{pfx("198.51.100.2/24")}}}}
	}
	if _, err := r.Reconcile(spec(config.Bond8023AD)); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	before := k.Writes()
	if _, err := r.Reconcile(spec(config.Bond8023AD)); err != nil {
		t.Fatal(err)
	}
	if n := k.Writes() - before; n != 0 {
		t.Errorf("second Reconcile made %d writes, want 0", n)
	}
	bondIs := func(mode netlink.BondMode) {
		t.Helper()
		l, err := netlink.LinkByName("kilnbond1")
		if err != nil {
			t.Fatalf("kilnbond1: %v", err)
		}
		b, ok := l.(*netlink.Bond)
		if !ok || b.Mode != mode {
			t.Fatalf("kilnbond1 is %T %+v, want a bond in mode %s", l, l.Attrs(), mode)
		}
		for _, m := range members {
			ml, err := netlink.LinkByName(m)
			if err != nil || ml.Attrs().MasterIndex != b.Attrs().Index {
				t.Errorf("%s is not enslaved to kilnbond1 (%v)", m, err)
			}
		}
		if !hasPrefix(t, "kilnbond1", pfx("198.51.100.2/24")) {
			t.Error("kilnbond1 lacks 198.51.100.2/24")
		}
	}
	bondIs(netlink.BOND_MODE_802_3AD)

	// LACP: both members in one aggregator, the partner in sync, collecting and
	// distributing. Fast LACP rate: this takes a few seconds.
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for {
		var agg []uint16
		var states []uint16
		for _, m := range members {
			ml, err := netlink.LinkByName(m)
			if err != nil {
				t.Fatal(err)
			}
			if s, ok := ml.Attrs().Slave.(*netlink.BondSlave); ok {
				agg = append(agg, s.AggregatorId)
				states = append(states, s.AdPartnerOperPortState)
			}
		}
		if len(agg) == 2 && agg[0] == agg[1] && agg[0] != 0 &&
			states[0]&lacpInUse == lacpInUse && states[1]&lacpInUse == lacpInUse {
			t.Logf("LACP up: aggregator %d, partner port states %#x %#x", agg[0], states[0], states[1])
			break
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile("/proc/net/bonding/kilnbond1")
			t.Fatalf("LACP did not come up: aggregators %v, partner port states %#x\n%s", agg, states, b)
		case <-time.After(200 * time.Millisecond):
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("TCP across the 802.3ad bond: %v", err)
	}
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	c.Close()
	if got := string(buf[:n]); got != "hello over LACP\n" {
		t.Errorf("read %q across the bond", got)
	}

	// A mode change recreates the bond; the members follow.
	if _, err := r.Reconcile(spec(config.BondActiveBackup)); err != nil {
		t.Fatalf("Reconcile active-backup: %v", err)
	}
	bondIs(netlink.BOND_MODE_ACTIVE_BACKUP)

	if _, err := r.Reconcile(Spec{Interfaces: []Interface{{Name: "kilnl1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("kilnbond1"); err == nil {
		t.Error("kilnbond1 still exists after it left the Spec")
	}
	for _, m := range members {
		if ml, err := netlink.LinkByName(m); err != nil || ml.Attrs().MasterIndex != 0 {
			t.Errorf("%s is still enslaved or gone after the bond left the Spec (%v)", m, err)
		}
	}
}

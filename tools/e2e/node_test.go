package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// udpClientPorts are UDP ports a node may have bound as a client (DHCP), which is not
// listening for anyone.
var udpClientPorts = []uint32{68, 546}

// TestDirectBootViewsAndCrash boots the image's kernel and initramfs directly with
// kiln.debug (the switch for debug actions), gives the node its config, then checks:
//
//	(e) the root filesystem is read-only, nothing listens but port 50000, and there
//	    are no links the configuration does not name, from the API's own Mounts,
//	    Netstat and Links views;
//	(d) machined killed inside the guest (DebugAction "crash") → init restarts it and
//	    the API comes back over mTLS.
func TestDirectBootViewsAndCrash(t *testing.T) {
	need(t)
	const hostname = "e2e-direct"
	vm := startVM(t, vmOpts{name: "direct", args: "kiln.debug"})
	addr := vm.Addr()
	r := waitReady(t, vm)
	t.Logf("QEMU start → readiness line (direct boot, maintenance): %s", r.after.Round(time.Millisecond))
	if r.mode != "maintenance" {
		t.Fatalf("readiness line mode = %q, want maintenance", r.mode)
	}
	cp, kc := genConfig(t, "e2e", hostname)
	mustKctl(t, kc, "apply-config", "--insecure", "--cert-fingerprint", r.fingerprint, "-n", addr, "-f", cp)
	if v := waitConfigured(t, kc, addr); v.Hostname != hostname {
		t.Errorf("hostname = %q, want %q", v.Hostname, hostname)
	}
	checkEmulationArgs(t, kc, addr)
	c := adminClient(t, kc, addr)

	t.Run("e_readonly_root_only_api_listens", func(t *testing.T) {
		mounts, err := c.Mounts(callCtx(t), &machine.MountsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var root *machine.Mount
		for _, m := range mounts.GetMounts() {
			if m.GetTarget() == "/" {
				root = m
			}
		}
		if root == nil {
			t.Fatalf("Mounts lists no /: %v", mounts.GetMounts())
		}
		if !slices.Contains(strings.Split(root.GetOptions(), ","), "ro") {
			t.Errorf("/ is mounted %q (%s from %s), want ro", root.GetOptions(), root.GetFstype(), root.GetSource())
		}
		t.Logf("/: %s %s %s", root.GetSource(), root.GetFstype(), root.GetOptions())

		ns, err := c.Netstat(callCtx(t), &machine.NetstatRequest{})
		if err != nil {
			t.Fatal(err)
		}
		api := 0
		for _, s := range ns.GetSockets() {
			p := s.GetProtocol()
			switch {
			case strings.HasPrefix(p, "tcp") && s.GetLocalPort() == 50000:
				api++
			case strings.HasPrefix(p, "udp") && slices.Contains(udpClientPorts, s.GetLocalPort()):
				t.Logf("DHCP client socket: %s %s:%d", p, s.GetLocalAddress(), s.GetLocalPort())
			default:
				t.Errorf("listening: %s %s:%d %s; only port 50000 may listen", p, s.GetLocalAddress(), s.GetLocalPort(), s.GetState())
			}
		}
		if api == 0 {
			t.Errorf("Netstat shows no listener on port 50000: %v", ns.GetSockets())
		}

		// No links but the NIC and loopback: the config names no bond or dummy, and the
		// kernel makes no bond0 or dummy0 of its own (the board's bonding.max_bonds=0,
		// dummy.numdummies=0).
		links, err := c.Links(callCtx(t), &machine.LinksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links.GetLinks() {
			if l.GetType() != "device" && l.GetName() != "lo" {
				t.Errorf("link %s of type %q on a node whose configuration names none", l.GetName(), l.GetType())
			}
		}

		// Once init's drivers child has loaded the late modules and exited, nothing
		// runs but init and machined (kernel threads aside: PID 2 and its children).
		// Their memory is reported, not asserted here.
		var ps *machine.ProcessesResponse
		for deadline := time.Now().Add(bootWait); ; time.Sleep(500 * time.Millisecond) {
			var err error
			if ps, err = c.Processes(callCtx(t), &machine.ProcessesRequest{}); err != nil {
				t.Fatal(err)
			}
			// The child runs init's binary through /proc/self/exe: once it has exited
			// and until init reaps it, it shows as "exe" with no command line.
			loading := slices.ContainsFunc(ps.GetProcesses(), func(p *machine.Process) bool {
				return p.GetPpid() == 1 && (p.GetCommandLine() == "kiln-init:drivers" ||
					p.GetCommandLine() == "" && p.GetName() == "exe")
			})
			if !loading || time.Now().After(deadline) {
				break
			}
		}
		for _, p := range ps.GetProcesses() {
			switch {
			case p.GetPid() == 2 || p.GetPpid() == 2:
			case p.GetPid() == 1:
				t.Logf("init: %s, RSS %.1f MiB", p.GetCommandLine(), float64(p.GetRssBytes())/(1<<20))
			case p.GetPpid() == 1 && strings.Contains(p.GetCommandLine(), "machined"):
				t.Logf("machined: %s, RSS %.1f MiB", p.GetCommandLine(), float64(p.GetRssBytes())/(1<<20))
			default:
				t.Errorf("unexpected process on the node: pid %d ppid %d %q (%s)", p.GetPid(), p.GetPpid(), p.GetCommandLine(), p.GetName())
			}
		}
	})

	t.Run("d_machined_crash_restarted_by_init", func(t *testing.T) {
		_, err := c.DebugAction(callCtx(t), &machine.DebugActionRequest{Action: "crash"})
		// The answer may be lost with the process; anything but a refusal is fine.
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("DebugAction crash: %v", err)
		}
		crashed := time.Now()
		if err := vm.ExpectString(machinedBanner, bootWait); err != nil {
			t.Fatalf("machined did not start again: %v", err)
		}
		r := waitReady(t, vm)
		if r.mode != "configured" {
			t.Fatalf("readiness line after the restart: mode %q, want configured", r.mode)
		}
		if r.hostname != hostname {
			t.Errorf("readiness line after the restart: hostname %q, want %q", r.hostname, hostname)
		}
		if v := waitConfigured(t, kc, addr); v.Hostname != hostname {
			t.Errorf("hostname after the restart = %q, want %q", v.Hostname, hostname)
		}
		t.Logf("crash → API back over mTLS: %s", time.Since(crashed).Round(time.Millisecond))
		// The restarted machined took the partitions as they were mounted.
		mounts, err := c.Mounts(callCtx(t), &machine.MountsRequest{})
		if err != nil {
			t.Fatalf("Mounts after the restart: %v", err)
		}
		n := 0
		for _, m := range mounts.GetMounts() {
			if m.GetTarget() == "/var" && m.GetFstype() == "ext4" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("EPHEMERAL is mounted on /var %d times after the restart, want once", n)
		}
	})
}

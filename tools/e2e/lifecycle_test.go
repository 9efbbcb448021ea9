package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// TestUEFILifecycle boots the disk image through UEFI once and walks it through the
// life of a node; the subtests depend on each other in order:
//
//	(a) no config → maintenance mode (readiness line) → kctl apply-config --insecure →
//	    the API answers over mTLS with the new identity;
//	(b) kctl reboot → the config survived, the host name is applied, EPHEMERAL is
//	    grown to the disk;
//	(c) kctl shutdown → QEMU exits cleanly, and the disk (read from the host) shows
//	    EPHEMERAL and its ext4 filling the disk.
func TestUEFILifecycle(t *testing.T) {
	need(t)
	const diskSize = 2 << 30
	const hostname = "e2e-uefi"
	vm := startVM(t, vmOpts{name: "uefi", uefi: true, diskSize: diskSize})
	addr := vm.Addr()
	cp, kc := genConfig(t, "e2e", hostname)

	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.Fatalf("%s failed; the later steps need it", name)
		}
	}
	var checksum string
	step("a_maintenance_apply_mtls", func(t *testing.T) {
		r := waitReady(t, vm)
		t.Logf("QEMU start → readiness line (UEFI, maintenance): %s", r.after.Round(time.Millisecond))
		if r.mode != "maintenance" {
			t.Fatalf("readiness line mode = %q, want maintenance (the image carries no config)", r.mode)
		}
		// Maintenance mode answers Version without a certificate.
		v, err := kctlVersionInsecure(t, kc, addr, r.fingerprint)
		if err != nil || v.Maintenance == nil || !*v.Maintenance || v.Platform != "node" {
			t.Fatalf("kctl --insecure version in maintenance mode = %+v, %v; want maintenance on platform node", v, err)
		}
		out := mustKctl(t, kc, "apply-config", "--insecure", "--cert-fingerprint", r.fingerprint, "-n", addr, "-f", cp)
		t.Logf("apply-config: %s", strings.TrimSpace(out))
		v = waitConfigured(t, kc, addr)
		if v.Hostname != hostname {
			t.Errorf("hostname over mTLS = %q, want %q", v.Hostname, hostname)
		}
		checkEmulationArgs(t, kc, addr)
		// The new identity: without a client certificate the node now refuses.
		if out, err := runKctl(t, kc, "--insecure", "-n", addr, "get", "config"); err == nil {
			t.Errorf("kctl --insecure get config after the apply succeeded, want a refusal:\n%s", out)
		}
		res, err := adminClient(t, kc, addr).GetConfig(callCtx(t), &machine.GetConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		checksum = res.GetChecksum()
	})

	step("b_reboot_keeps_config_hostname_ephemeral", func(t *testing.T) {
		t.Logf("kctl reboot: %s", strings.TrimSpace(mustKctl(t, kc, "-n", addr, "reboot")))
		if err := vm.ExpectString("kiln-init: reboot", bootWait); err != nil {
			t.Fatalf("init did not reboot: %v", err)
		}
		if err := vm.ExpectString(machinedBanner, bootWait); err != nil {
			t.Fatal(err)
		}
		r := waitReady(t, vm)
		if r.mode != "configured" {
			t.Fatalf("readiness line after reboot: mode %q, want configured: the config did not survive the reboot", r.mode)
		}
		if r.hostname != hostname {
			t.Errorf("readiness line after reboot: hostname %q, want %q", r.hostname, hostname)
		}
		v := waitConfigured(t, kc, addr)
		if v.Hostname != hostname {
			t.Errorf("Version hostname after reboot = %q, want %q", v.Hostname, hostname)
		}
		c := adminClient(t, kc, addr)
		res, err := c.GetConfig(callCtx(t), &machine.GetConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetChecksum() != checksum {
			t.Errorf("config checksum after reboot = %s, want %s (the applied config)", res.GetChecksum(), checksum)
		}
		mounts, err := c.Mounts(callCtx(t), &machine.MountsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var varMount *machine.Mount
		for _, m := range mounts.GetMounts() {
			if m.GetTarget() == "/var" {
				varMount = m // the last one is on top
			}
		}
		if varMount == nil || varMount.GetFstype() != "ext4" || !strings.HasPrefix(varMount.GetSource(), "/dev/vda") {
			t.Errorf("/var mount = %v, want ext4 from the system disk's EPHEMERAL partition", varMount)
		}
		// The disk /var lives on must be the whole (grown) disk QEMU gave the node.
		disks, err := c.Disks(callCtx(t), &machine.DisksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var sys *machine.Disk
		for _, d := range disks.GetDisks() {
			if varMount != nil && strings.HasPrefix(strings.TrimPrefix(varMount.GetSource(), "/dev/"), d.GetName()) {
				sys = d
			}
		}
		switch {
		case sys == nil:
			t.Errorf("Disks lists no disk holding /var: %v", disks.GetDisks())
		case sys.GetSizeBytes() != diskSize:
			t.Errorf("disk %s size = %d, want %d (the overlay's size)", sys.GetName(), sys.GetSizeBytes(), int64(diskSize))
		case !sys.GetSystemDisk():
			// The API contract says system_disk marks it; reported, not fatal for the
			// growth check this step is about.
			t.Logf("Disks: %s holds /var but is not marked system_disk", sys.GetName())
		}
	})

	step("c_shutdown_exits_qemu", func(t *testing.T) {
		t.Logf("kctl shutdown: %s", strings.TrimSpace(mustKctl(t, kc, "-n", addr, "shutdown")))
		ctx, cancel := context.WithTimeout(context.Background(), bootWait)
		defer cancel()
		if err := vm.Wait(ctx); err != nil {
			t.Fatalf("QEMU after kctl shutdown: %v", err)
		}
		// EPHEMERAL grown to the disk's end, its ext4 to the partition: read from the host.
		d, err := readDisk(filepath.Join(vm.Dir(), "disk.qcow2"), "EPHEMERAL")
		if err != nil {
			t.Fatal(err)
		}
		p, ok := d.part("EPHEMERAL")
		if !ok {
			t.Fatalf("no EPHEMERAL partition on the disk: %+v", d.parts)
		}
		partBytes := int64(p.lastLBA-p.firstLBA+1) * 512
		t.Logf("disk %d MiB: EPHEMERAL LBA %d–%d (%d MiB, last usable %d), ext4 %d MiB",
			d.size>>20, p.firstLBA, p.lastLBA, partBytes>>20, d.lastUsable, d.fsBytes>>20)
		// Partitions are aligned to 1 MiB (2048 sectors): the end may stop short of the
		// last usable LBA by less than that.
		if d.lastUsable-p.lastLBA >= 2048 {
			t.Errorf("EPHEMERAL ends at LBA %d, the disk's last usable LBA is %d: not grown", p.lastLBA, d.lastUsable)
		}
		if d.fsBytes == 0 || partBytes-d.fsBytes >= 4<<20 {
			t.Errorf("EPHEMERAL's ext4 is %d bytes in a %d-byte partition: not grown", d.fsBytes, partBytes)
		}
	})
}

// kctlVersionInsecure asks a node in maintenance mode for its version, pinning its
// certificate.
func kctlVersionInsecure(t *testing.T, kc, addr, fingerprint string) (nodeVersion, error) {
	t.Helper()
	return kctlVersion(t, kc, addr, "--insecure", "--cert-fingerprint", fingerprint)
}

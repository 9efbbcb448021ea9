package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// TestPowerLoss cuts the power (SIGKILL to QEMU) while `kctl apply-config` changes the
// node's host name, -e2e.power-loss-rounds times, each round booting from the disk the
// previous round left: every boot must come up configured with the old or the new
// config, never without one or with a torn one. Direct kernel boot keeps the rounds
// short; the kill lands at a different moment of the apply each round.
func TestPowerLoss(t *testing.T) {
	need(t)
	rounds := *powerLossRounds
	cp0, kc := genConfig(t, "e2e-pl", "pl-0")
	base, err := os.ReadFile(cp0)
	if err != nil {
		t.Fatal(err)
	}
	// One config per round, differing only in the host name (applied live).
	cfgs := make([]string, rounds+1)
	for i := range cfgs {
		data := strings.Replace(string(base), "hostname: pl-0\n", fmt.Sprintf("hostname: pl-%d\n", i), 1)
		c, err := config.Parse([]byte(data))
		if err != nil || c.Hostname() != fmt.Sprintf("pl-%d", i) {
			t.Fatalf("config for round %d: hostname %q, %v", i, c.Hostname(), err)
		}
		cfgs[i] = filepath.Join(filepath.Dir(cp0), fmt.Sprintf("round-%d.yaml", i))
		if err := os.WriteFile(cfgs[i], []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	vmDir := func(i int) string { return filepath.Join(dir, fmt.Sprintf("boot-%02d", i)) }

	// Round 0: the first config, applied in maintenance mode and left to settle.
	if err := os.Mkdir(vmDir(0), 0o755); err != nil {
		t.Fatal(err)
	}
	vm, r := startReady(t, vmOpts{name: "power-00", dir: vmDir(0)})
	mustKctl(t, kc, "apply-config", "--insecure", "--cert-fingerprint", r.fingerprint, "-n", vm.Addr(), "-f", cfgs[0])
	waitConfigured(t, kc, vm.Addr())
	// The apply has been answered: the config must be on the disk now, without a settle.
	time.Sleep(*settle)
	vm.Kill()

	known, attempted := 0, 0
	var oldN, newN int
	for i := 1; i <= rounds+1; i++ {
		if err := os.Mkdir(vmDir(i), 0o755); err != nil {
			t.Fatal(err)
		}
		vm, r := startReady(t, vmOpts{name: fmt.Sprintf("power-%02d", i), dir: vmDir(i), disk: filepath.Join(vmDir(i-1), "disk.qcow2")})
		switch want := []string{fmt.Sprintf("pl-%d", known), fmt.Sprintf("pl-%d", attempted)}; {
		case r.mode != "configured":
			t.Fatalf("boot %d: mode %q after power loss during apply of pl-%d, want configured with %s or %s\n%s", i, r.mode, attempted, want[0], want[1], qemutest.SerialTail(vm.SerialLog()))
		case r.hostname == want[1] && attempted != known:
			newN++
			known = attempted
		case r.hostname == want[0]:
			if attempted != known {
				oldN++
			}
		default:
			t.Fatalf("boot %d: host name %q after power loss during apply of pl-%d, want %s or %s\n%s", i, r.hostname, attempted, want[0], want[1], qemutest.SerialTail(vm.SerialLog()))
		}
		// The stored config is whole: its CA still lets kctl in.
		if v := waitConfigured(t, kc, vm.Addr()); v.Hostname != r.hostname {
			t.Fatalf("boot %d: Version hostname %q, readiness line %q", i, v.Hostname, r.hostname)
		}
		if i > rounds {
			break
		}
		// Kill at a different moment of the apply each round: 0–390 ms after kctl starts.
		delay := time.Duration((i*130)%400) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), callWait)
		cmd := exec.CommandContext(ctx, env.kctl, "-n", vm.Addr(), "apply-config", "--mode", "no-reboot", "-f", cfgs[i])
		cmd.Env = append(os.Environ(), "KCTLCONFIG="+kc)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		time.Sleep(delay)
		vm.Kill()
		werr := cmd.Wait()
		cancel()
		attempted = i
		t.Logf("round %d: killed %s after kctl started; kctl: %v %s", i, delay, werr, strings.TrimSpace(out.String()))
	}
	t.Logf("%d power cuts during apply-config: %d booted the old config, %d the new one", rounds, oldN, newN)
}

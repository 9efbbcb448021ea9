package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/tools/provision"
	"github.com/kiln-os/kiln/tools/qemu"
)

// Hang protection only (TCG on a busy 2-core host is slow); no test asserts a time.
const (
	bootWait = 5 * time.Minute
	callWait = 3 * time.Minute
	vmLife   = 25 * time.Minute
)

// vmOpts says how to boot a node.
type vmOpts struct {
	name     string // names the serial log kept on failure: serial-<name>.log
	uefi     bool   // UEFI disk boot; otherwise direct kernel boot
	disk     string // default env.raw
	diskSize int64  // grow the overlay to this size (bytes)
	args     string // extra kernel arguments (direct boot)
	dir      string // VM directory (kept until the test ends); default: QEMU's own
}

// startVM boots a node. When the test fails, its serial log is copied into the test's
// artifact directory; the VM is killed when the test ends.
func startVM(t *testing.T, o vmOpts) *qemu.VM {
	t.Helper()
	cfg := qemu.Config{
		Arch:     qemu.AMD64,
		Disk:     o.disk,
		DiskSize: o.diskSize,
		Dir:      o.dir,
		Timeout:  vmLife,
	}
	if cfg.Disk == "" {
		cfg.Disk = env.raw
	}
	if o.uefi {
		cfg.UEFI = true
	} else {
		cfg.Kernel, cfg.Initrd = env.kernel, env.initrd
		cfg.Append = strings.TrimSpace(env.cmdline + " " + o.args)
	}
	vm, err := qemu.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			dst := filepath.Join(t.ArtifactDir(), "serial-"+o.name+".log")
			if err := vm.SaveLog(dst); err != nil {
				t.Logf("save serial log: %v", err)
			} else {
				t.Logf("serial log of %s kept at %s (go test -artifacts keeps it after the run)", o.name, dst)
			}
		}
		vm.Close()
	})
	return vm
}

// ready is machined's readiness line.
type ready struct {
	mode, fingerprint, hostname string
	after                       time.Duration // since QEMU started
}

// waitReady waits for the next readiness line on the console.
func waitReady(t *testing.T, vm *qemu.VM) ready {
	t.Helper()
	m, err := vm.Expect(provision.ReadyPattern, bootWait)
	if err != nil {
		t.Fatalf("no readiness line: %v", err)
	}
	return readyOf(vm, m)
}

// readyOf is the readiness line vm's console just matched (m: provision.ReadyPattern's
// submatches, or those of a pattern that begins with it).
func readyOf(vm *qemu.VM, m []string) ready {
	get := func(n string) string { return m[provision.ReadyPattern.SubexpIndex(n)] }
	return ready{mode: get("mode"), fingerprint: get("fingerprint"), hostname: get("hostname"), after: time.Since(vm.Started())}
}

// kernelStall is the guest kernel's report of an RCU stall. Under TCG on a loaded host
// a boot has, rarely, hung for good inside the kernel before init ran (session 15: one
// in several hundred boots, `rcu_preempt kthread timer wakeup didn't happen`, a vCPU
// whose timer never fired), and the test then waited its whole bootWait.
var kernelStall = regexp.MustCompile(`rcu: INFO: rcu_\w+ (?:detected stalls|self-detected stall)|rcu_\w+ kthread timer wakeup didn't happen`)

// initBanner is the first line Kiln's init prints (boot.Banner).
var initBanner = regexp.MustCompile(`Kiln \S+ \(init, kernel `)

// stalledBeforeInit reports whether a console log has a kernel stall report and no
// init banner before it: the boot hung before any of Kiln's code ran.
func stalledBeforeInit(console string) bool {
	stall := kernelStall.FindStringIndex(console)
	if stall == nil {
		return false
	}
	banner := initBanner.FindStringIndex(console)
	return banner == nil || banner[0] > stall[0]
}

// startReady boots a node (startVM) and waits for its readiness line (waitReady). A
// boot whose kernel stalls before init starts is an emulation fault, not Kiln's: no
// Kiln code has run and nothing has written the disk. It is booted once more from the
// same disk, in a fresh o.dir, and the test logs it. A stall after init's banner is
// waited out like any slow boot.
func startReady(t *testing.T, o vmOpts) (*qemu.VM, ready) {
	t.Helper()
	either := regexp.MustCompile(provision.ReadyPattern.String() + "|" + kernelStall.String())
	for attempt := 1; ; attempt++ {
		vm := startVM(t, o)
		deadline := time.Now().Add(bootWait)
		for {
			m, err := vm.Expect(either, time.Until(deadline))
			if err != nil {
				t.Fatalf("no readiness line: %v", err)
			}
			if !kernelStall.MatchString(m[0]) {
				return vm, readyOf(vm, m)
			}
			console, _ := os.ReadFile(vm.SerialLog())
			if !stalledBeforeInit(string(console)) {
				continue // a report after init started: wait for the line
			}
			if attempt > 1 {
				t.Fatalf("boot %s: the guest kernel stalled before init again:\n%s", o.name, m[0])
			}
			vm.Kill()
			kept := "in QEMU's own directory"
			if o.dir != "" {
				// The stalled boot's directory (its console log) is kept beside.
				kept = o.dir + "-stalled"
				if err := os.Rename(o.dir, kept); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(o.dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("boot %s: the guest kernel stalled before init started (%s; console %s): an emulation fault; booting again from the same disk", o.name, m[0], kept)
			break
		}
	}
}

// machinedBanner is the first line machined prints on the console each time it
// starts; waiting for it first keeps a later readiness line from being mistaken for
// one printed before a reboot or restart.
const machinedBanner = "[kiln] machined "

// runKctl runs the kctl binary with KCTLCONFIG=kctlconfig (and HOME beside it).
func runKctl(t *testing.T, kctlconfig string, args ...string) (string, error) {
	t.Helper()
	return runKctlFor(t, callWait, kctlconfig, args...)
}

// runKctlFor is runKctl with another hang protection than callWait.
func runKctlFor(t *testing.T, limit time.Duration, kctlconfig string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.kctl, args...)
	cmd.Env = append(os.Environ(), "KCTLCONFIG="+kctlconfig, "HOME="+filepath.Dir(kctlconfig))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustKctl(t *testing.T, kctlconfig string, args ...string) string {
	t.Helper()
	out, err := runKctl(t, kctlconfig, args...)
	if err != nil {
		t.Fatalf("kctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// genConfig runs `kctl gen config` for a cluster with the node's host name set and
// returns the controlplane config and the client config it wrote.
func genConfig(t *testing.T, cluster, hostname string) (cp, kctlconfig string) {
	t.Helper()
	dir := t.TempDir()
	kctlconfig = filepath.Join(dir, "kctlconfig")
	mustKctl(t, kctlconfig, "gen", "config", cluster, "https://"+provision.GuestAddress+":6443", "--output-dir", dir,
		"--config-patch", fmt.Sprintf(`[{"op": "add", "path": "/machine/hostname", "value": %q}]`, hostname))
	return filepath.Join(dir, "controlplane.yaml"), kctlconfig
}

// nodeVersion is one server of `kctl version -o json`.
type nodeVersion struct {
	Node        string `json:"node"`
	Tag         string `json:"tag"`
	Hostname    string `json:"hostname"`
	Platform    string `json:"platform"`
	Maintenance *bool  `json:"maintenance"`
}

// kctlVersion asks the node at addr for its version with kctl (over mTLS unless flags
// say otherwise).
func kctlVersion(t *testing.T, kctlconfig, addr string, flags ...string) (nodeVersion, error) {
	t.Helper()
	out, err := runKctl(t, kctlconfig, append(flags, "-n", addr, "version", "-o", "json")...)
	if err != nil {
		return nodeVersion{}, fmt.Errorf("kctl version: %w: %s", err, out)
	}
	var v struct {
		Servers []nodeVersion `json:"servers"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Servers) != 1 {
		return nodeVersion{}, fmt.Errorf("kctl version -o json: %v: %s", err, out)
	}
	return v.Servers[0], nil
}

// waitConfigured polls `kctl version` over mTLS until the node answers out of
// maintenance mode, and returns that answer.
func waitConfigured(t *testing.T, kctlconfig, addr string) nodeVersion {
	t.Helper()
	deadline := time.Now().Add(callWait)
	for {
		v, err := kctlVersion(t, kctlconfig, addr)
		if err == nil && v.Maintenance != nil && !*v.Maintenance {
			return v
		}
		if err == nil {
			err = errors.New("still in maintenance mode")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node at %s does not answer over mTLS out of maintenance mode: %v", addr, err)
		}
		time.Sleep(time.Second)
	}
}

// adminClient dials addr with the credentials of the client config's current context.
func adminClient(t *testing.T, kctlconfig, addr string) *client.Client {
	t.Helper()
	cfg, err := clientconfig.Load(kctlconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur, _, err := cfg.Current("")
	if err != nil {
		t.Fatal(err)
	}
	ca, crt, key, err := cur.PEM()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(context.Background(), addr, client.WithMTLS(ca, crt, key))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callWait)
	t.Cleanup(cancel)
	return ctx
}

// checkEmulationArgs checks, from the node's kernel log, that the harness's arguments
// for a guest under TCG (qemu.EmulationKernelArgs) reached the kernel after the
// image's own (on a UEFI boot through systemd-stub's SMBIOS string) and took effect:
// the last pti= is pti=auto, and the kernel did not force page-table isolation.
func checkEmulationArgs(t *testing.T, kctlconfig, addr string) {
	t.Helper()
	out := mustKctl(t, kctlconfig, "-n", addr, "dmesg")
	var cmdline string
	for _, l := range strings.Split(out, "\n") {
		if _, c, ok := strings.Cut(l, "] Command line: "); ok {
			cmdline = c
			break
		}
	}
	if cmdline == "" {
		t.Fatalf("kctl dmesg has no \"Command line:\" entry:\n%s", out)
	}
	want := qemu.EmulationKernelArgs(&qemu.Config{Arch: qemu.AMD64, Accel: qemu.TCG})
	var last string
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "pti=") {
			last = f
		}
	}
	if last != want {
		t.Errorf("kernel command line %q: last pti= is %q, want %q from the harness", cmdline, last, want)
	}
	if strings.Contains(out, "page tables isolation: force enabled") {
		t.Errorf("the kernel forced page-table isolation under TCG:\n%s", out)
	}
}

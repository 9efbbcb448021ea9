// Package api benchmarks the machine API of a real machined in process mode:
// the apply-config NO_REBOOT round trip over mTLS on loopback (with a Version
// call on the same connection as the floor) and machined's idle RSS (with a
// bare Go gRPC/TLS server as the floor). Run with `make bench-api`.
package api

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/tools/internal/procnode"
)

var bins struct{ machined, kctl, floor string }

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if flag.Lookup("test.bench").Value.String() == "" {
		return m.Run() // no benchmark asked for: nothing to build
	}
	dir, err := os.MkdirTemp("", "kiln-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bins.machined, bins.kctl, err = procnode.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bins.floor = filepath.Join(dir, "floor")
	if out, err := exec.Command("go", "build", "-o", bins.floor, "./internal/floor").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build floor: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// configuredNode starts machined, applies a generated control-plane config
// and returns the node, two live-appliable configs and the kctl config path.
func configuredNode(b *testing.B) (*procnode.Node, [2][]byte, string) {
	b.Helper()
	n := procnode.New(b, bins.machined)
	n.Start()
	dir := b.TempDir()
	kctl := func(args ...string) {
		if out, err := exec.Command(bins.kctl, args...).CombinedOutput(); err != nil {
			b.Fatalf("kctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	kctl("gen", "config", "bench", "https://127.0.0.1:6443", "--output-dir", dir)
	var cfgs [2][]byte
	for i, host := range []string{"bench-a", "bench-b"} {
		d := filepath.Join(dir, host)
		kctl("gen", "config", "bench", "https://127.0.0.1:6443", "--output-dir", d,
			"--with-secrets", filepath.Join(dir, "secrets.yaml"),
			"--config-patch-control-plane", fmt.Sprintf(`{"machine": {"hostname": %q}}`, host))
		data, err := os.ReadFile(filepath.Join(d, "controlplane.yaml"))
		if err != nil {
			b.Fatal(err)
		}
		cfgs[i] = data
	}
	kctl("apply-config", "--insecure", "-n", n.Addr, "-f", filepath.Join(dir, "controlplane.yaml"))
	return n, cfgs, filepath.Join(dir, "kctlconfig")
}

// BenchmarkAPI measures round trips over mTLS on loopback; the
// apply-config budget is p50 ≤ 50 ms.
func BenchmarkAPI(b *testing.B) {
	n, cfgs, kcfg := configuredNode(b)
	c := n.AdminClient(b, kcfg)
	ctx := context.Background()
	// Warm the connection (TLS handshake) and wait for mTLS to be in force.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Version(ctx, &machine.VersionRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("mTLS never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	b.Run("floor=Version", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t0 := time.Now()
			if _, err := c.Version(ctx, &machine.VersionRequest{}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportLatency(b, lat)
	})
	b.Run("ApplyConfiguration=NO_REBOOT", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			t0 := time.Now()
			_, err := c.ApplyConfiguration(ctx, &machine.ApplyConfigurationRequest{Data: cfgs[i%2], Mode: machine.ApplyMode_APPLY_MODE_NO_REBOOT})
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			i++
		}
		reportLatency(b, lat)
	})
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	q := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkIdleRSS reports machined's resident memory after it has applied a
// config and idled, next to the floor server's. Budget: ≤ 25 MiB.
func BenchmarkIdleRSS(b *testing.B) {
	for b.Loop() {
		n, _, _ := configuredNode(b)
		floor := exec.Command(bins.floor)
		if err := floor.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		b.ReportMetric(rssMiB(b, n.PID()), "machined-MiB")
		b.ReportMetric(rssMiB(b, floor.Process.Pid), "floor-MiB")
		_ = floor.Process.Kill()
		_ = floor.Wait()
		n.Stop()
	}
}

// rssMiB reads VmRSS of pid from /proc.
func rssMiB(b *testing.B, pid int) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/tools/provision"
)

// TestClusterCreateDestroy runs the README's command: `kctl cluster create` boots the
// built image in QEMU (UEFI), applies a generated config and writes a kctl context; kctl
// then reaches the node through it alone; `kctl cluster destroy` stops QEMU and removes
// the directory and the context.
func TestClusterCreateDestroy(t *testing.T) {
	need(t)
	home := t.TempDir()
	kc := filepath.Join(home, ".kctl", "config")
	state := filepath.Join(home, "clusters")
	const name = "e2e"
	t.Cleanup(func() {
		if t.Failed() {
			if err := copyTo(filepath.Join(state, name, provision.SerialLogFile), filepath.Join(t.ArtifactDir(), "serial-cluster.log")); err == nil {
				t.Logf("serial log kept at %s", filepath.Join(t.ArtifactDir(), "serial-cluster.log"))
			}
		}
		// Whatever happened, no QEMU may outlive the test.
		_, _ = runKctl(t, kc, "cluster", "destroy", "--name", name, "--state-dir", state)
	})

	start := time.Now()
	// kctl's own --wait-timeout (10m) ends a hung boot first; this limit only guards kctl.
	args := []string{"cluster", "create", "--name", name, "--state-dir", state, "--image", env.raw, "--disk", "1024", "--wait-timeout", "5m"}
	out, err := runKctlFor(t, 15*time.Minute, kc, args...)
	if err != nil {
		t.Fatalf("kctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("kctl cluster create (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	c, err := provision.Load(state, name)
	if err != nil {
		t.Fatal(err)
	}
	if !qemuRuns(c) {
		t.Fatalf("QEMU (pid %d) does not run after kctl cluster create returned", c.PID)
	}
	// No --nodes: the context create wrote is current and enough.
	out = mustKctl(t, kc, "version", "-o", "json")
	var v struct{ Servers []nodeVersion }
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Servers) != 1 ||
		v.Servers[0].Hostname != name+"-controlplane-1" || v.Servers[0].Maintenance == nil || *v.Servers[0].Maintenance {
		t.Errorf("kctl version through the new context (%v):\n%s", err, out)
	}
	cfg, err := clientconfig.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	if cur, n, err := cfg.Current(""); err != nil || n != name || cur.Endpoints[0] != c.Endpoint {
		t.Errorf("current context = %q (%v), %v; want %s at %s", n, cur, err, name, c.Endpoint)
	}
	if _, err := runKctl(t, kc, "cluster", "create", "--name", name, "--state-dir", state, "--image", env.raw); err == nil {
		t.Error("a second kctl cluster create of the same name succeeded")
	}

	mustKctl(t, kc, "cluster", "destroy", "--name", name, "--state-dir", state)
	deadline := time.Now().Add(time.Minute)
	for qemuRuns(c) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if qemuRuns(c) {
		t.Errorf("QEMU (pid %d) still runs after destroy", c.PID)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cluster directory after destroy: %v", err)
	}
	if cfg, err := clientconfig.Load(kc); err != nil {
		t.Error(err)
	} else if cfg.Contexts[name] != nil || cfg.Context == name {
		t.Errorf("client config after destroy: contexts %v, current %q; want no %s", cfg.Names(), cfg.Context, name)
	}
}

// qemuRuns reports whether the cluster's QEMU process is alive (not a zombie).
func qemuRuns(c *provision.Cluster) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c.PID))
	return err == nil && bytes.Contains(b, []byte(c.Dir))
}

func copyTo(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

package itest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/tools/internal/procnode"
)

// TestLifecycle walks the foundation's user journey through kctl only: gen
// config, apply in maintenance mode, read over mTLS, dry run, real apply, get
// config, restart machined, and everything comes back.
func TestLifecycle(t *testing.T) {
	n := procnode.New(t, bins.machined)
	n.Start()

	dir := t.TempDir()
	mustKctl(t, nil, "gen", "config", "itest", "https://127.0.0.1:6443", "--output-dir", dir)
	for _, f := range []string{"secrets.yaml", "controlplane.yaml", "worker.yaml", "kctlconfig"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("gen config did not write %s: %v", f, err)
		}
	}
	env := []string{"KCTLCONFIG=" + filepath.Join(dir, "kctlconfig")}

	// Maintenance mode: only the insecure path works, and the mTLS path is refused.
	out := mustKctl(t, nil, "--insecure", "-n", n.Addr, "version")
	if !strings.Contains(strings.ToLower(out), "maintenance") {
		t.Errorf("version in maintenance mode does not say so:\n%s", out)
	}

	// A config with one extension service that writes a line and sleeps.
	cp := readFile(t, filepath.Join(dir, "controlplane.yaml"))
	v1 := cp + serviceDoc("ticker", "first")
	v1File := writeFile(t, dir, "v1.yaml", v1)
	mustKctl(t, nil, "apply-config", "--insecure", "-n", n.Addr, "-f", v1File)

	// Now the node has an identity: mTLS with the admin certificate works.
	waitFor(t, "mTLS version", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "version")
		return err == nil && !strings.Contains(strings.ToLower(out), "maintenance: true"), out
	})
	waitFor(t, "ticker running", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "services")
		return err == nil && lineHas(out, "ticker", "Running"), out
	})
	waitFor(t, "ticker logs", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "logs", "ticker", "--tail", "5")
		return err == nil && strings.Contains(out, "tick first"), out
	})
	// Insecure access is over once the node is configured.
	if out, err := kctl(t, nil, "--insecure", "-n", n.Addr, "services"); err == nil {
		t.Errorf("services without a client certificate succeeded on a configured node:\n%s", out)
	}

	before := mustKctl(t, env, "-n", n.Addr, "get", "config")

	// Dry run of a changed config: a diff, and nothing changes.
	// The same cluster (--with-secrets) with a hostname patched in.
	dir2 := t.TempDir()
	mustKctl(t, nil, "gen", "config", "itest", "https://127.0.0.1:6443", "--output-dir", dir2,
		"--with-secrets", filepath.Join(dir, "secrets.yaml"),
		"--config-patch-control-plane", `{"machine": {"hostname": "itest-node"}}`)
	v2 := readFile(t, filepath.Join(dir2, "controlplane.yaml")) + serviceDoc("ticker", "second")
	v2File := writeFile(t, dir, "v2.yaml", v2)
	out = mustKctl(t, env, "-n", n.Addr, "apply-config", "-f", v2File, "--mode", "no-reboot", "--dry-run")
	if !strings.Contains(out, "+") || !strings.Contains(out, "itest-node") {
		t.Errorf("dry run shows no diff with the new hostname:\n%s", out)
	}
	if after := mustKctl(t, env, "-n", n.Addr, "get", "config"); after != before {
		t.Fatalf("dry run changed the config:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The real apply.
	mustKctl(t, env, "-n", n.Addr, "apply-config", "-f", v2File, "--mode", "no-reboot")
	got := mustKctl(t, env, "-n", n.Addr, "get", "config")
	if !strings.Contains(got, "itest-node") || !strings.Contains(got, "tick second") {
		t.Fatalf("get config does not show the applied config:\n%s", got)
	}
	waitFor(t, "ticker restarted with new args", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "logs", "ticker", "--tail", "5")
		return err == nil && strings.Contains(out, "tick second"), out
	})

	// Restart machined: the config and its extension service come back.
	n.Stop()
	n.Start()
	waitFor(t, "config after restart", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "get", "config")
		return err == nil && out == got, out
	})
	waitFor(t, "ticker after restart", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "services")
		return err == nil && lineHas(out, "ticker", "Running"), out
	})
	out = mustKctl(t, env, "-n", n.Addr, "version")
	if !strings.Contains(out, "itest-node") {
		t.Errorf("version after restart does not report the hostname itest-node:\n%s", out)
	}
}

// serviceDoc is a ServiceConfig document running a shell loop that logs word.
func serviceDoc(name, word string) string {
	return `---
apiVersion: kiln.dev/v1alpha1
kind: ServiceConfig
name: ` + name + `
command: /bin/sh
args: ["-c", "while true; do echo tick ` + word + `; sleep 1; done"]
`
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// lineHas reports whether one line of out contains every word.
func lineHas(out string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, w := range words {
			if !strings.Contains(line, w) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds; the deadline only guards against hangs.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, out := cond()
		if ok {
			return
		}
		last = out
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after 60s; last output:\n%s", what, last)
}

package itest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/tools/internal/procnode"
)

// invalidConfigs returns the invalid configs of machined/config/testdata with
// the field paths each must be rejected for (its "# want:" lines).
func invalidConfigs(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("../../machined/config/testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("found %d invalid configs in machined/config/testdata/invalid, want at least 30", len(files))
	}
	cases := map[string][]string{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
				cases[f] = append(cases[f], strings.TrimSpace(p))
			}
		}
		fh.Close()
		if len(cases[f]) == 0 {
			t.Fatalf("%s has no '# want:' line", f)
		}
	}
	return cases
}

// TestBadInput feeds every invalid config to kctl validate and to a configured
// node: both must name every expected field path, and the node's config must
// stay exactly as it was.
func TestBadInput(t *testing.T) {
	cases := invalidConfigs(t)

	n := procnode.New(t, bins.machined)
	n.Start()
	dir := t.TempDir()
	mustKctl(t, nil, "gen", "config", "bad", "https://127.0.0.1:6443", "--output-dir", dir)
	env := []string{"KCTLCONFIG=" + filepath.Join(dir, "kctlconfig")}
	mustKctl(t, nil, "apply-config", "--insecure", "-n", n.Addr, "-f", filepath.Join(dir, "controlplane.yaml"))
	waitFor(t, "mTLS", func() (bool, string) {
		out, err := kctl(t, env, "-n", n.Addr, "get", "config")
		return err == nil, out
	})
	before := mustKctl(t, env, "-n", n.Addr, "get", "config")

	for file, want := range cases {
		t.Run(filepath.Base(file), func(t *testing.T) {
			out, err := kctl(t, nil, "validate", "-f", file)
			if exitCode(err) <= 0 {
				t.Errorf("kctl validate accepted it (err %v):\n%s", err, out)
			}
			checkPaths(t, "kctl validate", out, want)

			out, err = kctl(t, env, "-n", n.Addr, "apply-config", "-f", file)
			if exitCode(err) <= 0 {
				t.Errorf("the node accepted it (err %v):\n%s", err, out)
			}
			checkPaths(t, "apply-config", out, want)
			if strings.Contains(out, "rpc error") || strings.Contains(out, "goroutine ") {
				t.Errorf("apply-config error is a raw dump, not a clear message:\n%s", out)
			}
		})
	}
	if after := mustKctl(t, env, "-n", n.Addr, "get", "config"); after != before {
		t.Fatalf("the node's config changed after rejected applies:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func checkPaths(t *testing.T, who, out string, want []string) {
	t.Helper()
	for _, p := range want {
		if !strings.Contains(out, p+":") {
			t.Errorf("%s output does not name %q:\n%s", who, p, out)
		}
	}
}

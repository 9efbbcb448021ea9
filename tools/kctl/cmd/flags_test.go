package cmd

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
)

// parse fills the globals from a command line without running it.
func parse(t *testing.T, args ...string) *globals {
	t.Helper()
	root, g := newRoot(IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	c, rest, err := root.Find(args)
	if err != nil {
		t.Fatalf("Find(%q): %v", args, err)
	}
	if err := c.ParseFlags(rest); err != nil {
		t.Fatalf("ParseFlags(%q): %v", rest, err)
	}
	return g
}

func TestGlobalFlags(t *testing.T) {
	g := parse(t, "services", "-n", "a,b", "--nodes", "c", "-e", "x", "--kctlconfig", "/k", "--context", "prod",
		"--insecure", "--cert-fingerprint", "sha256:ab")
	got := []any{g.nodes, g.endpoints, g.kctlconfig, g.context, g.insecure, g.fingerprint}
	want := []any{[]string{"a", "b", "c"}, []string{"x"}, "/k", "prod", true, "sha256:ab"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("globals (-want +got):\n%s", diff)
	}
	// Global flags may come before the command too.
	if g := parse(t, "-i", "-n", "n1", "version"); !g.insecure || !cmp.Equal(g.nodes, []string{"n1"}) {
		t.Errorf("flags before the command: insecure %v, nodes %v", g.insecure, g.nodes)
	}
}

func TestParseApplyMode(t *testing.T) {
	tests := []struct {
		in      string
		want    machine.ApplyMode
		wantErr bool
	}{
		{in: "auto", want: machine.ApplyMode_APPLY_MODE_AUTO},
		{in: "no-reboot", want: machine.ApplyMode_APPLY_MODE_NO_REBOOT},
		{in: "reboot", want: machine.ApplyMode_APPLY_MODE_REBOOT},
		{in: "staged", want: machine.ApplyMode_APPLY_MODE_STAGED},
		{in: "try", want: machine.ApplyMode_APPLY_MODE_TRY},
		{in: "NO_REBOOT", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseApplyMode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseApplyMode(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil && modeName(got) != tt.in {
				t.Errorf("modeName(%v) = %q, want %q", got, modeName(got), tt.in)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	isolate(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown flag", args: []string{"services", "--bogus"}, want: `kctl: unknown flag: --bogus (see "kctl services --help")` + "\n"},
		{name: "unknown command", args: []string{"bogus"}, want: `kctl: unknown command "bogus" for "kctl"` + "\n"},
		{name: "bad output", args: []string{"services", "-o", "xml"}, want: `kctl: --output "xml": want one of table, yaml, json` + "\n"},
		{name: "bad mode", args: []string{"apply-config", "-f", "x", "--mode", "now"}, want: `kctl: --mode "now": want one of auto, no-reboot, reboot, staged, try` + "\n"},
		{name: "missing file flag", args: []string{"apply-config"}, want: `kctl: required flag(s) "file" not set` + "\n"},
		{name: "bad service action", args: []string{"-i", "-n", "x", "service", "etcd", "explode"}, want: `kctl: service action "explode": want start, stop, restart or status` + "\n"},
		{name: "no targets", args: []string{"--insecure", "services"}, want: "kctl: no nodes to talk to: pass --nodes (or --endpoints), or set them in the client config's context\n"},
		{name: "bad fingerprint", args: []string{"-n", "x", "--cert-fingerprint", "zz", "version"}, want: `kctl: x: client: fingerprint "zz": want the SHA-256 of the certificate as 64 hex digits` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := kctl(t, tt.args...)
			if err == nil {
				t.Fatalf("kctl %v succeeded", tt.args)
			}
			if diff := cmp.Diff(tt.want, stderr); diff != "" {
				t.Errorf("kctl %v stderr (-want +got):\n%s", tt.args, diff)
			}
		})
	}
	t.Run("no client config", func(t *testing.T) {
		path := isolate(t)
		_, stderr, err := kctl(t, "-n", "x", "services")
		want := "kctl: no client config at " + path + ": run 'kctl config merge kctlconfig' after 'kctl gen config', or pass --insecure for a node in maintenance mode\n"
		if err == nil || stderr != want {
			t.Errorf("kctl services without a config: stderr %q, want %q", stderr, want)
		}
	})
}

func TestTargets(t *testing.T) {
	path := isolate(t)
	cfg := clientconfig.New()
	cfg.Context = "a"
	cfg.Contexts["a"] = clientconfig.NewContext([]string{"ep-a"}, []string{"node-a1", "node-a2"}, []byte("ca"), []byte("crt"), []byte("key"))
	cfg.Contexts["b"] = &clientconfig.Context{Endpoints: []string{"ep-b"}}
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{name: "context nodes", args: []string{"-i"}, want: []string{"node-a1", "node-a2"}},
		{name: "context endpoints", args: []string{"-i", "--context", "b"}, want: []string{"ep-b"}},
		{name: "flag endpoints", args: []string{"-i", "-e", "e1"}, want: []string{"e1"}},
		{name: "flag nodes win", args: []string{"-i", "-e", "e1", "-n", "n1"}, want: []string{"n1"}},
		{name: "missing context", args: []string{"--context", "zz"}, wantErr: `client config ` + path + `: no such context "zz" (have: a, b)`},
		{name: "context without credentials", args: []string{"--context", "b"}, wantErr: "the context has no ca, crt and key"},
		{name: "other config file", args: []string{"-i", "--kctlconfig", filepath.Join(t.TempDir(), "none")}, wantErr: "no nodes to talk to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := parse(t, append([]string{"version"}, tt.args...)...)
			conn, err := g.connect()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("connect() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("connect(): %v", err)
			}
			if diff := cmp.Diff(tt.want, conn.targets); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigCommands(t *testing.T) {
	path := isolate(t)
	dir := t.TempDir()
	if _, stderr, err := kctl(t, "gen", "config", "demo", "10.0.0.2", "--output-dir", dir); err != nil {
		t.Fatalf("kctl gen config: %v\n%s", err, stderr)
	}
	kc := filepath.Join(dir, KctlconfigFile)
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"config", "merge", kc}, "merged context demo\ncurrent context: demo\n"},
		{[]string{"config", "merge", kc}, "merged context demo\ncurrent context: demo\n"},
	}
	for _, s := range steps {
		stdout, stderr, err := kctl(t, s.args...)
		if err != nil {
			t.Fatalf("kctl %v: %v\n%s", s.args, err, stderr)
		}
		if diff := cmp.Diff(s.want, stdout); diff != "" {
			t.Errorf("kctl %v (-want +got):\n%s", s.args, diff)
		}
	}
	// A different cluster of the same name is renamed.
	dir2 := t.TempDir()
	if _, stderr, err := kctl(t, "gen", "config", "demo", "10.0.0.9", "--output-dir", dir2); err != nil {
		t.Fatalf("kctl gen config: %v\n%s", err, stderr)
	}
	stdout, _, err := kctl(t, "config", "merge", filepath.Join(dir2, KctlconfigFile))
	if err != nil || stdout != "merged context demo as demo-1\ncurrent context: demo-1\n" {
		t.Errorf("kctl config merge of a second demo = %q, %v", stdout, err)
	}
	stdout, _, err = kctl(t, "config", "context", "demo")
	if err != nil || stdout != "current context: demo\n" {
		t.Errorf("kctl config context demo = %q, %v", stdout, err)
	}
	if _, _, err := kctl(t, "config", "context", "nope"); err == nil {
		t.Errorf("kctl config context nope succeeded")
	}
	stdout, _, err = kctl(t, "config", "contexts")
	want := "CURRENT   NAME     ENDPOINTS   NODES\n*         demo     10.0.0.2    -\n          demo-1   10.0.0.9    -\n"
	if err != nil || stdout != want {
		t.Errorf("kctl config contexts =\n%s, %v; want\n%s", stdout, err, want)
	}
	stdout, _, err = kctl(t, "config", "info")
	if err != nil || !strings.Contains(stdout, "Roles:                 os:admin\n") || !strings.Contains(stdout, path) {
		t.Errorf("kctl config info =\n%s, %v", stdout, err)
	}
}

package cmd

import (
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// parseFile runs a written machine config through config.Parse.
func parseFile(t *testing.T, path string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("config.Parse(%s): %v", path, err)
	}
	return cfg
}

func b64PEM(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("decode base64: %v", err)
	}
	return b
}

func TestGenConfig(t *testing.T) {
	isolate(t)
	dir := filepath.Join(t.TempDir(), "out")
	patchFile := filepath.Join(t.TempDir(), "worker-patch.json")
	writeFile(t, patchFile, `[{"op": "add", "path": "/machine/hostname", "value": "worker-1"}]`)

	stdout, stderr, err := kctl(t, "gen", "config", "demo", "https://10.0.0.2:6443", "--output-dir", dir,
		"--config-patch", "cluster:\n  allowSchedulingOnControlPlanes: true\n",
		"--config-patch-control-plane", "machine:\n  hostname: cp-1\n",
		"--config-patch-worker", "@"+patchFile,
	)
	if err != nil {
		t.Fatalf("kctl gen config: %v\n%s", err, stderr)
	}
	var want string
	for _, n := range []string{SecretsFile, ControlPlaneFile, WorkerFile, KctlconfigFile} {
		want += "created " + filepath.Join(dir, n) + "\n"
	}
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("kctl gen config output (-want +got):\n%s", diff)
	}
	for _, n := range []string{SecretsFile, ControlPlaneFile, WorkerFile, KctlconfigFile} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("mode of %s = %o, want 600", n, perm)
		}
	}

	cp := parseFile(t, filepath.Join(dir, ControlPlaneFile))
	wk := parseFile(t, filepath.Join(dir, WorkerFile))
	if !cp.IsControlPlane() || wk.IsControlPlane() {
		t.Errorf("types: controlplane.yaml is %s, worker.yaml is %s", cp.Type(), wk.Type())
	}
	if cp.ClusterName() != "demo" || wk.ClusterName() != "demo" {
		t.Errorf("cluster names %q, %q, want demo", cp.ClusterName(), wk.ClusterName())
	}
	// Patches: common to both, then per type.
	if got := [2]bool{cp.Machine.Cluster.AllowSchedulingOnControlPlanes, wk.Machine.Cluster.AllowSchedulingOnControlPlanes}; got != [2]bool{true, true} {
		t.Errorf("common patch applied = %v, want both", got)
	}
	if cp.Hostname() != "cp-1" || wk.Hostname() != "worker-1" {
		t.Errorf("hostnames = %q, %q, want cp-1, worker-1", cp.Hostname(), wk.Hostname())
	}

	// The secrets file holds the CA the configs carry.
	bundle, err := secrets.LoadBundle(filepath.Join(dir, SecretsFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := b64PEM(t, cp.Machine.Machine.CA.Crt); !slices.Equal(got, bundle.MachineCA.Crt) {
		t.Errorf("controlplane machine.ca.crt differs from secrets.yaml's machine CA")
	}

	// The client config: context named after the cluster, the endpoint's
	// host, an os:admin certificate from the machine CA.
	kc, err := clientconfig.Load(filepath.Join(dir, KctlconfigFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, name, err := kc.Current("")
	if err != nil {
		t.Fatal(err)
	}
	if name != "demo" || !cmp.Equal(ctx.Endpoints, []string{"10.0.0.2"}) {
		t.Errorf("kctlconfig context %q with endpoints %v, want demo with [10.0.0.2]", name, ctx.Endpoints)
	}
	caPEM, crtPEM, _, err := ctx.PEM()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(caPEM, bundle.MachineCA.Crt) {
		t.Errorf("kctlconfig ca is not the machine CA")
	}
	crt, err := parseCertPEM(crtPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle.MachineCA.Crt)
	if _, err := crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate does not verify against the machine CA: %v", err)
	}
	if !cmp.Equal(crt.Subject.Organization, []string{"os:admin"}) {
		t.Errorf("admin certificate Organization = %v, want [os:admin]", crt.Subject.Organization)
	}

	// A second run refuses to overwrite, and writes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, ControlPlaneFile))
	_, stderr, err = kctl(t, "gen", "config", "demo", "10.0.0.2", "--output-dir", dir)
	if err == nil || !strings.Contains(stderr, "already exists: remove it or pass --force") {
		t.Errorf("second kctl gen config: err = %v, stderr %q; want a refusal", err, stderr)
	}
	after, _ := os.ReadFile(filepath.Join(dir, ControlPlaneFile))
	if !slices.Equal(before, after) {
		t.Errorf("a refused kctl gen config changed %s", ControlPlaneFile)
	}
	// --force overwrites.
	if _, stderr, err := kctl(t, "gen", "config", "demo", "10.0.0.2", "--output-dir", dir, "--force"); err != nil {
		t.Fatalf("kctl gen config --force: %v\n%s", err, stderr)
	}
	after, _ = os.ReadFile(filepath.Join(dir, ControlPlaneFile))
	if slices.Equal(before, after) {
		t.Errorf("kctl gen config --force left %s as it was", ControlPlaneFile)
	}
}

func TestGenConfigWithSecrets(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	secretsPath := filepath.Join(dir, "s.yaml")
	if _, stderr, err := kctl(t, "gen", "secrets", "-o", secretsPath); err != nil {
		t.Fatalf("kctl gen secrets: %v\n%s", err, stderr)
	}
	if _, _, err := kctl(t, "gen", "secrets", "-o", secretsPath); err == nil {
		t.Errorf("kctl gen secrets over an existing file succeeded")
	}
	secretsBefore, err := os.ReadFile(secretsPath)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := secrets.LoadBundle(secretsPath)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if _, stderr, err := kctl(t, "gen", "config", "demo", "10.0.0.2", "--output-dir", out, "--with-secrets", secretsPath); err != nil {
		t.Fatalf("kctl gen config --with-secrets: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, SecretsFile)); err == nil {
		t.Errorf("kctl gen config --with-secrets wrote %s", SecretsFile)
	}
	if after, _ := os.ReadFile(secretsPath); !slices.Equal(secretsBefore, after) {
		t.Errorf("kctl gen config --with-secrets changed the secrets file")
	}
	cp := parseFile(t, filepath.Join(out, ControlPlaneFile))
	wk := parseFile(t, filepath.Join(out, WorkerFile))
	m, c := cp.Machine.Machine, cp.Machine.Cluster
	for _, x := range []struct {
		name      string
		got, want []byte
	}{
		{"machine.ca.crt", b64PEM(t, m.CA.Crt), bundle.MachineCA.Crt},
		{"machine.ca.key", b64PEM(t, m.CA.Key), bundle.MachineCA.Key},
		{"cluster.ca.crt", b64PEM(t, c.CA.Crt), bundle.KubernetesCA.Crt},
		{"cluster.ca.key", b64PEM(t, c.CA.Key), bundle.KubernetesCA.Key},
		{"cluster.etcd.ca.crt", b64PEM(t, c.Etcd.CA.Crt), bundle.EtcdCA.Crt},
		{"cluster.aggregatorCA.crt", b64PEM(t, c.AggregatorCA.Crt), bundle.AggregatorCA.Crt},
		{"cluster.serviceAccount.key", b64PEM(t, c.ServiceAccount.Key), bundle.ServiceAccountKey},
		{"worker machine.ca.crt", b64PEM(t, wk.Machine.Machine.CA.Crt), bundle.MachineCA.Crt},
	} {
		if !slices.Equal(x.got, x.want) {
			t.Errorf("%s is not the bundle's, byte for byte", x.name)
		}
	}
	if m.Token != bundle.MachineToken || c.Token != bundle.BootstrapToken {
		t.Errorf("tokens differ from the bundle's")
	}
}

func TestGenConfigErrors(t *testing.T) {
	isolate(t)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "missing endpoint", args: []string{"gen", "config", "demo"}, wantErr: "kctl: accepts 2 arg(s), received 1\n"},
		{name: "bad patch file", args: []string{"gen", "config", "demo", "10.0.0.2", "--config-patch", "@/nonexistent/p.yaml"}, wantErr: "kctl: --config-patch: "},
		{name: "patch breaking the config", args: []string{"gen", "config", "demo", "10.0.0.2", "--config-patch-worker", "machine:\n  type: boss\n"}, wantErr: "kctl: worker.yaml: "},
		{name: "missing secrets", args: []string{"gen", "config", "demo", "10.0.0.2", "--with-secrets", "/nonexistent/s.yaml"}, wantErr: "kctl: read secrets: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, stderr, err := kctl(t, append(tt.args, "--output-dir", dir)...)
			if err == nil || !strings.HasPrefix(stderr, tt.wantErr) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("kctl %v: err = %v, stderr %q; want one line starting %q", tt.args, err, stderr, tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("kctl %v failed but wrote %d files", tt.args, len(entries))
			}
		})
	}
}

func TestValidate(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	if _, stderr, err := kctl(t, "gen", "config", "demo", "10.0.0.2", "--output-dir", dir); err != nil {
		t.Fatalf("kctl gen config: %v\n%s", err, stderr)
	}
	good := filepath.Join(dir, WorkerFile)
	stdout, stderr, err := kctl(t, "validate", "-f", good)
	if err != nil || stdout != good+" is valid\n" || stderr != "" {
		t.Errorf("kctl validate %s = %q, %q, %v; want %q", good, stdout, stderr, err, good+" is valid\n")
	}

	bad := filepath.Join(dir, "bad.yaml")
	data := "apiVersion: kiln.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  type: boss\n  bogus: 1\n"
	writeFile(t, bad, data)
	_, parseErr := config.Parse([]byte(data))
	if parseErr == nil {
		t.Fatal("config.Parse accepted the bad config")
	}
	stdout, stderr, err = kctl(t, "validate", "-f", bad)
	if err == nil {
		t.Fatalf("kctl validate %s succeeded", bad)
	}
	if stdout != "" {
		t.Errorf("kctl validate of a bad file printed %q on stdout", stdout)
	}
	if want := "kctl: " + bad + ": " + parseErr.Error() + "\n"; stderr != want {
		t.Errorf("kctl validate stderr (-want +got):\n%s", cmp.Diff(want, stderr))
	}
	for _, path := range []string{"machine.type: ", "machine.bogus: "} {
		if !strings.Contains(stderr, "\n"+path) {
			t.Errorf("kctl validate stderr lacks a line for %q:\n%s", path, stderr)
		}
	}
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaults(t *testing.T) {
	c := mustParse(t, "testdata/valid/worker-minimal-services.yaml")
	got := map[string]any{
		"podSubnets":     c.Machine.Cluster.Network.PodSubnets,
		"serviceSubnets": c.Machine.Cluster.Network.ServiceSubnets,
		"dnsDomain":      c.Machine.Cluster.Network.DNSDomain,
		"proxy":          c.Machine.Cluster.Proxy.Mode,
		"time":           c.Machine.Machine.Time.Servers,
		"restart":        c.Services[0].Restart,
	}
	want := map[string]any{
		"podSubnets":     []string{"10.244.0.0/16"},
		"serviceSubnets": []string{"10.96.0.0/12"},
		"dnsDomain":      "cluster.local",
		"proxy":          "ebpf",
		"time":           []string{"time.cloudflare.com"},
		"restart":        RestartAlways,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if c.Type() != TypeWorker || c.IsControlPlane() || c.Hostname() != "" || c.ClusterName() != "demo" {
		t.Errorf("accessors: type %q hostname %q cluster %q", c.Type(), c.Hostname(), c.ClusterName())
	}
	u, err := c.Endpoint()
	if err != nil || u.Host != "10.0.0.2:6443" {
		t.Errorf("Endpoint() = %v, %v", u, err)
	}

	cp := mustParse(t, "testdata/valid/controlplane.yaml")
	db := cp.Service("db")
	if db == nil || db.HealthCheck.Interval != DefaultHealthCheckInterval || db.HealthCheck.Timeout != DefaultHealthCheckTimeout {
		t.Errorf("db health check defaults = %+v", db)
	}
	if web := cp.Service("web"); web.HealthCheck.Timeout != 2*time.Second || web.Restart != RestartOnFailure {
		t.Errorf("web = %+v, want explicit values kept", web)
	}
	if f := cp.Machine.Machine.Files[0]; f.Permissions != 0o644 || f.Op != FileOpCreate || f.Content != "hello\n" {
		t.Errorf("file = %+v", f)
	}
	// Numbers in string lists stay as written.
	if got := cp.Service("web").Args; !slices.Equal(got, []string{"--port", "8080"}) {
		t.Errorf("args = %q", got)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *Error
		want string
	}{
		{"one", &Error{Problems: []FieldError{{"machine.network.interfaces[0].addresses[1]", `"10.0.0.300/24" is not a valid CIDR`}}},
			`machine.network.interfaces[0].addresses[1]: "10.0.0.300/24" is not a valid CIDR`},
		{"two", &Error{Problems: []FieldError{{"a", "x"}, {"", "y"}}}, "2 problems in machine config:\na: x\ny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
	_, err := Parse([]byte("kind: MachineConfig\nmachine: {type: nope}\n"))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Parse error %T is not a *Error", err)
	}
	// Document order: apiVersion (missing, reported at the end of the
	// document) comes after machine.type, which is on line 2.
	if cerr.Problems[0].Path != "machine.type" {
		t.Errorf("first problem = %v, want machine.type", cerr.Problems[0])
	}
}

func TestRedacted(t *testing.T) {
	c := mustParse(t, "testdata/valid/controlplane.yaml")
	before, _ := c.Bytes()
	r := c.Redacted()
	after, _ := c.Bytes()
	if string(before) != string(after) {
		t.Fatal("Redacted modified its receiver")
	}
	m, cl := r.Machine.Machine, r.Machine.Cluster
	for path, got := range map[string]string{
		"machine.token":                     m.Token,
		"machine.ca.key":                    m.CA.Key,
		"cluster.ca.key":                    cl.CA.Key,
		"cluster.etcd.ca.key":               cl.Etcd.CA.Key,
		"cluster.aggregatorCA.key":          cl.AggregatorCA.Key,
		"cluster.serviceAccount.key":        cl.ServiceAccount.Key,
		"cluster.token":                     cl.Token,
		"cluster.secretboxEncryptionSecret": cl.SecretboxEncryptionSecret,
	} {
		if got != RedactedValue {
			t.Errorf("Redacted() %s = %q, want %q", path, got, RedactedValue)
		}
	}
	if m.CA.Crt != c.Machine.Machine.CA.Crt {
		t.Error("Redacted() changed a certificate")
	}
	// A worker's absent secrets stay absent.
	w := mustParse(t, "testdata/valid/worker.yaml").Redacted()
	if w.Machine.Machine.CA.Key != "" || w.Machine.Cluster.SecretboxEncryptionSecret != "" {
		t.Error("Redacted() invented secrets for a worker")
	}
	// Deep: changing the copy leaves the original alone.
	r.Machine.Machine.Network.Interfaces[0].Addresses[0] = "changed"
	r.Services[0].Environment["LOG_LEVEL"] = "changed"
	if c.Machine.Machine.Network.Interfaces[0].Addresses[0] == "changed" || c.Services[0].Environment["LOG_LEVEL"] == "changed" {
		t.Error("Redacted() shares memory with the original")
	}
}

func TestDiff(t *testing.T) {
	old := mustParse(t, "testdata/valid/controlplane.yaml")
	if d := Diff(old, old.DeepCopy()); d != "" {
		t.Errorf("Diff(equal) = %q, want empty", d)
	}
	changed := old.DeepCopy()
	changed.Machine.Machine.Hostname = "cp-2"
	changed.Machine.Cluster.Token = "zzzzzz.zzzzzzzzzzzzzzzz"
	d := Diff(old, changed)
	for _, want := range []string{"--- old\n+++ new\n@@ ", "-  hostname: cp-1\n", "+  hostname: cp-2\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("Diff() lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "zzzzzz") || strings.Contains(d, "+  token:") {
		t.Errorf("Diff() shows a secret (or a redacted no-change):\n%s", d)
	}
	full := Diff(nil, old)
	if !strings.HasPrefix(full, "--- old\n+++ new\n@@ -0,0 +1,") || strings.Contains(full, "\n-") {
		t.Errorf("Diff(nil, c) is not all additions:\n%.300s", full)
	}
}

func TestUnifiedDiffHunks(t *testing.T) {
	a := strings.Split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", " ")
	b := slices.Clone(a)
	b[1] = "two"
	b[17] = "eighteen"
	got := unifiedDiff("a", "b", a, b)
	want := "--- a\n+++ b\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n@@ -15,6 +15,6 @@\n 15\n 16\n 17\n-18\n+eighteen\n 19\n 20\n"
	if got != want {
		t.Errorf("unifiedDiff =\n%s\nwant\n%s", got, want)
	}
}

func TestRebootRequired(t *testing.T) {
	base := mustParse(t, "testdata/valid/controlplane.yaml")
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"hostname", func(c *Config) { c.Machine.Machine.Hostname = "x" }, nil},
		{"network", func(c *Config) { c.Machine.Machine.Network.Interfaces[0].MTU = 9000 }, nil},
		{"sysctls", func(c *Config) { c.Machine.Machine.Sysctls["vm.swappiness"] = "1" }, nil},
		{"services", func(c *Config) { c.Services = c.Services[:1] }, nil},
		{"proxy", func(c *Config) { c.Machine.Cluster.Proxy.Mode = ProxyModeDisabled }, nil},
		{"kubelet", func(c *Config) { c.Machine.Machine.Kubelet.NodeLabels = nil }, nil},
		{"type", func(c *Config) { c.Machine.Machine.Type = TypeWorker }, []string{"machine.type"}},
		{"install+kernel", func(c *Config) {
			c.Machine.Machine.Install.Disk = "/dev/sda"
			c.Machine.Machine.KernelArgs = nil
		}, []string{"machine.install", "machine.kernelArgs"}},
		{"secrets", func(c *Config) {
			c.Machine.Machine.CA.Key = ""
			c.Machine.Cluster.Name = "other"
			c.Machine.Cluster.Etcd.CA.Key = ""
			c.Machine.Cluster.SecretboxEncryptionSecret = "x"
		}, []string{"machine.ca", "cluster.name", "cluster.etcd", "cluster.secretboxEncryptionSecret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := base.DeepCopy()
			tc.change(n)
			if diff := cmp.Diff(tc.want, RebootRequired(base, n)); diff != "" {
				t.Errorf("RebootRequired (-want +got):\n%s", diff)
			}
		})
	}
	if got := RebootRequired(nil, base); got != nil {
		t.Errorf("RebootRequired(nil, c) = %v, want nil", got)
	}
}

// Every field of the machine and cluster sections must be classified as
// live or reboot, or a new field would silently apply live.
func TestRebootFieldsComplete(t *testing.T) {
	var want []string
	for prefix, typ := range map[string]reflect.Type{"machine": reflect.TypeFor[MachineSpec](), "cluster": reflect.TypeFor[ClusterSpec]()} {
		for name := range yamlFields(typ) {
			want = append(want, prefix+"."+name)
		}
	}
	var got []string
	for _, f := range rebootFields {
		got = append(got, f.path)
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rebootFields do not cover the fields (-fields +classified):\n%s", diff)
	}
}

func TestWarnings(t *testing.T) {
	if w := mustParse(t, "testdata/valid/controlplane.yaml").Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q, want none", w)
	}
	w := mustParse(t, "testdata/valid/worker.yaml")
	if got := w.Warnings(); len(got) != 0 {
		t.Errorf("worker Warnings() = %q, want none", got)
	}
	cp := mustParse(t, "testdata/valid/controlplane.yaml")
	w.Machine.Machine.CA.Key = cp.Machine.Machine.CA.Key
	w.Machine.Cluster.SecretboxEncryptionSecret = cp.Machine.Cluster.SecretboxEncryptionSecret
	got := w.Warnings()
	if len(got) != 2 || !strings.HasPrefix(got[0], "machine.ca.key: ") || !strings.HasPrefix(got[1], "cluster.secretboxEncryptionSecret: ") {
		t.Errorf("worker with keys: Warnings() = %q", got)
	}

	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return time.Now().Add(20 * 365 * 24 * time.Hour) }
	if got := cp.Warnings(); len(got) != 4 || !strings.Contains(got[0], "expired") {
		t.Errorf("in 20 years: Warnings() = %q, want 4 expired CAs", got)
	}
}

func TestValidateGoBuilt(t *testing.T) {
	if err := (&Config{}).Validate(); err == nil {
		t.Error("Validate() of an empty Config = nil")
	}
	c := mustParse(t, "testdata/valid/controlplane.yaml")
	c.Machine.Machine.Network.Interfaces[0].MTU = 1
	var cerr *Error
	if err := c.Validate(); !errors.As(err, &cerr) || cerr.Problems[0].Path != "machine.network.interfaces[0].mtu" {
		t.Errorf("Validate() = %v, want the MTU problem", err)
	}
}

func TestAliasBomb(t *testing.T) {
	// 100 interfaces x 100 VLANs x 100 routes from a few hundred bytes:
	// aliases must not multiply the work without bound.
	rep := func(alias string) string { return strings.Repeat(", "+alias, 99) }
	doc := "apiVersion: kiln.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  network:\n    interfaces: [&i {interface: eth0, vlans: [&v {vlanId: 1, routes: [&r {network: 0.0.0.0/0}" +
		rep("*r") + "]}" + rep("*v") + "]}" + rep("*i") + "]\n"
	done := make(chan error, 1)
	go func() { _, err := Parse([]byte(doc)); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "too large") {
			t.Errorf("Parse(alias bomb) = %v, want a 'too large' problem", err)
		}
	case <-time.After(2 * time.Minute): // hang protection only
		t.Fatal("Parse(alias bomb) did not return")
	}
}

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("Parse error %v (%T) is not a non-empty *Error", err, err)
			}
			return
		}
		out, err := c.Bytes()
		if err != nil {
			t.Fatalf("Bytes() = %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Bytes()) = %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, c2, equateConfigs); diff != "" {
			t.Fatalf("round trip differs (-first +second):\n%s", diff)
		}
		_ = c.Redacted()
		_ = Diff(nil, c)
		_ = c.Warnings()
	})
}

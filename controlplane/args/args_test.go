package args

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/controlplane/pki"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedSecretbox keeps the EncryptionConfiguration golden stable.
const fixedSecretbox = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// testConfigs returns configs as `kctl gen config` writes them (dual stack,
// extra kubelet settings) with the secretbox key pinned.
func testConfigs(t *testing.T) *generate.Output {
	t.Helper()
	b, err := secrets.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	out, err := generate.Generate("kiln", "https://kiln.example:6443", b, generate.Options{
		PodSubnets:     []string{"10.244.0.0/16", "fd00:10:244::/56"},
		ServiceSubnets: []string{"10.96.0.0/12", "fd00:10:96::/112"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*config.Config{out.ControlPlane, out.Worker} {
		c.Machine.Cluster.SecretboxEncryptionSecret = fixedSecretbox
		c.Machine.Machine.Kubelet = config.KubeletConfig{
			ExtraArgs:  map[string]string{"max-pods": "200", "--v": "2"},
			NodeLabels: map[string]string{"zone": "a", "kiln.dev/board": "generic-amd64"},
			NodeTaints: map[string]string{"dedicated": "infra:NoExecute", "gpu": "NoSchedule"},
		}
	}
	return out
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func lines(f Flags) []byte { return []byte(strings.Join(f.Args(), "\n") + "\n") }

func TestGolden(t *testing.T) {
	cfgs := testConfigs(t)
	node := pki.Node{Name: "cp-1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}}
	cp := Input{Config: cfgs.ControlPlane, Node: node, Paths: NodePaths}
	wk := Input{Config: cfgs.Worker, Node: pki.Node{Name: "w-1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.20")}}, Paths: NodePaths}
	flagSets := []struct {
		name string
		fn   func(Input) (Flags, error)
		in   Input
	}{
		{"etcd", Etcd, cp},
		{"kube-apiserver", APIServer, cp},
		{"kube-controller-manager", ControllerManager, cp},
		{"kube-scheduler", Scheduler, cp},
		{"kubelet-controlplane", Kubelet, cp},
		{"kubelet-worker", Kubelet, wk},
	}
	for _, tt := range flagSets {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tt.fn(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".args", lines(f))
		})
	}
	files := []struct {
		name string
		fn   func(Input) ([]byte, error)
		in   Input
	}{
		{"encryption-config.yaml", EncryptionConfig, cp},
		{"kubelet-config-controlplane.yaml", KubeletConfig, cp},
		{"kubelet-config-worker.yaml", KubeletConfig, wk},
	}
	for _, tt := range files {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.fn(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, got)
		})
	}
}

func TestEtcdLoopbackNode(t *testing.T) {
	cfgs := testConfigs(t)
	f, err := Etcd(Input{Config: cfgs.ControlPlane, Node: pki.Node{Name: "h", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, Paths: NodePaths})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f["listen-client-urls"], "https://127.0.0.1:2379"; got != want {
		t.Errorf("listen-client-urls = %q, want %q (no duplicate)", got, want)
	}
}

func TestAllowSchedulingOnControlPlanes(t *testing.T) {
	cfgs := testConfigs(t)
	cfgs.ControlPlane.Machine.Cluster.AllowSchedulingOnControlPlanes = true
	got, err := KubeletConfig(Input{Config: cfgs.ControlPlane, Node: pki.Node{Name: "cp", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}, Paths: NodePaths})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), ControlPlaneTaint) {
		t.Errorf("KubeletConfig has %s although scheduling on control planes is allowed:\n%s", ControlPlaneTaint, got)
	}
}

func TestEncryptionConfigRejectsBadKey(t *testing.T) {
	cfgs := testConfigs(t)
	for _, key := range []string{"", "c2hvcnQ=", "not base64!"} {
		cfgs.ControlPlane.Machine.Cluster.SecretboxEncryptionSecret = key
		if _, err := EncryptionConfig(Input{Config: cfgs.ControlPlane, Node: pki.Node{Name: "cp", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}}); err == nil {
			t.Errorf("EncryptionConfig(secret %q) = nil error, want one", key)
		}
	}
}

func TestSelectNodeIPs(t *testing.T) {
	addrs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("fe80::1"),
		netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("192.168.1.5"),
		netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("2001:db8:1::5"),
	}
	tests := []struct {
		name    string
		subnets []string
		want    string
		wantErr bool
	}{
		{"default", nil, "10.0.0.5,2001:db8::5", false},
		{"subnets", []string{"192.168.0.0/16", "2001:db8:1::/48"}, "192.168.1.5,2001:db8:1::5", false},
		{"v4 only", []string{"192.168.0.0/16"}, "192.168.1.5", false},
		{"no match", []string{"172.16.0.0/12"}, "", true},
		{"bad subnet", []string{"x"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SelectNodeIPs(addrs, tt.subnets)
			if (err != nil) != tt.wantErr {
				t.Fatalf("SelectNodeIPs(%v) error = %v, want error %v", tt.subnets, err, tt.wantErr)
			}
			if s := join(got); s != tt.want {
				t.Errorf("SelectNodeIPs(%v) = %s, want %s", tt.subnets, s, tt.want)
			}
		})
	}
}

func TestClusterDNSIPs(t *testing.T) {
	got, err := ClusterDNSIPs([]string{"10.96.0.0/12", "fd00:10:96::/112"})
	if err != nil || join(got) != "10.96.0.10,fd00:10:96::a" {
		t.Errorf("ClusterDNSIPs = %v, %v; want 10.96.0.10,fd00:10:96::a", got, err)
	}
	if _, err := ClusterDNSIPs([]string{"10.0.0.0/29"}); err == nil {
		t.Error("ClusterDNSIPs(/29) = nil error, want too small")
	}
}

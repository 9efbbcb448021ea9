package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

var (
	bundleOnce sync.Once
	bundle     *secrets.Bundle
	bundleErr  error
)

// testConfigs returns the controlplane and worker configs `kctl gen config`
// would write for a cluster at https://kiln.example:6443 with dual-stack
// service subnets.
func testConfigs(t *testing.T) *generate.Output {
	t.Helper()
	bundleOnce.Do(func() { bundle, bundleErr = secrets.NewBundle() })
	if bundleErr != nil {
		t.Fatal(bundleErr)
	}
	out, err := generate.Generate("kiln", "https://kiln.example:6443", bundle, generate.Options{
		CertSANs:       []string{"api.kiln.example", "203.0.113.7"},
		PodSubnets:     []string{"10.244.0.0/16", "fd00:10:244::/56"},
		ServiceSubnets: []string{"10.96.0.0/12", "fd00:10:96::/112"},
		DNSDomain:      "kiln.local",
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var testNode = Node{Name: "cp-1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}}

func parseCert(t *testing.T, name string, data []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", name)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func TestGenerateControlPlaneCertificates(t *testing.T) {
	cfgs := testConfigs(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	set, err := Generate(cfgs.ControlPlane, testNode, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	anySAN := []string{}
	tests := []struct {
		crt, key, ca string
		cn           string
		org          []string
		usage        x509.ExtKeyUsage
		dns, ips     []string // nil: no SANs allowed; anySAN: not checked
	}{
		{FileAPIServerCrt, FileAPIServerKey, FileCACrt, "kube-apiserver", nil, x509.ExtKeyUsageServerAuth,
			[]string{"cp-1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.kiln.local", "kiln.example", "api.kiln.example"},
			[]string{"127.0.0.1", "::1", "192.0.2.10", "2001:db8::10", "10.96.0.1", "fd00:10:96::1", "203.0.113.7"}},
		{FileAPIServerKubeletCrt, FileAPIServerKubeletKey, FileCACrt, CNAPIServerKubelet, []string{OrgMasters}, x509.ExtKeyUsageClientAuth, nil, nil},
		{FileAPIServerEtcdCrt, FileAPIServerEtcdKey, FileEtcdCACrt, CNAPIServerEtcd, nil, x509.ExtKeyUsageClientAuth, nil, nil},
		{FileFrontProxyClientCrt, FileFrontProxyClientKey, FileFrontProxyCACrt, CNFrontProxyClient, nil, x509.ExtKeyUsageClientAuth, nil, nil},
		{FileEtcdServerCrt, FileEtcdServerKey, FileEtcdCACrt, "cp-1", nil, x509.ExtKeyUsageServerAuth,
			[]string{"localhost", "cp-1"}, []string{"127.0.0.1", "::1", "192.0.2.10", "2001:db8::10"}},
		{FileEtcdServerCrt, FileEtcdServerKey, FileEtcdCACrt, "cp-1", nil, x509.ExtKeyUsageClientAuth, anySAN, anySAN},
		{FileEtcdPeerCrt, FileEtcdPeerKey, FileEtcdCACrt, "cp-1", nil, x509.ExtKeyUsageServerAuth, anySAN, anySAN},
		{FileEtcdPeerCrt, FileEtcdPeerKey, FileEtcdCACrt, "cp-1", nil, x509.ExtKeyUsageClientAuth,
			[]string{"localhost", "cp-1"}, []string{"127.0.0.1", "::1", "192.0.2.10", "2001:db8::10"}},
		{FileEtcdHealthcheckCrt, FileEtcdHealthcheckKey, FileEtcdCACrt, "kube-etcd-healthcheck-client", nil, x509.ExtKeyUsageClientAuth, nil, nil},
		{FileKubeletServerCrt, FileKubeletServerKey, FileCACrt, "cp-1", nil, x509.ExtKeyUsageServerAuth, []string{"cp-1"}, []string{"192.0.2.10", "2001:db8::10"}},
	}
	for _, tt := range tests {
		t.Run(tt.crt+"/"+usageName(tt.usage), func(t *testing.T) {
			crt := parseCert(t, tt.crt, set.Get(tt.crt))
			if _, err := secretsPair(set, tt.crt, tt.key).TLSCertificate(); err != nil {
				t.Errorf("key %s does not match %s: %v", tt.key, tt.crt, err)
			}
			checkLeaf(t, crt, set.Get(tt.ca), tt.usage, tt.cn, tt.org)
			if tt.dns != nil && len(tt.dns) == 0 && tt.ips != nil && len(tt.ips) == 0 {
				return // anySAN
			}
			if diff := cmp.Diff(tt.dns, crt.DNSNames); diff != "" {
				t.Errorf("%s DNS SANs (-want +got):\n%s", tt.crt, diff)
			}
			if diff := cmp.Diff(tt.ips, ipStrings(crt.IPAddresses)); diff != "" {
				t.Errorf("%s IP SANs (-want +got):\n%s", tt.crt, diff)
			}
			if !crt.NotBefore.Before(now) || !crt.NotAfter.After(now.Add(300*24*time.Hour)) {
				t.Errorf("%s valid %v..%v, want around %v + 1 year", tt.crt, crt.NotBefore, crt.NotAfter, now)
			}
		})
	}

	// A certificate must not verify against a CA that did not sign it:
	// the etcd client certificate is useless to the Kubernetes CA.
	t.Run("wrong CA", func(t *testing.T) {
		crt := parseCert(t, FileAPIServerEtcdCrt, set.Get(FileAPIServerEtcdCrt))
		if err := verify(crt, set.Get(FileCACrt), x509.ExtKeyUsageClientAuth); err == nil {
			t.Errorf("%s verifies against %s", FileAPIServerEtcdCrt, FileCACrt)
		}
		crt = parseCert(t, FileAPIServerCrt, set.Get(FileAPIServerCrt))
		if err := verify(crt, set.Get(FileCACrt), x509.ExtKeyUsageClientAuth); err == nil {
			t.Errorf("%s verifies for client auth; it is a serving certificate", FileAPIServerCrt)
		}
	})
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "server"
	}
	return "client"
}

func secretsPair(s *Set, crt, key string) *secrets.KeyPair {
	return &secrets.KeyPair{Crt: s.Get(crt), Key: s.Get(key)}
}

func verify(crt *x509.Certificate, caPEM []byte, usage x509.ExtKeyUsage) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	_, err := crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: crt.NotBefore.Add(time.Hour)})
	return err
}

func checkLeaf(t *testing.T, crt *x509.Certificate, caPEM []byte, usage x509.ExtKeyUsage, cn string, org []string) {
	t.Helper()
	if len(caPEM) == 0 {
		t.Fatal("CA file missing from the set")
	}
	if err := verify(crt, caPEM, usage); err != nil {
		t.Errorf("Verify(%s, %s) = %v, want nil", crt.Subject.CommonName, usageName(usage), err)
	}
	if crt.IsCA {
		t.Errorf("%s is a CA", crt.Subject.CommonName)
	}
	if crt.Subject.CommonName != cn {
		t.Errorf("CN = %q, want %q", crt.Subject.CommonName, cn)
	}
	if diff := cmp.Diff(org, crt.Subject.Organization); diff != "" {
		t.Errorf("%s Organization (-want +got):\n%s", cn, diff)
	}
}

// decodeKubeconfig reads the parts of a kubeconfig the components use.
func decodeKubeconfig(t *testing.T, data []byte) (server string, ca, crt, key []byte, token string) {
	t.Helper()
	var k kubeconfigFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("kubeconfig: %v\n%s", err, data)
	}
	if len(k.Clusters) != 1 || len(k.Users) != 1 || len(k.Contexts) != 1 || k.CurrentContext != k.Contexts[0].Name ||
		k.Contexts[0].Context.Cluster != k.Clusters[0].Name || k.Contexts[0].Context.User != k.Users[0].Name {
		t.Fatalf("kubeconfig is not one consistent cluster/user/context:\n%s", data)
	}
	dec64 := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	u := k.Users[0].User
	return k.Clusters[0].Cluster.Server, dec64(k.Clusters[0].Cluster.CertificateAuthorityData),
		dec64(u.ClientCertificateData), dec64(u.ClientKeyData), u.Token
}

func TestGenerateKubeconfigs(t *testing.T) {
	cfgs := testConfigs(t)
	set, err := Generate(cfgs.ControlPlane, testNode, Options{APIServerPort: 7443})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file, server, cn string
		org              []string
	}{
		{FileAdminConf, "https://kiln.example:6443", CNAdmin, []string{OrgMasters}},
		{FileControllerManagerConf, "https://127.0.0.1:7443", CNControllerManager, nil},
		{FileSchedulerConf, "https://127.0.0.1:7443", CNScheduler, nil},
		{FileKubeletConf, "https://127.0.0.1:7443", "system:node:cp-1", []string{OrgNodes}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			server, ca, crtPEM, key, token := decodeKubeconfig(t, set.Get(tt.file))
			if server != tt.server {
				t.Errorf("server = %q, want %q", server, tt.server)
			}
			if string(ca) != string(set.Get(FileCACrt)) {
				t.Errorf("certificate-authority-data is not %s", FileCACrt)
			}
			if token != "" {
				t.Errorf("token = %q, want none", token)
			}
			if _, err := (&secrets.KeyPair{Crt: crtPEM, Key: key}).TLSCertificate(); err != nil {
				t.Errorf("client key pair: %v", err)
			}
			checkLeaf(t, parseCert(t, tt.file, crtPEM), ca, x509.ExtKeyUsageClientAuth, tt.cn, tt.org)
		})
	}
}

func TestGenerateServiceAccountKey(t *testing.T) {
	cfgs := testConfigs(t)
	set, err := Generate(cfgs.ControlPlane, testNode, Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := secrets.ParsePrivateKeyPEM(set.Get(FileServiceAccountKey))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(set.Get(FileServiceAccountPub))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("%s is not a PEM public key", FileServiceAccountPub)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Errorf("%s is not the public half of %s", FileServiceAccountPub, FileServiceAccountKey)
	}
}

func TestGenerateWorker(t *testing.T) {
	cfgs := testConfigs(t)
	set, err := Generate(cfgs.Worker, Node{Name: "w-1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.20")}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range set.Files {
		paths = append(paths, f.Path)
	}
	if diff := cmp.Diff([]string{FileCACrt, FileBootstrapKubeletConf}, paths); diff != "" {
		t.Fatalf("worker files (-want +got):\n%s", diff)
	}
	server, ca, crt, _, token := decodeKubeconfig(t, set.Get(FileBootstrapKubeletConf))
	if server != "https://kiln.example:6443" || token != cfgs.Worker.Machine.Cluster.Token || len(crt) > 0 {
		t.Errorf("bootstrap kubeconfig: server %q token %q client cert %d bytes; want the endpoint and the bootstrap token only", server, token, len(crt))
	}
	if string(ca) != string(set.Get(FileCACrt)) {
		t.Errorf("bootstrap kubeconfig CA is not %s", FileCACrt)
	}
}

func TestGenerateRejects(t *testing.T) {
	cfgs := testConfigs(t)
	noCAKey := cfgs.ControlPlane.DeepCopy()
	noCAKey.Machine.Cluster.CA.Key = ""
	noSAKey := cfgs.ControlPlane.DeepCopy()
	noSAKey.Machine.Cluster.ServiceAccount.Key = ""
	badSubnet := cfgs.ControlPlane.DeepCopy()
	badSubnet.Machine.Cluster.Network.ServiceSubnets = []string{"10.96.0.0/33"}
	tests := []struct {
		name string
		cfg  *config.Config
		node Node
		want string
	}{
		{"no node name", cfgs.ControlPlane, Node{IPs: testNode.IPs}, "node name is empty"},
		{"no node IP", cfgs.ControlPlane, Node{Name: "cp-1"}, "no IP address"},
		{"no CA key", noCAKey, testNode, "cluster.ca.key: missing"},
		{"no SA key", noSAKey, testNode, "cluster.serviceAccount.key: missing"},
		{"bad service subnet", badSubnet, testNode, "cluster.network.serviceSubnets[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Generate(tt.cfg, tt.node, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Generate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFirstServiceIP(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"10.96.0.0/12", "10.96.0.1"},
		{"10.96.5.7/12", "10.96.0.1"},
		{"fd00:10:96::/112", "fd00:10:96::1"},
		{"192.0.2.1/32", ""},
		{"nonsense", ""},
	} {
		got, err := FirstServiceIP(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("FirstServiceIP(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("FirstServiceIP(%q) = %v, %v, want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestWriteDir(t *testing.T) {
	cfgs := testConfigs(t)
	set, err := Generate(cfgs.ControlPlane, testNode, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Writing twice replaces the files in place (a node regenerates its
	// PKI at every start).
	for range 2 {
		if err := set.WriteDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range set.Files {
		want = append(want, f.Path)
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("files in %s (-want +got; temporary files must not remain):\n%s", dir, diff)
	}
	for _, f := range set.Files {
		path := filepath.Join(dir, f.Path)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		wantMode := fs.FileMode(0o644)
		if f.Secret {
			wantMode = 0o600
		}
		if st.Mode().Perm() != wantMode {
			t.Errorf("%s mode %v, want %v", f.Path, st.Mode().Perm(), wantMode)
		}
		data, _ := os.ReadFile(path)
		if string(data) != string(f.Data) {
			t.Errorf("%s content differs from the set", f.Path)
		}
	}
	for _, secret := range []string{FileCAKey, FileAPIServerKey, FileServiceAccountKey, FileAdminConf, FileEtcdPeerKey} {
		if !slices.ContainsFunc(set.Files, func(f File) bool { return f.Path == secret && f.Secret }) {
			t.Errorf("%s is not marked secret", secret)
		}
	}
}

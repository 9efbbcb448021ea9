package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
)

func TestNodeCertificateNames(t *testing.T) {
	d, err := New(Options{Root: t.TempDir(), Listen: "10.1.2.3:50000"})
	if err != nil {
		t.Fatal(err)
	}
	d.interfaceAddrs = func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("192.168.1.7"), netip.MustParseAddr("fd00::7"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	cfg, err := config.Parse(configBytes(t, func(c *config.Config) { c.Machine.Machine.CertSANs = []string{"node.example.com", "10.9.9.9"} }))
	if err != nil {
		t.Fatal(err)
	}
	got := d.certSANs(cfg)
	want := []string{"node-1", "localhost", "127.0.0.1", "::1", "10.1.2.3", "node.example.com", "10.9.9.9", "192.168.1.7", "fd00::7"}
	if !slices.Equal(got, want) {
		t.Errorf("certSANs = %q, want %q", got, want)
	}

	if got := (&Daemon{opts: Options{Listen: "0.0.0.0:50000"}, interfaceAddrs: func() ([]netip.Addr, error) { return nil, nil }}).certSANs(cfg); slices.Contains(got, "0.0.0.0") {
		t.Errorf("certSANs with a wildcard listen address = %q, want no 0.0.0.0", got)
	}
}

// TestWorkerWithoutCAKey: a worker serves its self-signed certificate and
// still demands client certificates from the machine CA.
func TestWorkerWithoutCAKey(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	worker, err := testCluster(t).Worker.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, d, worker, 0)

	out := testCluster(t)
	pair, err := tls.X509KeyPair(out.AdminCrt, out.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	fp := d.MaintenanceFingerprint()
	pinned := &tls.Config{
		InsecureSkipVerify: true, // replaced by the fingerprint check
		Certificates:       []tls.Certificate{pair},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if got := Fingerprint(tls.Certificate{Certificate: [][]byte{cs.PeerCertificates[0].Raw}}); got != fp {
				t.Errorf("worker serves certificate %s, want the maintenance certificate %s", got, fp)
			}
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if _, err := client(t, d.Addr(), pinned).Version(ctx, &machine.VersionRequest{}); err != nil {
		t.Errorf("admin Version on a worker: %v", err)
	}
	_, err = client(t, d.Addr(), &tls.Config{InsecureSkipVerify: true}).Version(ctx, &machine.VersionRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Version without certificate on a worker: %v, want Unauthenticated", err)
	}
}

func client(t *testing.T, addr net.Addr, cfg *tls.Config) machine.MachineServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return machine.NewMachineServiceClient(cc)
}

// TestFailedFirstApplyStaysInMaintenance: when the first configuration
// cannot be brought into force, the node stays in maintenance mode and
// stores nothing.
func TestFailedFirstApplyStaysInMaintenance(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	dep := sleeper("db")
	dep.DependsOn = []string{"containerd"} // valid, but absent in process mode
	_, err := d.ApplyConfiguration(context.Background(), serverApply(configBytes(t, withServices(dep))))
	if err == nil {
		t.Fatal("apply of a config whose services cannot run succeeded")
	}
	if !d.srv.Maintenance() || inForce(t, d) != nil || stored(t, root) != nil || d.Hostname() != "" {
		t.Error("a failed first apply left maintenance mode")
	}
}

// TestNewSelfSignedMatchesItsPEM: the certificate newSelfSigned puts together is the
// one its PEM holds, as the next start loads it, and covers now.
func TestNewSelfSignedMatchesItsPEM(t *testing.T) {
	now := time.Now()
	cert, data, err := newSelfSigned(now)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tls.X509KeyPair(data, data)
	if err != nil {
		t.Fatalf("X509KeyPair of the PEM: %v", err)
	}
	if Fingerprint(cert) != Fingerprint(loaded) {
		t.Errorf("fingerprint %s, PEM holds %s", Fingerprint(cert), Fingerprint(loaded))
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !key.Equal(loaded.PrivateKey) {
		t.Errorf("private key %T differs from the PEM's", cert.PrivateKey)
	}
	if !certCovers(&cert, now) {
		t.Errorf("new certificate (no Leaf) does not cover %v", now)
	}
	if !certCovers(&loaded, now) {
		t.Errorf("loaded certificate does not cover %v (NotBefore %v, NotAfter %v)", now, loaded.Leaf.NotBefore, loaded.Leaf.NotAfter)
	}
	if certCovers(&cert, now.Add(maintenanceValidity)) {
		t.Errorf("new certificate covers %v, past its end", now.Add(maintenanceValidity))
	}
}

// TestSelfSignedDERIsCreateCertificates: selfSignedDER encodes the certificate
// x509.CreateCertificate makes of the same template, byte for byte up to the
// signature, and signs it with the key; pkcs8DER writes what
// x509.MarshalPKCS8PrivateKey does.
func TestSelfSignedDERIsCreateCertificates(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn := new(big.Int).Lsh(big.NewInt(1), 126)
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
	}{
		{"UTCTime", time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC), time.Date(2036, 11, 26, 22, 0, 0, 0, time.UTC)},
		{"GeneralizedTime after 2049", time.Date(2045, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2055, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"sub-second and local times", time.Date(2026, 1, 1, 0, 0, 0, 999, time.FixedZone("x", 3600)), time.Date(2030, 1, 1, 0, 0, 0, 5e8, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := selfSignedDER(key, sn, tc.notBefore, tc.notAfter)
			if err != nil {
				t.Fatal(err)
			}
			got, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if err := got.CheckSignature(got.SignatureAlgorithm, got.RawTBSCertificate, got.Signature); err != nil {
				t.Errorf("signature: %v", err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: sn,
				Subject:      pkix.Name{CommonName: maintenanceCN},
				NotBefore:    tc.notBefore,
				NotAfter:     tc.notAfter,
				KeyUsage:     x509.KeyUsageDigitalSignature,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				DNSNames:     []string{"localhost"},
				IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			}
			wantDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			want, err := x509.ParseCertificate(wantDER)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.RawTBSCertificate, want.RawTBSCertificate) {
				t.Errorf("TBSCertificate differs from CreateCertificate's:\n got %x\nwant %x", got.RawTBSCertificate, want.RawTBSCertificate)
			}
		})
	}
	p8, err := pkcs8DER(key)
	if err != nil {
		t.Fatal(err)
	}
	want, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p8, want) {
		t.Errorf("pkcs8DER:\n got %x\nwant %x", p8, want)
	}
}

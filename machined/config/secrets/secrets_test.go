package secrets

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIssuedCertsVerify(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := ca.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.IsCA || caCert.Subject.CommonName != "test CA" {
		t.Fatalf("NewCA: IsCA=%v CN=%q", caCert.IsCA, caCert.Subject.CommonName)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)

	for _, tc := range []struct {
		name    string
		issue   func() (*KeyPair, error)
		usage   x509.ExtKeyUsage
		dnsName string
		org     []string
		dns     []string
		ips     []string
	}{
		{
			name: "client",
			issue: func() (*KeyPair, error) {
				return IssueClientCert(ca, "admin", []string{"os:admin", "os:reader"}, time.Hour)
			},
			usage: x509.ExtKeyUsageClientAuth,
			org:   []string{"os:admin", "os:reader"},
		},
		{
			name: "server",
			issue: func() (*KeyPair, error) {
				return IssueServerCert(ca, "node-1", []string{"node-1.example.com", "10.0.0.2", "fd00::2", "localhost"}, time.Hour)
			},
			usage:   x509.ExtKeyUsageServerAuth,
			dnsName: "node-1.example.com",
			dns:     []string{"node-1.example.com", "localhost"},
			ips:     []string{"10.0.0.2", "fd00::2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kp, err := tc.issue()
			if err != nil {
				t.Fatal(err)
			}
			c, err := kp.Certificate()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.dnsName, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("Verify = %v", err)
			}
			if diff := cmp.Diff(tc.org, c.Subject.Organization); diff != "" {
				t.Errorf("Organization (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.dns, c.DNSNames); diff != "" {
				t.Errorf("DNSNames (-want +got):\n%s", diff)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if diff := cmp.Diff(tc.ips, ips); diff != "" {
				t.Errorf("IPAddresses (-want +got):\n%s", diff)
			}
			if _, err := kp.TLSCertificate(); err != nil {
				t.Errorf("TLSCertificate = %v", err)
			}
			// A certificate never outlives its CA.
			if c.NotAfter.After(caCert.NotAfter) {
				t.Errorf("NotAfter %v after the CA's %v", c.NotAfter, caCert.NotAfter)
			}
		})
	}

	other, err := NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := IssueClientCert(other, "x", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := kp.Certificate()
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a certificate from another CA verified")
	}
}

func TestBundleSaveLoad(t *testing.T) {
	b, err := NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	c, _ := b.MachineCA.Certificate()
	if got := time.Until(c.NotAfter); got < 9*365*24*time.Hour {
		t.Errorf("machine CA valid for %v, want about 10 years", got)
	}
	path := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := b.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadBundle(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, got); diff != "" {
		t.Errorf("LoadBundle(Save(b)) (-saved +loaded):\n%s", diff)
	}
	// Overwrite leaves no temporary files behind.
	if err := b.Save(path); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after two saves, want 1", len(entries))
	}

	if err := os.WriteFile(path, []byte("clusterID: x\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBundle(path); err == nil {
		t.Error("LoadBundle accepted an unknown field")
	}
}

func TestNewToken(t *testing.T) {
	seen := make(map[string]bool)
	for range 20 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != 23 || tok[6] != '.' {
			t.Fatalf("NewToken() = %q", tok)
		}
		if seen[tok] {
			t.Fatalf("NewToken() repeated %q", tok)
		}
		seen[tok] = true
	}
}

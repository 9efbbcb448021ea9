package generate

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

func TestGenerate(t *testing.T) {
	b, err := secrets.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Generate("demo", "https://10.0.0.2:6443", b, Options{InstallDisk: "/dev/vda", CertSANs: []string{"10.0.0.100"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*config.Config{"controlplane": out.ControlPlane, "worker": out.Worker} {
		t.Run(name, func(t *testing.T) {
			data, err := c.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := config.Parse(data)
			if err != nil {
				t.Fatalf("Parse(generated) = %v", err)
			}
			if w := parsed.Warnings(); len(w) != 0 {
				t.Errorf("Warnings() = %q", w)
			}
			if parsed.ClusterName() != "demo" || parsed.Machine.Machine.Install.Disk != "/dev/vda" || !slices.Equal(parsed.Machine.Machine.CertSANs, []string{"10.0.0.100"}) {
				t.Errorf("options not carried: %+v", parsed.Machine.Machine)
			}
		})
	}
	if out.ControlPlane.Type() != config.TypeControlPlane || out.Worker.Type() != config.TypeWorker {
		t.Errorf("types %q, %q", out.ControlPlane.Type(), out.Worker.Type())
	}
	w, cp := out.Worker.Machine, out.ControlPlane.Machine
	for path, v := range map[string]string{
		"machine.ca.key": w.Machine.CA.Key, "cluster.ca.key": w.Cluster.CA.Key, "cluster.etcd.ca.key": w.Cluster.Etcd.CA.Key,
		"cluster.aggregatorCA.key": w.Cluster.AggregatorCA.Key, "cluster.serviceAccount.key": w.Cluster.ServiceAccount.Key,
		"cluster.secretboxEncryptionSecret": w.Cluster.SecretboxEncryptionSecret,
	} {
		if v != "" {
			t.Errorf("worker carries %s", path)
		}
	}
	if w.Machine.CA.Crt != cp.Machine.CA.Crt || w.Cluster.CA.Crt != cp.Cluster.CA.Crt ||
		w.Machine.Token != b.MachineToken || w.Cluster.Token != b.BootstrapToken {
		t.Error("worker lacks CA certificates or tokens")
	}

	// The admin certificate is signed by the machine CA and has role
	// os:admin.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(out.CACrt) {
		t.Fatal("CACrt is not PEM")
	}
	blk, _ := pem.Decode(out.AdminCrt)
	if blk == nil {
		t.Fatal("AdminCrt is not PEM")
	}
	admin, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate does not verify: %v", err)
	}
	if !slices.Equal(admin.Subject.Organization, []string{"os:admin"}) {
		t.Errorf("admin Organization = %q", admin.Subject.Organization)
	}
	if _, err := (&secrets.KeyPair{Crt: out.AdminCrt, Key: out.AdminKey}).TLSCertificate(); err != nil {
		t.Errorf("admin key pair: %v", err)
	}
}

func TestGenerateRejectsBadInput(t *testing.T) {
	b, err := secrets.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Generate("Bad Name", "http://x", b, Options{}); err == nil {
		t.Error("Generate accepted an invalid cluster name and endpoint")
	}
	if _, err := Generate("demo", "https://x:6443", &secrets.Bundle{}, Options{}); err == nil {
		t.Error("Generate accepted an empty bundle")
	}
}

package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"time"

	"github.com/kiln-os/kiln/machined/config/secrets"
)

// clockSkew backdates certificates so that a node whose clock is slightly
// behind the issuer's accepts them (the same margin as the secrets package).
const clockSkew = 5 * time.Minute

// leaf describes one certificate to issue. secrets.IssueServerCert and
// IssueClientCert cover only one usage each; etcd needs both, and the
// Kubernetes identities need an Organization that is not a machine role.
type leaf struct {
	cn     string
	org    []string
	usages []x509.ExtKeyUsage
	sans   []string // DNS names and IP addresses mixed
}

// issue signs a new ECDSA P-256 key for spec with ca, valid from now
// (minus clockSkew) for LeafValidity but never past the CA.
func issue(ca *secrets.KeyPair, spec leaf, now time.Time) (*secrets.KeyPair, error) {
	caCert, err := ca.Certificate()
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	caKey, err := ca.Signer()
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", caCert.Subject.CommonName, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn.Add(sn, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: spec.cn, Organization: spec.org},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  spec.usages,
	}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	for _, s := range spec.sans {
		if ip, err := netip.ParseAddr(s); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", spec.cn, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return &secrets.KeyPair{
		Crt: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// publicKeyPEM returns the PKIX public key of a PEM private key: sa.pub,
// which kube-apiserver uses to verify service-account tokens.
func publicKeyPEM(keyPEM []byte) ([]byte, error) {
	key, err := secrets.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

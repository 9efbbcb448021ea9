package secrets

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"time"
)

// clockSkew backdates certificates so that a node whose clock is slightly
// behind accepts them.
const clockSkew = 5 * time.Minute

// KeyPair is a certificate and its private key, both PEM.
type KeyPair struct {
	Crt []byte
	Key []byte
}

// keyPairYAML is how a KeyPair is stored: base64 of PEM, as in the machine
// config.
type keyPairYAML struct {
	Crt string `yaml:"crt,omitempty"`
	Key string `yaml:"key,omitempty"`
}

// MarshalYAML stores the PEM texts base64-encoded.
func (k KeyPair) MarshalYAML() (any, error) {
	return keyPairYAML{Crt: b64(k.Crt), Key: b64(k.Key)}, nil
}

// UnmarshalYAML reads base64-encoded PEM texts.
func (k *KeyPair) UnmarshalYAML(unmarshal func(any) error) error {
	var y keyPairYAML
	if err := unmarshal(&y); err != nil {
		return err
	}
	var err error
	if k.Crt, err = base64.StdEncoding.DecodeString(y.Crt); err != nil {
		return fmt.Errorf("crt: %w", err)
	}
	if k.Key, err = base64.StdEncoding.DecodeString(y.Key); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	return nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Certificate parses the certificate.
func (k *KeyPair) Certificate() (*x509.Certificate, error) {
	b, _ := pem.Decode(k.Crt)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// Signer parses the private key.
func (k *KeyPair) Signer() (crypto.Signer, error) {
	return ParsePrivateKeyPEM(k.Key)
}

// TLSCertificate returns the pair as a tls.Certificate.
func (k *KeyPair) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(k.Crt, k.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key pair: %w", err)
	}
	return c, nil
}

// ParsePrivateKeyPEM parses a PEM private key (PKCS#8, SEC 1 or PKCS#1).
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key")
	}
	var (
		key any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return s, nil
}

// NewPrivateKeyPEM returns a new ECDSA P-256 key as PKCS#8 PEM.
func NewPrivateKeyPEM() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return encodeKey(key)
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// NewCA returns a self-signed ECDSA P-256 CA valid for validFor.
func NewCA(commonName string, validFor time.Duration) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", commonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Crt: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: keyPEM}, nil
}

// IssueClientCert issues a client certificate signed by ca. The roles go into
// the certificate's Organization, where the machine API reads them.
func IssueClientCert(ca *KeyPair, commonName string, roles []string, validFor time.Duration) (*KeyPair, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName, Organization: roles},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(ca, tmpl, validFor)
}

// IssueServerCert issues a server certificate signed by ca for the given
// subject alternative names, DNS names and IP addresses mixed.
func IssueServerCert(ca *KeyPair, commonName string, sans []string, validFor time.Duration) (*KeyPair, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range sans {
		if ip, err := netip.ParseAddr(s); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	return issue(ca, tmpl, validFor)
}

func issue(ca *KeyPair, tmpl *x509.Certificate, validFor time.Duration) (*KeyPair, error) {
	caCert, err := ca.Certificate()
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	caKey, err := ca.Signer()
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validFor)
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Crt: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: keyPEM}, nil
}

// Package secrets generates and stores the secrets bundle of a Kiln cluster:
// the certificate authorities, keys and tokens every machine config of the
// cluster is made from. `kctl gen config --with-secrets` reuses a saved
// bundle. It also issues certificates from those CAs.
package secrets

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kiln-os/kiln/machined/atomicfile"
	"go.yaml.in/yaml/v3"
)

// CAValidity is how long the CAs of a new bundle are valid.
const CAValidity = 10 * 365 * 24 * time.Hour

// Bundle is every secret of a cluster. Its YAML form is the secrets file
// (keys and certificates as base64 of PEM).
type Bundle struct {
	// ClusterID identifies the cluster (random, 32 hex digits).
	ClusterID string `yaml:"clusterID"`
	// MachineCA signs machine API certificates (kctl and nodes).
	MachineCA *KeyPair `yaml:"machineCA"`
	// KubernetesCA signs Kubernetes API certificates.
	KubernetesCA *KeyPair `yaml:"kubernetesCA"`
	// EtcdCA signs etcd peer and client certificates.
	EtcdCA *KeyPair `yaml:"etcdCA"`
	// AggregatorCA is the front-proxy CA of the API aggregation layer.
	AggregatorCA *KeyPair `yaml:"aggregatorCA"`
	// ServiceAccountKey signs service-account tokens (PEM private key).
	ServiceAccountKey []byte `yaml:"-"`
	// BootstrapToken is the Kubernetes bootstrap token,
	// [a-z0-9]{6}.[a-z0-9]{16}.
	BootstrapToken string `yaml:"bootstrapToken"`
	// SecretboxKey encrypts Secrets in etcd (32 bytes).
	SecretboxKey []byte `yaml:"-"`
	// MachineToken is the machine join token.
	MachineToken string `yaml:"machineToken"`
}

// NewBundle generates a bundle: ECDSA P-256 keys, CAs valid CAValidity.
func NewBundle() (*Bundle, error) {
	b := &Bundle{}
	var err error
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("cluster ID: %w", err)
	}
	b.ClusterID = hex.EncodeToString(id)
	for _, ca := range []struct {
		dst **KeyPair
		cn  string
	}{
		{&b.MachineCA, "kiln machine CA"},
		{&b.KubernetesCA, "kubernetes"},
		{&b.EtcdCA, "etcd-ca"},
		{&b.AggregatorCA, "front-proxy-ca"},
	} {
		if *ca.dst, err = NewCA(ca.cn, CAValidity); err != nil {
			return nil, err
		}
	}
	if b.ServiceAccountKey, err = NewPrivateKeyPEM(); err != nil {
		return nil, err
	}
	if b.BootstrapToken, err = NewToken(); err != nil {
		return nil, err
	}
	if b.MachineToken, err = NewToken(); err != nil {
		return nil, err
	}
	b.SecretboxKey = make([]byte, 32)
	if _, err := rand.Read(b.SecretboxKey); err != nil {
		return nil, fmt.Errorf("secretbox key: %w", err)
	}
	return b, nil
}

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// NewToken returns a random token in the bootstrap-token format
// [a-z0-9]{6}.[a-z0-9]{16}.
func NewToken() (string, error) {
	raw := make([]byte, 22)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	out := make([]byte, 0, 23)
	for i, r := range raw {
		if i == 6 {
			out = append(out, '.')
		}
		// 256 % 36 != 0, so this is very slightly biased; at 22 characters
		// from a 36-letter alphabet the token keeps > 110 bits anyway.
		out = append(out, tokenAlphabet[int(r)%len(tokenAlphabet)])
	}
	return string(out), nil
}

// MarshalYAML writes the bundle with its byte fields base64-encoded.
func (b *Bundle) MarshalYAML() (any, error) {
	type plain Bundle // no methods, so no recursion
	return struct {
		plain             `yaml:",inline"`
		ServiceAccountKey string `yaml:"serviceAccountKey"`
		SecretboxKey      string `yaml:"secretboxKey"`
	}{plain(*b), b64(b.ServiceAccountKey), b64(b.SecretboxKey)}, nil
}

// UnmarshalYAML reads what MarshalYAML writes.
func (b *Bundle) UnmarshalYAML(n *yaml.Node) error {
	type plain Bundle
	var y struct {
		plain             `yaml:",inline"`
		ServiceAccountKey string `yaml:"serviceAccountKey"`
		SecretboxKey      string `yaml:"secretboxKey"`
	}
	if err := n.Decode(&y); err != nil {
		return err
	}
	*b = Bundle(y.plain)
	var err error
	if b.ServiceAccountKey, err = base64.StdEncoding.DecodeString(y.ServiceAccountKey); err != nil {
		return fmt.Errorf("serviceAccountKey: %w", err)
	}
	if b.SecretboxKey, err = base64.StdEncoding.DecodeString(y.SecretboxKey); err != nil {
		return fmt.Errorf("secretboxKey: %w", err)
	}
	return nil
}

// Validate checks that every secret is present and well formed.
func (b *Bundle) Validate() error {
	var errs []error
	if b.ClusterID == "" {
		errs = append(errs, errors.New("clusterID: missing"))
	}
	for _, ca := range []struct {
		name string
		kp   *KeyPair
	}{{"machineCA", b.MachineCA}, {"kubernetesCA", b.KubernetesCA}, {"etcdCA", b.EtcdCA}, {"aggregatorCA", b.AggregatorCA}} {
		if ca.kp == nil {
			errs = append(errs, fmt.Errorf("%s: missing", ca.name))
			continue
		}
		c, err := ca.kp.Certificate()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ca.name, err))
			continue
		}
		if !c.IsCA {
			errs = append(errs, fmt.Errorf("%s: not a CA certificate", ca.name))
		}
		if _, err := ca.kp.TLSCertificate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ca.name, err))
		}
	}
	if _, err := ParsePrivateKeyPEM(b.ServiceAccountKey); err != nil {
		errs = append(errs, fmt.Errorf("serviceAccountKey: %w", err))
	}
	if len(b.SecretboxKey) != 32 {
		errs = append(errs, fmt.Errorf("secretboxKey: %d bytes, want 32", len(b.SecretboxKey)))
	}
	if b.BootstrapToken == "" {
		errs = append(errs, errors.New("bootstrapToken: missing"))
	}
	if b.MachineToken == "" {
		errs = append(errs, errors.New("machineToken: missing"))
	}
	return errors.Join(errs...)
}

// LoadBundle reads and validates a secrets file.
func LoadBundle(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secrets: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	b := &Bundle{}
	if err := dec.Decode(b); err != nil {
		return nil, fmt.Errorf("parse secrets %s: %w", path, err)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("secrets %s: %w", path, err)
	}
	return b, nil
}

// Save writes the bundle atomically (temporary file, fsync, rename) with
// mode 0600.
func (b *Bundle) Save(path string) error {
	data, err := yaml.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode secrets: %w", err)
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kiln-os/kiln/machined/atomicfile"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/secrets"
	"github.com/kiln-os/kiln/machined/server"
)

const (
	// maintenanceValidity is long because the maintenance certificate is
	// kept across restarts: its fingerprint is what an operator pins with
	// kctl --insecure, and it must not change under them.
	maintenanceValidity = 10 * 365 * 24 * time.Hour
	// serverCertValidity bounds the node certificate issued from the
	// machine CA; it is issued again on every start and apply.
	serverCertValidity = 365 * 24 * time.Hour
)

// Fingerprint returns the SHA-256 of a certificate's DER, in hex: what kctl
// --insecure pins.
func Fingerprint(cert tls.Certificate) string {
	if len(cert.Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return hex.EncodeToString(sum[:])
}

// loadMaintenanceCert returns the self-signed maintenance certificate kept in
// path, creating it when missing, unreadable or expired.
func loadMaintenanceCert(path string, now time.Time) (tls.Certificate, bool, error) {
	if data, err := os.ReadFile(path); err == nil {
		cert, err := tls.X509KeyPair(data, data)
		if err == nil && cert.Leaf != nil && now.Before(cert.Leaf.NotAfter.Add(-24*time.Hour)) {
			return cert, false, nil
		}
	}
	cert, data, err := newSelfSigned(now)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("keep maintenance certificate: %w", err)
	}
	return cert, true, nil
}

// newSelfSigned returns a self-signed ECDSA P-256 server certificate and its
// PEM: the certificate followed by its key (PKCS #8). Both are encoded here with
// cryptobyte (selfSignedDER, pkcs8DER) instead of x509.CreateCertificate and
// x509.MarshalPKCS8PrivateKey: on a node's first boot under emulation this
// certificate is on the path to the readiness line, and CreateCertificate's
// reflection-driven encoding and its check of the signature it just made (a
// verification) were ~0.1 s of it, its parse back (for Leaf) ~0.02 s more. Leaf
// is left nil: crypto/tls does not need it to serve the certificate, and
// certCovers parses the certificate when it is asked.
func newSelfSigned(now time.Time) (tls.Certificate, []byte, error) {
	fail := func(err error) (tls.Certificate, []byte, error) {
		return tls.Certificate{}, nil, fmt.Errorf("maintenance certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fail(err)
	}
	der, err := selfSignedDER(key, sn, now.Add(-5*time.Minute), now.Add(maintenanceValidity))
	if err != nil {
		return fail(err)
	}
	keyDER, err := pkcs8DER(key)
	if err != nil {
		return fail(err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, out, nil
}

// decodePEM decodes a base64 PEM field of the machine config.
func decodePEM(path, b64 string) ([]byte, error) {
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %w", path, err)
	}
	return data, nil
}

// configuredIdentity is the identity of a node with configuration: client
// certificates are verified against the machine CA; the server certificate
// is issued from it when the config holds its key.
//
// A worker carries the CA certificate but not its key (the key would let a
// compromised worker mint admin certificates). Until a worker can ask the
// control plane to sign its certificate, it serves the self-signed
// maintenance certificate while still verifying clients against the CA:
// clients reach it with a pinned fingerprint instead of the CA chain.
func (d *Daemon) configuredIdentity(cfg *config.Config) (server.Identity, error) {
	ca := cfg.Machine.Machine.CA
	crt, err := decodePEM("machine.ca.crt", ca.Crt)
	if err != nil {
		return server.Identity{}, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(crt) {
		return server.Identity{}, errors.New("machine.ca.crt: no PEM certificate")
	}
	id := server.Identity{ClientCAs: pool}
	if ca.Key == "" {
		if !d.warnedNoCAKey {
			d.log.Warn("machine CA key absent (worker): serving the self-signed certificate; clients must pin its fingerprint",
				"fingerprint", Fingerprint(d.maintenanceCert))
			d.warnedNoCAKey = true
		}
		id.Certificate = d.maintenanceCert
		return id, nil
	}
	key, err := decodePEM("machine.ca.key", ca.Key)
	if err != nil {
		return server.Identity{}, err
	}
	sans := d.certSANs(cfg)
	cacheKey := ca.Crt + "\x00" + ca.Key + "\x00" + strings.Join(sans, ",")
	if d.serverCert != nil && d.serverCertKey == cacheKey {
		id.Certificate = *d.serverCert
		return id, nil
	}
	cn := cfg.Hostname()
	if cn == "" {
		cn = "kiln"
	}
	pair, err := secrets.IssueServerCert(&secrets.KeyPair{Crt: crt, Key: key}, cn, sans, serverCertValidity)
	if err != nil {
		return server.Identity{}, fmt.Errorf("issue the node certificate from machine.ca: %w", err)
	}
	cert, err := pair.TLSCertificate()
	if err != nil {
		return server.Identity{}, fmt.Errorf("node certificate: %w", err)
	}
	d.serverCert, d.serverCertKey = &cert, cacheKey
	id.Certificate = cert
	return id, nil
}

// certSANs lists the names the node certificate is valid for: the host
// name, loopback, the listen address, machine.certSANs and every address of
// the node's interfaces.
func (d *Daemon) certSANs(cfg *config.Config) []string {
	sans := []string{}
	add := func(s string) {
		if s != "" && !slices.Contains(sans, s) {
			sans = append(sans, s)
		}
	}
	add(cfg.Hostname())
	add("localhost")
	add("127.0.0.1")
	add("::1")
	if host, _, err := net.SplitHostPort(d.opts.Listen); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
			add(ip.String())
		}
	}
	for _, s := range cfg.Machine.Machine.CertSANs {
		add(s)
	}
	addrs, err := d.interfaceAddrs()
	if err != nil {
		d.log.Warn("list interface addresses for the node certificate", "err", err)
	}
	for _, a := range addrs {
		add(a.String())
	}
	return sans
}

// localAddrs returns the IP addresses of the local interfaces.
func localAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().WithZone(""))
		}
	}
	return out, nil
}

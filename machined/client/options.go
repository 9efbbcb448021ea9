package client

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
)

// Option configures New.
type Option func(*options)

type options struct {
	// tls builds the TLS configuration for the dialled host.
	tls         func(host string) (*tls.Config, error)
	serverName  string
	userAgent   string
	dialOptions []grpc.DialOption
	err         error
}

// WithMTLS authenticates with a client certificate (crtPEM, keyPEM) and
// verifies the node's certificate against the machine CA (caPEM). The node's
// certificate must name the dialled host — an IP address is matched against
// its IP SANs — unless WithServerName says which name to expect instead.
func WithMTLS(caPEM, crtPEM, keyPEM []byte) Option {
	return func(o *options) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			o.err = errors.New("client: the CA holds no PEM certificate")
			return
		}
		pair, err := tls.X509KeyPair(crtPEM, keyPEM)
		if err != nil {
			o.err = fmt.Errorf("client: client certificate: %w", err)
			return
		}
		o.tls = func(host string) (*tls.Config, error) {
			name := host
			if o.serverName != "" {
				name = o.serverName
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				RootCAs:      pool,
				Certificates: []tls.Certificate{pair},
				ServerName:   name,
			}, nil
		}
	}
}

// WithInsecure skips verification of the node's certificate chain and sends
// no client certificate: the way to reach a node in maintenance mode, which
// serves a self-signed certificate. When fingerprint is not empty, the
// connection is accepted only if the SHA-256 of the node's leaf certificate
// (DER) equals it; see ParseFingerprint for the accepted spellings.
func WithInsecure(fingerprint string) Option {
	return func(o *options) {
		var want []byte
		if fingerprint != "" {
			var err error
			if want, err = ParseFingerprint(fingerprint); err != nil {
				o.err = fmt.Errorf("client: %w", err)
				return
			}
		}
		o.tls = func(host string) (*tls.Config, error) {
			cfg := &tls.Config{
				MinVersion: tls.VersionTLS12,
				// Chain verification is replaced by the optional pin below;
				// this is what maintenance mode is for.
				InsecureSkipVerify: true, //nolint:gosec // see above
				ServerName:         host,
			}
			if want != nil {
				cfg.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
					if len(rawCerts) == 0 {
						return errors.New("the node sent no certificate")
					}
					got := sha256.Sum256(rawCerts[0])
					if !bytes.Equal(got[:], want) {
						return fmt.Errorf("certificate fingerprint mismatch: the node's is %s, expected %s",
							hex.EncodeToString(got[:]), hex.EncodeToString(want))
					}
					return nil
				}
			}
			return cfg, nil
		}
	}
}

// WithServerName sets the name the node's certificate must carry under
// WithMTLS, for a node dialled through an address its certificate does not
// name.
func WithServerName(name string) Option {
	return func(o *options) { o.serverName = name }
}

// WithUserAgent sets the gRPC user agent, e.g. "kctl/v0.1.0".
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}

// WithDialOptions adds raw gRPC dial options after the defaults (tests use it
// for custom dialers).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// Fingerprint returns the hex SHA-256 of a DER certificate, the form a node in
// maintenance mode shows and WithInsecure accepts.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseFingerprint decodes a SHA-256 certificate fingerprint written as hex,
// optionally with a "sha256:" prefix, colons between bytes and either case.
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if len(t) >= 7 && strings.EqualFold(t[:7], "sha256:") {
		t = t[7:]
	}
	t = strings.ReplaceAll(t, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("fingerprint %q: want the SHA-256 of the certificate as 64 hex digits", s)
	}
	return b, nil
}

package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
)

var (
	dnsLabelRe       = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsNameLabelRe   = regexp.MustCompile(`^(?i:[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?)$`)
	bootstrapTokenRe = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	envNameRe        = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	sysctlRe         = regexp.MustCompile(`^[A-Za-z0-9_\-]+([./][A-Za-z0-9_\-]+)+$`)
	labelNameRe      = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValueRe     = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	flagNameRe       = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.]*$`)
)

// isDNSLabel reports whether s is an RFC 1123 label in lower case.
func isDNSLabel(s string) bool { return len(s) <= 63 && dnsLabelRe.MatchString(s) }

// isHostname reports whether s is a lowercase RFC 1123 host name (a
// Kubernetes node name).
func isHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// isDNSName reports whether s is a DNS name (any case, underscores allowed).
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if len(l) > 63 || !dnsNameLabelRe.MatchString(l) {
			return false
		}
	}
	// A name made only of digits and dots is a mistyped IP address.
	return strings.Trim(s, "0123456789.") != ""
}

func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// parseCIDR parses an address with prefix length (host bits allowed).
func parseCIDR(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		return netip.Prefix{}, false
	}
	return p, true
}

func parseMAC(s string) (net.HardwareAddr, bool) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 || strings.ContainsAny(s, "-.") {
		return nil, false
	}
	return hw, true
}

// isInterfaceName reports whether s can name a Linux network interface.
func isInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n\x00")
}

func isCleanAbs(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p
}

// checkEndpoint returns "" when s is an https URL with a host and nothing
// else, or what is wrong with it.
func checkEndpoint(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("%q is not a URL", s)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Sprintf("%q must be an https:// URL", s)
	case u.Hostname() == "":
		return fmt.Sprintf("%q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return fmt.Sprintf("%q must be only https://host:port", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("%q has an invalid port", s)
		}
	}
	if _, ok := parseIP(u.Hostname()); !ok && !isDNSName(u.Hostname()) {
		return fmt.Sprintf("%q has an invalid host", s)
	}
	return ""
}

// decodeBase64PEM decodes base64 text holding one PEM block of one of the
// given types.
func decodeBase64PEM(s string, types ...string) (*pem.Block, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("is not valid base64 (write the base64 of the PEM text)")
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return nil, errors.New("is not base64 of a PEM block")
	}
	for _, t := range types {
		if b.Type == t {
			return b, nil
		}
	}
	return nil, fmt.Errorf("holds a PEM %q block, want %s", b.Type, strings.Join(types, " or "))
}

// ParseCertificate decodes a base64 PEM certificate as used in the config.
func ParseCertificate(b64 string) (*x509.Certificate, error) {
	b, err := decodeBase64PEM(b64, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, errors.New("is not a valid X.509 certificate")
	}
	return c, nil
}

// ParsePrivateKey decodes a base64 PEM private key (PKCS#8, SEC 1 or PKCS#1)
// as used in the config.
func ParsePrivateKey(b64 string) (crypto.Signer, error) {
	b, err := decodeBase64PEM(b64, "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	var key any
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("is not a valid %s", strings.ToLower(b.Type))
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, errors.New("holds an unsupported key type")
}

// keyMatches reports whether the private key belongs to the certificate.
func keyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// CrtPEM returns the PEM text of the certificate.
func (c CertAndKey) CrtPEM() ([]byte, error) {
	if _, err := decodeBase64PEM(c.Crt, "CERTIFICATE"); err != nil {
		return nil, fmt.Errorf("certificate %w", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(c.Crt))
	return raw, nil
}

// KeyPEM returns the PEM text of the key, nil when there is none.
func (c CertAndKey) KeyPEM() ([]byte, error) {
	if c.Key == "" {
		return nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.Key))
	if err != nil {
		return nil, fmt.Errorf("key is not valid base64: %w", err)
	}
	return raw, nil
}

// EncodePEM is the inverse of CrtPEM/KeyPEM: base64 of PEM text.
func EncodePEM(pemText []byte) string {
	if len(pemText) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(pemText)
}

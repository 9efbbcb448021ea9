package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
)

func TestNormalizeEndpoint(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "10.0.0.1", want: "10.0.0.1:50000"},
		{in: "10.0.0.1:6443", want: "10.0.0.1:6443"},
		{in: "node1", want: "node1:50000"},
		{in: "node1:1234", want: "node1:1234"},
		{in: "::1", want: "[::1]:50000"},
		{in: "[::1]", want: "[::1]:50000"},
		{in: "[fd00::1]:50001", want: "[fd00::1]:50001"},
		{in: "https://10.0.0.1:6443/", want: "10.0.0.1:6443"},
		{in: " node1 ", want: "node1:50000"},
		{in: "", wantErr: true},
		{in: ":50000", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeEndpoint(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NormalizeEndpoint(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("NormalizeEndpoint(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseFingerprint(t *testing.T) {
	const hexFP = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	var colons []string
	for i := 0; i < len(hexFP); i += 2 {
		colons = append(colons, strings.ToUpper(hexFP[i:i+2]))
	}
	tests := []struct {
		name, in string
		wantErr  bool
	}{
		{name: "plain", in: hexFP},
		{name: "prefix", in: "sha256:" + hexFP},
		{name: "upper prefix", in: "SHA256:" + hexFP},
		{name: "colons", in: strings.Join(colons, ":")},
		{name: "prefix and colons", in: "sha256:" + strings.Join(colons, ":")},
		{name: "short", in: hexFP[:62], wantErr: true},
		{name: "not hex", in: strings.Repeat("zz", 32), wantErr: true},
		{name: "sha1 prefix", in: "sha1:" + hexFP, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFingerprint(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFingerprint(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && hex.EncodeToString(got) != hexFP {
				t.Errorf("ParseFingerprint(%q) = %x, want %s", tt.in, got, hexFP)
			}
		})
	}
}

// versionServer answers Version and nothing else.
type versionServer struct {
	machine.UnimplementedMachineServiceServer
}

func (versionServer) Version(context.Context, *machine.VersionRequest) (*machine.VersionResponse, error) {
	return &machine.VersionResponse{Version: &machine.VersionInfo{Tag: "v9.9.9"}, Hostname: "test-node"}, nil
}

// pki is a throwaway machine CA with a server and a client certificate.
type pki struct {
	caPEM, serverCrt, serverKey, clientCrt, clientKey []byte
	serverDER                                         []byte
}

func newPKI(t *testing.T, serverIPs ...net.IP) pki {
	t.Helper()
	caKey := mustKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test machine CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, eku x509.ExtKeyUsage, org string) (der, crt, key []byte) {
		k := mustKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "leaf", Organization: []string{org}},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{eku},
			IPAddresses:  serverIPs,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der, pemOf("CERTIFICATE", der), pemOf("EC PRIVATE KEY", kder)
	}
	p := pki{caPEM: pemOf("CERTIFICATE", caDER)}
	p.serverDER, p.serverCrt, p.serverKey = leaf(2, x509.ExtKeyUsageServerAuth, "")
	_, p.clientCrt, p.clientKey = leaf(3, x509.ExtKeyUsageClientAuth, "os:admin")
	return p
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// serve starts a gRPC server on 127.0.0.1 with the given TLS config and
// returns its address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	machine.RegisterMachineServiceServer(srv, versionServer{})
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func callVersion(t *testing.T, addr string, opts ...Option) (*machine.VersionResponse, error) {
	t.Helper()
	// Hang protection only.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", addr, err)
	}
	defer c.Close()
	return c.Version(ctx, &machine.VersionRequest{})
}

func TestInsecureFingerprint(t *testing.T) {
	p := newPKI(t, net.IPv4(127, 0, 0, 1))
	pair, err := tls.X509KeyPair(p.serverCrt, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, &tls.Config{Certificates: []tls.Certificate{pair}})
	fp := Fingerprint(p.serverDER)
	var colons []string
	for i := 0; i < len(fp); i += 2 {
		colons = append(colons, fp[i:i+2])
	}
	wrong := strings.Repeat("ab", 32)

	tests := []struct {
		name        string
		fingerprint string
		wantErr     string
	}{
		{name: "no pin", fingerprint: ""},
		{name: "pinned", fingerprint: fp},
		{name: "pinned with prefix and colons", fingerprint: "sha256:" + strings.ToUpper(strings.Join(colons, ":"))},
		{name: "wrong pin", fingerprint: wrong, wantErr: "certificate fingerprint mismatch: the node's is " + fp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := callVersion(t, addr, WithInsecure(tt.fingerprint))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Version() error = %v, want one containing %q", err, tt.wantErr)
				}
				if got := status.Code(err); got != codes.Unavailable {
					t.Errorf("Version() code = %v, want %v", got, codes.Unavailable)
				}
				return
			}
			if err != nil {
				t.Fatalf("Version() error = %v", err)
			}
			if diff := cmp.Diff("v9.9.9", resp.GetVersion().GetTag()); diff != "" {
				t.Errorf("Version() tag (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMTLS(t *testing.T) {
	p := newPKI(t, net.IPv4(127, 0, 0, 1))
	other := newPKI(t, net.IPv4(127, 0, 0, 1))
	pair, err := tls.X509KeyPair(p.serverCrt, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	addr := serve(t, &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	})

	tests := []struct {
		name string
		opts []Option
		// wantErr is a part of the error; "*" is any error (a client
		// refused by the server under TLS 1.3 may only see a broken pipe).
		wantErr string
	}{
		{name: "good", opts: []Option{WithMTLS(p.caPEM, p.clientCrt, p.clientKey)}},
		{name: "server from another CA", opts: []Option{WithMTLS(other.caPEM, p.clientCrt, p.clientKey)}, wantErr: "unknown authority"},
		{name: "client from another CA", opts: []Option{WithMTLS(p.caPEM, other.clientCrt, other.clientKey)}, wantErr: "*"},
		{name: "name not in certificate", opts: []Option{WithMTLS(p.caPEM, p.clientCrt, p.clientKey), WithServerName("node.example")}, wantErr: "node.example"},
		{name: "insecure without client certificate", opts: []Option{WithInsecure("")}, wantErr: "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := callVersion(t, addr, tt.opts...)
			if tt.wantErr != "" {
				if err == nil || (tt.wantErr != "*" && !strings.Contains(err.Error(), tt.wantErr)) {
					t.Fatalf("Version() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Version() error = %v", err)
			}
			if got := resp.GetHostname(); got != "test-node" {
				t.Errorf("Version() hostname = %q, want %q", got, "test-node")
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name string
		opts []Option
	}{
		{name: "no security", opts: nil},
		{name: "bad CA", opts: []Option{WithMTLS([]byte("nope"), p.clientCrt, p.clientKey)}},
		{name: "bad key pair", opts: []Option{WithMTLS(p.caPEM, p.clientCrt, p.serverKey)}},
		{name: "bad fingerprint", opts: []Option{WithInsecure("xyz")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(context.Background(), "127.0.0.1", tt.opts...)
			if err == nil {
				c.Close()
				t.Fatalf("New() error = nil, want an error")
			}
		})
	}
}

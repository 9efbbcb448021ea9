package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/roles"
)

// MaintenanceMessage is what callers of a method that needs a configured node
// are told in maintenance mode.
const MaintenanceMessage = "node is in maintenance mode: apply a configuration first"

type rolesKey struct{}

// CallerRoles returns the roles of the authenticated caller of the current
// call; none in maintenance mode.
func CallerRoles(ctx context.Context) []roles.Role {
	r, _ := ctx.Value(rolesKey{}).([]roles.Role)
	return r
}

// authorize decides whether the caller of ctx may call method, and returns
// the context the handler runs with (carrying the caller's roles).
//
// Client certificates are verified here rather than in the TLS handshake
// (the listener asks for a certificate with tls.RequestClientCert and Go's
// TLS still checks that the client holds its private key): a handshake that
// fails reaches the client as a bare "connection closed", while a refusal
// here is an Unauthenticated status that says what is wrong with the
// certificate. Verifying on every call also means a CA rotated by a new
// configuration, or a certificate that expired on a long-lived connection,
// takes effect at once.
func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	id := s.identity.Load()
	if id.Maintenance {
		if roles.AllowedInMaintenance(method) {
			return ctx, nil
		}
		return nil, status.Error(codes.FailedPrecondition, MaintenanceMessage)
	}
	leaf, err := s.verifyPeer(ctx, id)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	var have []roles.Role
	for _, o := range leaf.Subject.Organization {
		if r, ok := roles.Parse(o); ok && !slices.Contains(have, r) {
			have = append(have, r)
		}
	}
	if len(have) == 0 {
		return nil, status.Errorf(codes.PermissionDenied,
			"client certificate %q has no Kiln role: its Organization must name one of %s",
			leaf.Subject.CommonName, roleList(roles.All))
	}
	if !roles.Allowed(method, have) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s (allowed: %s)",
			roleList(have), method, roleList(roles.Methods[method]))
	}
	return context.WithValue(ctx, rolesKey{}, have), nil
}

// verifyPeer returns the caller's leaf certificate once it is verified
// against the machine CA for client authentication.
func (s *Server) verifyPeer(ctx context.Context, id *Identity) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("no peer information: a client certificate is required")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, fmt.Errorf("connection is not TLS: a client certificate is required")
	}
	certs := info.State.PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("client certificate required: present a certificate issued by this node's machine CA")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         id.ClientCAs,
		Intermediates: inter,
		CurrentTime:   s.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return nil, fmt.Errorf("client certificate %q rejected: %v", certs[0].Subject.CommonName, err)
	}
	return certs[0], nil
}

func roleList(rs []roles.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		s.log.Debug("call refused", "method", info.FullMethod, "err", err)
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		s.log.Debug("call refused", "method", info.FullMethod, "err", err)
		return err
	}
	return handler(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

// authedStream carries the caller's roles to stream handlers.
type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

// Package server is machined's gRPC machine API: it authenticates callers by
// their client certificate, authorizes them by the role table in
// machined/api/roles, maps errors to gRPC codes (errors.go, the only place
// that does) and translates between the wire and a Machine, which the daemon
// implements.
//
// The listener serves two modes on the same port, switched live by
// SetIdentity: maintenance (a self-signed certificate, no client
// certificate, only roles.Maintenance methods answer) and configured (a
// certificate for the node, client certificates verified against the machine
// CA).
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// DefaultKmsgPath is where the kernel log is read from.
const DefaultKmsgPath = "/dev/kmsg"

// Identity is what the server presents and whom it trusts.
type Identity struct {
	// Certificate is the server certificate (with its private key).
	Certificate tls.Certificate
	// Maintenance serves the node without configuration: no client
	// certificates, only the methods in roles.Maintenance.
	Maintenance bool
	// ClientCAs verifies client certificates; required unless Maintenance.
	ClientCAs *x509.CertPool

	tls *tls.Config
}

// Options configures New.
type Options struct {
	Machine Machine
	Logger  *slog.Logger
	// Identity is the initial identity; see SetIdentity.
	Identity Identity
	// KmsgPath is the kernel log device (DefaultKmsgPath when empty). A
	// regular file holding records in /dev/kmsg format works too.
	KmsgPath string
	// Now is the clock client certificates are checked against
	// (time.Now when nil).
	Now func() time.Time
}

// Server is the machine API server.
type Server struct {
	m        Machine
	log      *slog.Logger
	kmsgPath string
	now      func() time.Time

	identity atomic.Pointer[Identity]
	grpc     *grpc.Server
	health   *health.Server

	// stopping ends follow streams when the server stops, so that a
	// graceful stop does not wait for followers that never leave.
	stopping context.Context
	stop     context.CancelFunc
}

// New builds a server. Call Serve to accept connections.
func New(opts Options) (*Server, error) {
	if opts.Machine == nil {
		return nil, errors.New("server: no Machine")
	}
	s := &Server{
		m:        opts.Machine,
		log:      opts.Logger,
		kmsgPath: opts.KmsgPath,
		now:      opts.Now,
		health:   health.NewServer(),
	}
	s.stopping, s.stop = context.WithCancel(context.Background())
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.kmsgPath == "" {
		s.kmsgPath = DefaultKmsgPath
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.SetIdentity(opts.Identity); err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.identity.Load().tls, nil
		},
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(base)),
		// Errors first (outermost), so that it sees what auth returns too.
		grpc.ChainUnaryInterceptor(s.unaryErrors, s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamErrors, s.streamAuth),
	)
	machine.RegisterMachineServiceServer(s.grpc, &service{s: s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(machine.MachineService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// SetIdentity switches the certificate and the trusted CA. It takes effect
// for new connections at once, and for calls on existing connections too:
// every call is authorized against the identity in force.
func (s *Server) SetIdentity(id Identity) error {
	if len(id.Certificate.Certificate) == 0 {
		return errors.New("server: identity has no certificate")
	}
	if !id.Maintenance && id.ClientCAs == nil {
		return errors.New("server: identity has no client CA and is not maintenance mode")
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{id.Certificate},
		// gRPC clients insist on ALPN h2.
		NextProtos: []string{"h2"},
		ClientAuth: tls.NoClientCert,
	}
	if !id.Maintenance {
		// Verified per call, see authorize.
		c.ClientAuth = tls.RequestClientCert
	}
	id.tls = c
	s.identity.Store(&id)
	return nil
}

// Maintenance reports whether the server is in maintenance mode.
func (s *Server) Maintenance() bool { return s.identity.Load().Maintenance }

// Serve accepts connections on l until Stop. l is a plain TCP listener; the
// server does TLS itself.
func (s *Server) Serve(l net.Listener) error {
	// A Stop that comes before Serve is an orderly end, not an error.
	if err := s.grpc.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve machine API on %s: %w", l.Addr(), err)
	}
	return nil
}

// Stop stops accepting calls and waits for the calls in flight until ctx
// ends, then closes every connection.
func (s *Server) Stop(ctx context.Context) {
	s.health.Shutdown()
	s.stop()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// streamContext is the context of a stream handler: it ends with the call or
// when the server stops.
func (s *Server) streamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.stopping, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// Package client is the Go client of the Kiln machine API. It dials one node
// (machined on TCP port 50000) over TLS — mutual TLS against the machine CA
// for a configured node, or an unverified (optionally fingerprint-pinned)
// connection for a node in maintenance mode — and exposes the generated
// MachineService client plus the gRPC health client.
//
// The package is pure Go: kctl builds from it on any operating system.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// DefaultPort is the machine API's TCP port, used when an endpoint names none.
const DefaultPort = "50000"

// maxMessageSize bounds one received message; a machine config or a log
// chunk is far smaller, but a generous limit keeps large configs working.
const maxMessageSize = 32 << 20

// Client is a connection to one node's machine API. The embedded
// MachineServiceClient carries the API's methods.
type Client struct {
	machine.MachineServiceClient
	// Health is the standard gRPC health service of the node.
	Health healthpb.HealthClient

	conn    *grpc.ClientConn
	address string
}

// New prepares a client for endpoint ("host", "host:port", "[v6]:port" or a
// bare IPv6 address; port 50000 when none is given). It does not block: the
// connection is made by the first call, whose error says why it failed, so
// ctx only bounds preparation; deadlines belong on the calls. Exactly one of
// WithMTLS or WithInsecure must be given (the last one given wins).
func New(ctx context.Context, endpoint string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	address, err := NormalizeEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if o.tls == nil {
		return nil, errors.New("client: no transport security chosen: use WithMTLS or WithInsecure")
	}
	tlsConfig, err := o.tls(hostOf(address))
	if err != nil {
		return nil, err
	}
	userAgent := o.userAgent
	if userAgent == "" {
		userAgent = "kiln-client"
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithUserAgent(userAgent),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  500 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   5 * time.Second,
			},
			MinConnectTimeout: 10 * time.Second,
		}),
		// Pings no more often than grpc-go servers accept by default
		// (keepalive.EnforcementPolicy.MinTime is 5 minutes), and only
		// while a call is open: enough to notice a node that vanished
		// under a followed log stream.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    5 * time.Minute,
			Timeout: 20 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)),
	}
	dialOpts = append(dialOpts, o.dialOptions...)
	// passthrough hands the address to the dialer as it is: no DNS SRV or
	// service-config lookups for a single node.
	conn, err := grpc.NewClient("passthrough:///"+address, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", address, err)
	}
	return &Client{
		MachineServiceClient: machine.NewMachineServiceClient(conn),
		Health:               healthpb.NewHealthClient(conn),
		conn:                 conn,
		address:              address,
	}, nil
}

// Address is the host:port the client dials.
func (c *Client) Address() string { return c.address }

// Conn is the underlying gRPC connection, for clients of other services.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// NormalizeEndpoint turns an endpoint as a user writes it into host:port,
// adding DefaultPort when no port is given. A URL scheme ("https://") and a
// trailing slash are tolerated.
func NormalizeEndpoint(endpoint string) (string, error) {
	ep := strings.TrimSpace(endpoint)
	if i := strings.Index(ep, "://"); i >= 0 {
		ep = ep[i+3:]
	}
	ep = strings.TrimSuffix(ep, "/")
	if ep == "" {
		return "", fmt.Errorf("endpoint %q: empty", endpoint)
	}
	if ip := net.ParseIP(strings.Trim(ep, "[]")); ip != nil {
		// A bare address, IPv4 or IPv6 (with or without brackets).
		return net.JoinHostPort(ip.String(), DefaultPort), nil
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return net.JoinHostPort(ep, DefaultPort), nil
		}
		return "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	if host == "" {
		return "", fmt.Errorf("endpoint %q: no host", endpoint)
	}
	if port == "" {
		port = DefaultPort
	}
	return net.JoinHostPort(host, port), nil
}

// hostOf returns the host part of a normalized host:port.
func hostOf(address string) string {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return address
	}
	return host
}

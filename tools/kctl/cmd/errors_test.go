package cmd

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/config"
)

func TestFormatError(t *testing.T) {
	cfgErr := &config.Error{Problems: []config.FieldError{
		{Path: "machine.type", Msg: `unknown type "boss"`},
		{Path: "cluster.name", Msg: "required"},
	}}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{
			name: "permission denied",
			err: &NodeError{Node: "127.0.0.1", Err: status.Error(codes.PermissionDenied,
				"os:reader may not call /kiln.machine.v1alpha1.MachineService/Reboot (allowed: os:admin, os:operator)")},
			want: "kctl: 127.0.0.1: permission denied: os:reader may not call Reboot (allowed: os:admin, os:operator)",
		},
		{
			name: "unauthenticated",
			err:  &NodeError{Node: "n1", Err: status.Error(codes.Unauthenticated, "client certificate required: present a certificate issued by this node's machine CA")},
			want: "kctl: n1: not authenticated: client certificate required: present a certificate issued by this node's machine CA",
		},
		{
			name: "connection refused",
			err: &NodeError{Node: "127.0.0.1:1", Err: status.Error(codes.Unavailable,
				`connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)},
			want: "kctl: 127.0.0.1:1: could not reach the node: connection refused",
		},
		{
			name: "unknown authority",
			err: &NodeError{Node: "10.0.0.2", Err: status.Error(codes.Unavailable,
				`connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`)},
			want: "kctl: 10.0.0.2: could not reach the node: TLS handshake failed: x509: certificate signed by unknown authority (a node in maintenance mode has a self-signed certificate: use --insecure)",
		},
		{
			name: "fingerprint mismatch",
			err: &NodeError{Node: "10.0.0.2", Err: status.Error(codes.Unavailable,
				`connection error: desc = "transport: authentication handshake failed: certificate fingerprint mismatch: the node's is ab, expected cd"`)},
			want: "kctl: 10.0.0.2: could not reach the node: TLS handshake failed: certificate fingerprint mismatch: the node's is ab, expected cd",
		},
		{
			name: "node's own unavailable",
			err:  &NodeError{Node: "n1", Err: status.Error(codes.Unavailable, "the kernel log cannot be read by an unprivileged machined")},
			want: "kctl: n1: unavailable: the kernel log cannot be read by an unprivileged machined",
		},
		{
			name: "failed precondition",
			err:  &NodeError{Node: "n1", Err: status.Error(codes.FailedPrecondition, "node is in maintenance mode: apply a configuration first")},
			want: "kctl: n1: node is in maintenance mode: apply a configuration first",
		},
		{
			name: "invalid config from the node keeps its lines",
			err:  &NodeError{Node: "n1", Err: status.Error(codes.InvalidArgument, cfgErr.Error())},
			want: "kctl: n1: 2 problems in machine config:\nmachine.type: unknown type \"boss\"\ncluster.name: required",
		},
		{
			name: "local config error keeps its lines",
			err:  fmt.Errorf("bad.yaml: %w", cfgErr),
			want: "kctl: bad.yaml: 2 problems in machine config:\nmachine.type: unknown type \"boss\"\ncluster.name: required",
		},
		{
			name: "wrapped status",
			err:  fmt.Errorf("open log stream: %w", status.Error(codes.NotFound, `no service "etcd"`)),
			want: `kctl: open log stream: not found: no service "etcd"`,
		},
		{
			name: "several nodes, one line each",
			err: errors.Join(
				&NodeError{Node: "a", Err: status.Error(codes.DeadlineExceeded, "context deadline exceeded")},
				&NodeError{Node: "b", Err: status.Error(codes.Internal, "boom")},
			),
			want: "kctl: a: timed out waiting for the node\nkctl: b: error on the node: boom",
		},
		{
			name: "interrupted",
			err:  fmt.Errorf("stream: %w", context.Canceled),
			want: "kctl: interrupted",
		},
		{
			name: "plain multi-line error becomes one line",
			err:  errors.New("first\nsecond\n"),
			want: "kctl: first; second",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, FormatError(tt.err)); diff != "" {
				t.Errorf("FormatError(%v) (-want +got):\n%s", tt.err, diff)
			}
		})
	}
}

func TestTransportReason(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{in: `connection error: desc = "transport: Error while dialing: dial tcp: lookup nohost: no such host"`, want: "lookup nohost: no such host", ok: true},
		{in: `connection error: desc = "error reading server preface: EOF"`, want: "EOF", ok: true},
		{in: "write tcp 127.0.0.1:5->127.0.0.1:6: write: broken pipe", want: "broken pipe (the node closed the connection: if it has a configuration, it wants a client certificate from its CA)", ok: true},
		{in: "service etcd is not running", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := transportReason(tt.in)
			if ok != tt.ok || got != tt.want {
				t.Errorf("transportReason(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

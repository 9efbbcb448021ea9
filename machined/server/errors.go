package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// Conditions a Machine reports by wrapping these errors (fmt.Errorf with %w).
// They carry no gRPC code themselves: the mapping below is the only place
// where errors become status codes.
var (
	// ErrRebootRequired: the change needs a reboot and the mode forbids one.
	ErrRebootRequired = errors.New("the change requires a reboot")
	// ErrPrecondition: the node is not in a state where the call makes
	// sense (nothing to confirm, no configuration yet, ...).
	ErrPrecondition = errors.New("failed precondition")
	// ErrInvalidArgument: the request itself is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnavailable: a facility of the node cannot be used here (e.g. the
	// kernel log of an unprivileged machined).
	ErrUnavailable = errors.New("unavailable")
)

// code returns the gRPC code for an error returned by a Machine or by the
// handlers.
func code(err error) codes.Code {
	var cfgErr *config.Error
	switch {
	case errors.As(err, &cfgErr), errors.Is(err, ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, supervisor.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrRebootRequired), errors.Is(err, ErrPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	default:
		return codes.Internal
	}
}

// toStatus turns err into a gRPC status error. Errors that already are
// statuses (from the auth interceptor, gRPC itself, or the health and
// reflection services) pass unchanged.
func toStatus(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	c := code(err)
	msg := err.Error()
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		// The full problem list, one per line, without the context that
		// wrapping added in front of it.
		msg = cfgErr.Error()
	}
	if c == codes.Internal {
		log.Error("call failed", "method", method, "err", err)
	}
	return status.Error(c, msg)
}

// unaryErrors is the outermost unary interceptor: it maps handler errors.
func (s *Server) unaryErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, toStatus(s.log, info.FullMethod, err)
}

// streamErrors is the outermost stream interceptor: it maps handler errors.
func (s *Server) streamErrors(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return toStatus(s.log, info.FullMethod, handler(srv, ss))
}

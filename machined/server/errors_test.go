package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/supervisor"
)

func TestToStatus(t *testing.T) {
	cfgErr := &config.Error{Problems: []config.FieldError{
		{Path: "machine.type", Msg: "missing"},
		{Path: "cluster.name", Msg: "missing"},
	}}
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantMsg  string
	}{
		{"config error", fmt.Errorf("apply: parse: %w", cfgErr), codes.InvalidArgument, cfgErr.Error()},
		{"invalid argument", fmt.Errorf("%w: id is empty", ErrInvalidArgument), codes.InvalidArgument, "invalid argument: id is empty"},
		{"not found", fmt.Errorf("start web: %w", supervisor.ErrNotFound), codes.NotFound, ""},
		{"reboot required", fmt.Errorf("%w: machine.install.disk changed", ErrRebootRequired), codes.FailedPrecondition, ""},
		{"precondition", fmt.Errorf("confirm: %w", ErrPrecondition), codes.FailedPrecondition, ""},
		{"unavailable", fmt.Errorf("%w: kernel log: permission denied", ErrUnavailable), codes.Unavailable, ""},
		{"canceled", fmt.Errorf("reconcile: %w", context.Canceled), codes.Canceled, ""},
		{"deadline", fmt.Errorf("reconcile: %w", context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{"other", errors.New("disk on fire"), codes.Internal, "disk on fire"},
		{"status passes", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := status.Convert(toStatus(slog.New(slog.DiscardHandler), "/m", tt.err))
			if got.Code() != tt.wantCode {
				t.Errorf("toStatus(%v) code = %s, want %s", tt.err, got.Code(), tt.wantCode)
			}
			want := tt.wantMsg
			if want == "" {
				want = tt.err.Error()
			}
			if got.Message() != want {
				t.Errorf("toStatus(%v) message = %q, want %q", tt.err, got.Message(), want)
			}
		})
	}
	if err := toStatus(slog.New(slog.DiscardHandler), "/m", nil); err != nil {
		t.Errorf("toStatus(nil) = %v, want nil", err)
	}
}

//go:build !linux

package provision

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// errUnsupported: the QEMU provisioner drives qemu-system-* and /proc; it runs on Linux.
var errUnsupported = errors.New("the qemu provisioner runs on Linux only")

func startQEMU(context.Context, vmSpec, *slog.Logger) (int, int, error) {
	return 0, 0, errUnsupported
}

func running(*Cluster) bool { return false }

func stopQEMU(*Cluster, time.Duration) error { return errUnsupported }

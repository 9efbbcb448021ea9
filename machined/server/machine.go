package server

import (
	"context"
	"net/netip"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/events"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// Machine is the node behind the API. Its methods return plain errors; wrap
// the sentinels in errors.go, *config.Error or supervisor.ErrNotFound to
// choose the status code a caller sees.
type Machine interface {
	// ApplyConfiguration validates and applies a machine config.
	ApplyConfiguration(ctx context.Context, req ApplyRequest) (*ApplyResult, error)
	// ConfirmConfiguration keeps a configuration applied in TRY mode.
	ConfirmConfiguration(ctx context.Context) (string, error)
	// Config returns the configuration in force, with secrets replaced
	// when redact is true.
	Config(ctx context.Context, redact bool) (*ConfigState, error)
	Version(ctx context.Context) (*Version, error)
	Disks(ctx context.Context) ([]Disk, error)

	Services(ctx context.Context) ([]supervisor.Status, error)
	StartService(ctx context.Context, id string) error
	StopService(ctx context.Context, id string) error
	RestartService(ctx context.Context, id string) error
	// ServiceLog returns the log of a service.
	ServiceLog(ctx context.Context, id string) (LogSource, error)

	// Events is the node's event bus.
	Events() *events.Bus

	// Reboot and Shutdown must return before they act, so that the
	// caller gets its answer.
	Reboot(ctx context.Context) error
	Shutdown(ctx context.Context) error

	// Mounts lists the mounted filesystems.
	Mounts(ctx context.Context) ([]Mount, error)
	// Processes lists the processes of machined's PID namespace.
	Processes(ctx context.Context) ([]Process, error)
	// Netstat lists the listening TCP and bound UDP sockets.
	Netstat(ctx context.Context) ([]Socket, error)
	// NetworkStatus reads the host network, names and time sync.
	NetworkStatus(ctx context.Context) (*NetworkStatus, error)
	// DebugAction runs a test-only action and returns what to tell the
	// caller. Like Reboot it must return before an action that ends
	// machined takes effect. A Machine that has debug actions disabled
	// wraps ErrPrecondition; an unknown action wraps ErrInvalidArgument.
	DebugAction(ctx context.Context, action string) (string, error)
}

// Mount is a mounted filesystem.
type Mount struct {
	Source, Target, FSType string
	// Options as in /proc/mounts, e.g. "ro,relatime".
	Options string
}

// Process is one process of the node.
type Process struct {
	PID, PPID   int
	Name        string
	CommandLine string
	State       string
	RSSBytes    uint64
	// UserCPU and SystemCPU are the CPU time spent in user and in kernel mode.
	UserCPU, SystemCPU time.Duration
}

// Socket is a listening TCP socket or a bound UDP socket.
type Socket struct {
	// Protocol is "tcp", "tcp6", "udp" or "udp6".
	Protocol string
	Local    netip.AddrPort
	// State is "LISTEN" for TCP listeners and empty for UDP.
	State string
}

// LogSource is the log of one service (a *logstore.Log).
type LogSource interface {
	// Tail returns the last n lines (all when n < 0), each ending in "\n".
	Tail(n int) [][]byte
	// TailAndSubscribe returns the last n lines and, atomically with them,
	// a channel of every line completed afterwards until cancel.
	TailAndSubscribe(n int) (tail [][]byte, lines <-chan []byte, cancel func())
}

// ApplyRequest is an ApplyConfiguration call.
type ApplyRequest struct {
	Data       []byte
	Mode       machine.ApplyMode
	DryRun     bool
	TryTimeout time.Duration // 0: the default
}

// ApplyResult is what an apply did, or would do for a dry run.
type ApplyResult struct {
	// Mode is the mode used: AUTO resolves to NO_REBOOT or REBOOT.
	Mode           machine.ApplyMode
	RebootRequired bool
	Diff           string
	Message        string
	Warnings       []string
}

// ConfigState is the configuration in force.
type ConfigState struct {
	Data          []byte
	Redacted      bool
	Checksum      string
	StagedPending bool
}

// Version describes the running machined.
type Version struct {
	Tag, SHA, GoVersion, OS, Arch string
	Maintenance                   bool
	Hostname                      string
	Platform                      string
}

// Disk is a block device of the node.
type Disk struct {
	Name       string
	SizeBytes  uint64
	Model      string
	Serial     string
	Rotational bool
	ReadOnly   bool
	SystemDisk bool
}

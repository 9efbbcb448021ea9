// Package daemon is machined: it owns one node. It keeps the machine config
// in the store, applies it through the reconcilers (identity, host name,
// extension services), serves the machine API (machined/server) and carries
// out reboots and shutdowns.
//
// This package runs machined in "process mode": an ordinary, unprivileged
// process keeping all its state under one root directory, which is how
// developers and tests run it. On a Kiln node the same daemon runs under
// init with the real seams plugged in (HostnameSetter, the kernel log, power
// through init).
//
// Layout under the root:
//
//	state/                the STATE partition: config store (config, config.prev, staged)
//	state/identity/       the maintenance certificate (stable fingerprint)
//	var/log/              one log per service
//	run/                  runtime files
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/events"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/machined/store"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// Defaults.
const (
	DefaultListen     = "127.0.0.1:50000"
	DefaultTryTimeout = time.Minute
	// PlatformProcess is reported by Version in process mode.
	PlatformProcess = "process"
	// powerDelay lets the answer to Reboot or Shutdown reach the caller
	// before the server stops.
	powerDelay  = 100 * time.Millisecond
	stopTimeout = 30 * time.Second
)

// ErrReboot is returned by Run after a reboot was requested and the node
// was stopped cleanly: the caller restarts machined (Reexec in process
// mode).
var ErrReboot = errors.New("reboot requested")

// HostnameSetter applies the host name to the system. In process mode there
// is none: the name is only recorded and reported by Version; on a node,
// the networking reconciler sets the kernel's host name.
type HostnameSetter interface {
	SetHostname(name string) error
}

// Options configures New.
type Options struct {
	// Root holds all state (see the package documentation). Required.
	Root string
	// Listen is the machine API address (DefaultListen when empty).
	Listen string
	// KmsgPath is the kernel log (server.DefaultKmsgPath when empty).
	KmsgPath string
	// SysBlock is where block devices are listed (/sys/block when empty).
	SysBlock string
	Logger   *slog.Logger
	// Console receives the lines an operator at the console needs (the
	// maintenance certificate's fingerprint). Nil prints nothing.
	Console io.Writer
	// Hostname applies the host name; nil records it only.
	Hostname HostnameSetter
	// TryTimeout is the default rollback delay of TRY applies
	// (DefaultTryTimeout when zero).
	TryTimeout time.Duration
}

// PowerAction is what the API asked the node to do.
type PowerAction int

// Power actions.
const (
	PowerNone PowerAction = iota
	PowerReboot
	PowerOff
)

// Daemon is machined for one node.
type Daemon struct {
	opts Options
	log  *slog.Logger
	bus  *events.Bus

	store *store.Store
	sup   *supervisor.Supervisor
	srv   *server.Server
	lis   net.Listener

	maintenanceCert tls.Certificate
	// interfaceAddrs lists local addresses for the node certificate.
	interfaceAddrs func() ([]netip.Addr, error)

	// mu serialises applies and guards the state below.
	mu            sync.Mutex
	cfg           *config.Config // in force; nil in maintenance mode
	raw           []byte         // the bytes cfg was parsed from
	hostname      string         // recorded host name
	try           *tryState      // a TRY apply awaiting confirmation
	tryGen        uint64
	serverCert    *tls.Certificate
	serverCertKey string
	warnedNoCAKey bool

	power     chan PowerAction
	powerOnce sync.Once
	requested atomic.Int32
	served    chan error
	stopOnce  sync.Once
	stopErr   error
}

// New checks the options and prepares the state directories; Start brings
// the node up.
func New(opts Options) (*Daemon, error) {
	if opts.Root == "" {
		return nil, errors.New("daemon: no root directory")
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.SysBlock == "" {
		opts.SysBlock = "/sys/block"
	}
	if opts.TryTimeout <= 0 {
		opts.TryTimeout = DefaultTryTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("daemon: root %s: %w", opts.Root, err)
	}
	opts.Root = root
	for _, dir := range []string{stateDir(root), identityDir(root), logDir(root), runDir(root)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	return &Daemon{
		opts:           opts,
		log:            opts.Logger,
		bus:            events.New(events.DefaultSize),
		interfaceAddrs: localAddrs,
		power:          make(chan PowerAction, 1),
		served:         make(chan error, 1),
	}, nil
}

func stateDir(root string) string    { return filepath.Join(root, "state") }
func identityDir(root string) string { return filepath.Join(root, "state", "identity") }
func logDir(root string) string      { return filepath.Join(root, "var", "log") }
func runDir(root string) string      { return filepath.Join(root, "run") }

// Start opens the store, takes a staged configuration, applies the stored
// one (or enters maintenance mode) and starts serving the machine API.
func (d *Daemon) Start(ctx context.Context) error {
	var err error
	if d.store, err = store.Open(stateDir(d.opts.Root), d.log); err != nil {
		return err
	}
	var created bool
	d.maintenanceCert, created, err = loadMaintenanceCert(filepath.Join(identityDir(d.opts.Root), "maintenance.pem"), time.Now())
	if err != nil {
		return err
	}
	if created {
		d.log.Info("created the maintenance certificate", "fingerprint", Fingerprint(d.maintenanceCert))
	}
	d.sup = supervisor.New(supervisor.Options{
		Logger:  d.log,
		LogDir:  logDir(d.opts.Root),
		OnEvent: d.serviceEvent,
	})
	d.srv, err = server.New(server.Options{
		Machine:  d,
		Logger:   d.log.With("component", "api"),
		Identity: server.Identity{Certificate: d.maintenanceCert, Maintenance: true},
		KmsgPath: d.opts.KmsgPath,
	})
	if err != nil {
		return err
	}

	if err := d.takeStaged(); err != nil {
		return err
	}
	raw, err := d.store.Load()
	switch {
	case errors.Is(err, store.ErrNoConfig):
		if err != store.ErrNoConfig { // wrapped: files exist but are torn or corrupt
			d.log.Warn("no usable stored configuration", "err", err)
		}
	case err != nil:
		return fmt.Errorf("load machine configuration: %w", err)
	default:
		cfg, err := config.Parse(raw)
		if err != nil {
			return fmt.Errorf("the stored machine configuration is invalid (apply a fixed one with a previous machined, or remove %s to start in maintenance mode): %w",
				stateDir(d.opts.Root), err)
		}
		d.mu.Lock()
		err = d.activate(ctx, cfg, raw, false)
		d.mu.Unlock()
		if err != nil {
			return fmt.Errorf("apply the stored machine configuration: %w", err)
		}
	}

	if d.lis, err = net.Listen("tcp", d.opts.Listen); err != nil {
		return fmt.Errorf("listen for the machine API: %w", err)
	}
	go func() { d.served <- d.srv.Serve(d.lis) }()

	fp := Fingerprint(d.maintenanceCert)
	if d.srv.Maintenance() {
		d.log.Info("machine API ready", "addr", d.lis.Addr().String(), "mode", "maintenance", "fingerprint", fp)
		if d.opts.Console != nil {
			fmt.Fprintf(d.opts.Console, "machined: maintenance mode: apply a configuration with `kctl apply-config --insecure` to %s\nmachined: certificate fingerprint %s\n",
				d.lis.Addr(), fp)
		}
		d.bus.Publish("machine.ready", "machine API ready in maintenance mode", map[string]string{"addr": d.lis.Addr().String(), "fingerprint": fp})
	} else {
		d.log.Info("machine API ready", "addr", d.lis.Addr().String(), "mode", "configured")
		d.bus.Publish("machine.ready", "machine API ready", map[string]string{"addr": d.lis.Addr().String()})
	}
	return nil
}

// takeStaged makes a staged configuration the stored one.
func (d *Daemon) takeStaged() error {
	data, ok, err := d.store.Staged()
	if err != nil {
		d.log.Error("staged configuration discarded", "err", err)
		return nil
	}
	if !ok {
		return nil
	}
	if _, err := config.Parse(data); err != nil {
		// It was valid when staged; a newer machined may be stricter.
		d.log.Error("staged configuration is invalid; keeping the stored one", "err", err)
		d.bus.Publish("config.staged.invalid", "staged configuration discarded: "+err.Error(), nil)
		if err := d.store.DiscardStaged(); err != nil {
			return fmt.Errorf("discard the staged configuration: %w", err)
		}
		return nil
	}
	if err := d.store.PromoteStaged(); err != nil {
		return fmt.Errorf("take the staged configuration: %w", err)
	}
	d.log.Info("staged configuration taken")
	d.bus.Publish("config.staged.taken", "the staged configuration is now the stored one", nil)
	return nil
}

// Addr is the address the machine API listens on (after Start).
func (d *Daemon) Addr() net.Addr { return d.lis.Addr() }

// MaintenanceFingerprint is the fingerprint of the maintenance certificate (after
// Start).
func (d *Daemon) MaintenanceFingerprint() string { return Fingerprint(d.maintenanceCert) }

// PowerRequests delivers the reboot or shutdown asked for over the API,
// after its caller got the answer.
func (d *Daemon) PowerRequests() <-chan PowerAction { return d.power }

// requestPower schedules a power action; the first request wins.
func (d *Daemon) requestPower(a PowerAction) {
	d.powerOnce.Do(func() {
		d.requested.Store(int32(a))
		time.AfterFunc(powerDelay, func() { d.power <- a })
	})
}

// powerRequested returns the power action asked for so far, if any.
func (d *Daemon) powerRequested() PowerAction { return PowerAction(d.requested.Load()) }

// Run starts the node and keeps it until ctx ends or the API asks for a
// reboot or shutdown, then stops services and the server. It returns
// ErrReboot when a reboot was asked for.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.Start(ctx); err != nil {
		d.Stop(context.Background())
		return err
	}
	action := PowerNone
	var serveErr error
	select {
	case <-ctx.Done():
		d.log.Info("stopping", "reason", context.Cause(ctx))
	case action = <-d.power:
	case serveErr = <-d.served:
		d.log.Error("machine API stopped", "err", serveErr)
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	err := errors.Join(serveErr, d.Stop(stopCtx))
	if action == PowerReboot {
		return errors.Join(ErrReboot, err)
	}
	return err
}

// Stop stops the machine API and every service. It is safe to call more
// than once and after a failed Start.
func (d *Daemon) Stop(ctx context.Context) error {
	d.stopOnce.Do(func() {
		d.mu.Lock()
		d.cancelTry()
		d.mu.Unlock()
		if d.srv != nil {
			d.srv.Stop(ctx)
		}
		if d.sup != nil {
			if err := d.sup.Shutdown(ctx); err != nil {
				d.stopErr = fmt.Errorf("stop services: %w", err)
			}
		}
		d.log.Info("machined stopped")
	})
	return d.stopErr
}

// Package daemon is machined: it owns one node. It keeps the machine config
// in the store, applies it through the reconcilers (identity, host name,
// network, extension services), serves the machine API (machined/server) and
// carries out reboots and shutdowns.
//
// It runs in one of two modes. In "process mode" it is an ordinary,
// unprivileged process keeping all its state under one root directory, which
// is how developers and tests run it. In "node mode" (PrepareNode) it is the
// daemon of a Kiln node, the child of init: it finds the system disk by its
// partition labels, mounts STATE at /system/state and EPHEMERAL at /var
// (growing it to fill the disk), sets the kernel's host name, brings up the
// network, reads the kernel log from /dev/kmsg, and reboots or powers off by
// signalling init.
//
// Layout under the root in process mode (on a node: /system/state, /var/log,
// /run/machined):
//
//	state/                the STATE partition: config store (config, config.prev, staged)
//	state/identity/       the maintenance certificate (stable fingerprint)
//	var/log/              one log per service
//	run/                  runtime files
//
// # Console
//
// When the machine API listens, machined writes one readiness line to the
// console (Options.Console), in this stable format:
//
//	[kiln] ready api=<listen address> mode=<maintenance|configured> fingerprint=sha256:<64 hex> addrs=<a,b,...|none> hostname=<name|none> platform=<node|process> cpu=<duration> uptime=<duration>
//
// The line starts with "[kiln] ready " and is followed by key=value pairs
// separated by single spaces; values never contain spaces. fingerprint is the
// SHA-256 of the certificate the API serves at that moment (the one `kctl
// --insecure --cert-fingerprint` pins in maintenance mode). addrs lists the
// node's global unicast addresses. cpu is the CPU time machined has used since
// it started (user and kernel mode, in Go's duration format, e.g. 1.23s): the
// work its start took. uptime is the time since the kernel started (in a node's first
// readiness line: how long its boot took, firmware and boot loader not counted; in
// process mode the host's uptime). Keys may be added at the end of the line
// later; existing keys keep their meaning. Tests and tools wait for this line
// (regular expression `\[kiln\] ready api=(\S+) mode=(\S+) fingerprint=sha256:([0-9a-f]{64})`).
//
// In maintenance mode, a few lines before it tell an operator at the console
// the node's addresses, the fingerprint and the exact command to run:
//
//	[kiln] maintenance mode: this node has no configuration
//	[kiln]   addresses:   10.0.2.15
//	[kiln]   fingerprint: sha256:...
//	[kiln]   apply one:   kctl apply-config --insecure -n 10.0.2.15 -f controlplane.yaml
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

	"github.com/kiln-os/kiln/machined/atomicfile"
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
	// PlatformNode is reported by Version on a Kiln node.
	PlatformNode = "node"
	// DefaultNetworkWait bounds how long a starting node waits for an address
	// before it reports readiness without one.
	DefaultNetworkWait = 15 * time.Second
	// crashExitCode is how the "crash" debug action ends machined.
	crashExitCode = 3
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
	// FallbackHostname is the host name when the configuration names none
	// and in maintenance mode (on a node: kiln-xxxxxx from the first NIC's
	// MAC address). Empty: none.
	FallbackHostname string
	// TryTimeout is the default rollback delay of TRY applies
	// (DefaultTryTimeout when zero).
	TryTimeout time.Duration

	// Platform is reported by Version (PlatformProcess when empty).
	Platform string
	// StateDir, LogDir and RunDir override the directories under Root (a
	// node keeps them on its partitions). Root may be empty when all three
	// are set.
	StateDir, LogDir, RunDir string
	// Network brings up the host network; nil leaves it alone (process
	// mode).
	Network Network
	// NetworkWait bounds the wait for an address before the readiness line
	// (DefaultNetworkWait when zero); only with Network.
	NetworkWait time.Duration
	// BeforeActivate, when set, runs before a configuration is first brought into
	// force: a stored or seeded one at start, or the first apply in maintenance
	// mode. A node waits there for init's late modules and for EPHEMERAL. It runs
	// once; in maintenance mode without the daemon's lock, so other calls are
	// answered meanwhile.
	BeforeActivate func()
	// Power carries out a reboot or power-off after machined stopped its
	// services (a node signals init). Nil: Run returns ErrReboot for a
	// reboot and nil for a power-off (process mode).
	Power func(PowerAction) error
	// DebugActions enables the DebugAction call (tests).
	DebugActions bool
	// Exit ends the process for the "crash" debug action (os.Exit when nil).
	Exit func(code int)
	// MountsPath is the mount table (/proc/self/mounts when empty) and
	// ProcNet the socket tables (/proc/net when empty).
	MountsPath, ProcNet string
}

// Network is the host network seam: on a node, a networking.Controller.
type Network interface {
	// Reconcile makes the network what cfg says (nil: maintenance mode).
	Reconcile(ctx context.Context, cfg *config.Config) error
	// WaitAddress waits until the node has an address or ctx ends.
	WaitAddress(ctx context.Context) bool
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

	// prepare runs Options.BeforeActivate once (nil without it): from the first
	// apply in maintenance mode before it takes mu, or from activate.
	prepare func()

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
	if opts.Root == "" && (opts.StateDir == "" || opts.LogDir == "" || opts.RunDir == "") {
		return nil, errors.New("daemon: no root directory")
	}
	if opts.Platform == "" {
		opts.Platform = PlatformProcess
	}
	if opts.NetworkWait <= 0 {
		opts.NetworkWait = DefaultNetworkWait
	}
	if opts.Exit == nil {
		opts.Exit = os.Exit
	}
	if opts.MountsPath == "" {
		opts.MountsPath = "/proc/self/mounts"
	}
	if opts.ProcNet == "" {
		opts.ProcNet = "/proc/net"
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
	if opts.Root != "" {
		root, err := filepath.Abs(opts.Root)
		if err != nil {
			return nil, fmt.Errorf("daemon: root %s: %w", opts.Root, err)
		}
		opts.Root = root
		if opts.StateDir == "" {
			opts.StateDir = stateDir(root)
		}
		if opts.LogDir == "" {
			opts.LogDir = logDir(root)
		}
		if opts.RunDir == "" {
			opts.RunDir = runDir(root)
		}
	}
	for _, dir := range []string{opts.StateDir, identityDir(opts.StateDir), opts.LogDir, opts.RunDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	d := &Daemon{
		opts:           opts,
		log:            opts.Logger,
		bus:            events.New(events.DefaultSize),
		interfaceAddrs: localAddrs,
		power:          make(chan PowerAction, 1),
		served:         make(chan error, 1),
	}
	if opts.BeforeActivate != nil {
		d.prepare = sync.OnceFunc(opts.BeforeActivate)
	}
	return d, nil
}

func stateDir(root string) string     { return filepath.Join(root, "state") }
func identityDir(state string) string { return filepath.Join(state, "identity") }
func logDir(root string) string       { return filepath.Join(root, "var", "log") }
func runDir(root string) string       { return filepath.Join(root, "run") }

// apiListenConfig is how the machine API listens: plain TCP. Go (1.24 and later)
// asks for a Multipath TCP socket by default; the API has no use for several
// paths, and every connection to an MPTCP listener from an ordinary client falls
// back to TCP through the kernel's MPTCP code. Under emulation the MPTCP listener
// alone cost ~25 ms of machined's CPU before the readiness line (session 9).
func apiListenConfig() *net.ListenConfig {
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return lc
}

// seedName is a configuration put on STATE by the image builder (kctl image
// build --config): taken as the first configuration when the store has none.
const seedName = "config.yaml"

// Start opens the store, takes a staged configuration, applies the stored
// one (or enters maintenance mode) and starts serving the machine API.
func (d *Daemon) Start(ctx context.Context) error {
	// The maintenance certificate (a key to generate and a file to write on the
	// first boot) is made beside opening the store.
	type certResult struct {
		cert    tls.Certificate
		created bool
		err     error
	}
	certc := make(chan certResult, 1)
	go func() {
		var r certResult
		// A key that was being written when the power went stays out of STATE.
		removed, err := atomicfile.RemoveTemps(identityDir(d.opts.StateDir))
		for _, n := range removed {
			d.log.Info("removed a temporary file of an interrupted write", "file", n)
		}
		if err != nil {
			d.log.Warn("identity directory", "err", err)
		}
		r.cert, r.created, r.err = loadMaintenanceCert(filepath.Join(identityDir(d.opts.StateDir), "maintenance.pem"), time.Now())
		certc <- r
	}()
	// In maintenance mode the host name and the network come up while the key is
	// made: the node's address is what its user waits for.
	early := func(name string) bool { return name == "hostname" || name == "network" }
	earlyDone := false
	var raw []byte
	var loadErr error
	err := func() error {
		var err error
		if d.store, err = store.Open(d.opts.StateDir, d.log); err != nil {
			return err
		}
		if err := d.takeStaged(); err != nil {
			return err
		}
		raw, loadErr = d.store.Load()
		if !errors.Is(loadErr, store.ErrNoConfig) || fileExists(filepath.Join(d.opts.StateDir, seedName))() {
			return nil
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		earlyDone = true
		if err := d.reconcileSome(ctx, nil, early); err != nil {
			return fmt.Errorf("maintenance mode: %w", err)
		}
		return nil
	}()
	cr := <-certc
	if err != nil {
		return err
	}
	if cr.err != nil {
		return cr.err
	}
	d.maintenanceCert = cr.cert
	created := cr.created
	if created {
		d.log.Info("created the maintenance certificate", "fingerprint", Fingerprint(d.maintenanceCert))
	}
	d.sup = supervisor.New(supervisor.Options{
		Logger:  d.log,
		LogDir:  d.opts.LogDir,
		OnEvent: d.serviceEvent,
		// Services that check certificates wait for the clock (timegate.go).
		TimeReady: d.timeReady(),
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

	switch err := loadErr; {
	case errors.Is(err, store.ErrNoConfig):
		if err != store.ErrNoConfig { // wrapped: files exist but are torn or corrupt
			d.log.Warn("no usable stored configuration", "err", err)
		}
		if err := d.takeSeed(ctx); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("load machine configuration: %w", err)
	default:
		cfg, err := config.Parse(raw)
		if err != nil {
			return fmt.Errorf("the stored machine configuration is invalid (apply a fixed one with a previous machined, or remove %s to start in maintenance mode): %w",
				d.opts.StateDir, err)
		}
		d.mu.Lock()
		err = d.activate(ctx, cfg, raw, false)
		d.mu.Unlock()
		if err != nil {
			return fmt.Errorf("apply the stored machine configuration: %w", err)
		}
	}

	d.mu.Lock()
	var merr error
	if d.cfg == nil {
		// Maintenance mode still has a host name and a network to reach it by.
		merr = d.reconcileSome(ctx, nil, func(name string) bool { return !earlyDone || !early(name) })
	}
	d.mu.Unlock()
	if merr != nil {
		return fmt.Errorf("maintenance mode: %w", merr)
	}

	if d.lis, err = apiListenConfig().Listen(ctx, "tcp", d.opts.Listen); err != nil {
		return fmt.Errorf("listen for the machine API: %w", err)
	}
	go func() { d.served <- d.srv.Serve(d.lis) }()
	go d.recheckCertsAfterSync(ctx)

	if d.opts.Network != nil {
		wctx, cancel := context.WithTimeout(ctx, d.opts.NetworkWait)
		if !d.opts.Network.WaitAddress(wctx) {
			d.log.Warn("no network address yet; the node may not be reachable", "waited", d.opts.NetworkWait)
		}
		cancel()
	}
	d.announce()
	return nil
}

// takeSeed applies a configuration the image builder put on STATE, when
// the store has none: it is validated, applied and stored like a first
// apply, and then removed (the store holds it from then on). An invalid seed
// is set aside and the node starts in maintenance mode.
func (d *Daemon) takeSeed(ctx context.Context) error {
	path := filepath.Join(d.opts.StateDir, seedName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the configuration from the image: %w", err)
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		d.log.Error("the configuration from the image is invalid; starting in maintenance mode", "path", path, "err", err)
		d.bus.Publish("config.seed.invalid", "configuration from the image discarded: "+err.Error(), nil)
		if rerr := os.Rename(path, path+".invalid"); rerr != nil {
			d.log.Warn("set the invalid configuration aside", "err", rerr)
		}
		return nil
	}
	d.mu.Lock()
	err = d.activate(ctx, cfg, raw, true)
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("apply the configuration from the image: %w", err)
	}
	if err := os.Remove(path); err != nil {
		d.log.Warn("remove the configuration from the image after storing it", "err", err)
	}
	d.log.Info("configuration from the image applied", "checksum", checksum(raw))
	d.bus.Publish("config.applied", "configuration from the image applied", map[string]string{"checksum": checksum(raw)})
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
	if action != PowerNone && d.opts.Power != nil {
		if perr := d.opts.Power(action); perr != nil {
			return errors.Join(err, perr)
		}
		return err
	}
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

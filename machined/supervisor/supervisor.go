// Package supervisor runs machined's services as child processes: started in
// dependency order (a service waits until its dependencies run and pass
// their health checks), each in its own process group, output kept in a
// per-service logstore, restarted with exponential backoff according to its
// restart policy, health-checked periodically, and stopped with SIGTERM then
// SIGKILL to the whole group.
//
// Every service has one runner goroutine while it is meant to run; the
// runner owns the process. Status fields live under Supervisor.mu; lifecycle
// operations on one service (start, stop, reconcile) are serialized by that
// service's ops mutex.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/kiln-os/kiln/machined/logstore"
)

// State is the lifecycle state of a service.
type State string

// Service states.
const (
	Waiting  State = "Waiting"  // waiting for dependencies
	Starting State = "Starting" // process being started
	Running  State = "Running"  // process running
	Stopping State = "Stopping" // SIGTERM sent, waiting for the process to end
	Finished State = "Finished" // exited with code 0 and not restarted (yet)
	Failed   State = "Failed"   // exited non-zero or could not start
	Backoff  State = "Backoff"  // waiting to restart
	Stopped  State = "Stopped"  // stopped on request; stays so until Start
)

// Event is one entry in a service's recent history.
type Event struct {
	Time    time.Time
	State   State
	Message string
}

// Status is a snapshot of one service.
type Status struct {
	ID    string
	Kind  string
	State State
	// Healthy is nil when the service has no health check.
	Healthy       *bool
	HealthMessage string
	HealthChanged time.Time
	DependsOn     []string
	PID           int
	// Restarts counts automatic restarts after the process exited.
	Restarts int
	// Since is when the service entered State.
	Since  time.Time
	Events []Event
}

// ErrNotFound is returned (wrapped with the id) for an unknown service.
var ErrNotFound = errors.New("service not found")

// ErrShutdown is returned by operations after Shutdown.
var ErrShutdown = errors.New("supervisor is shut down")

// DefaultBaseEnv is the environment every service starts from.
var DefaultBaseEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

const maxEvents = 20

// Options configure a Supervisor. Zero values select the defaults.
type Options struct {
	Logger *slog.Logger
	// LogDir holds <id>.log per service; empty keeps logs in memory only.
	LogDir string
	// LogLines is the number of lines kept in memory per service
	// (default logstore.DefaultLines).
	LogLines int
	// OnEvent is called after every state change and every change of a
	// health check result, from supervisor goroutines, without locks held.
	// It must return quickly; it may call List.
	OnEvent func(Status, Event)
	// BackoffMin and BackoffMax bound the delay before a restart
	// (defaults 1s and 30s); the delay doubles with every restart.
	BackoffMin, BackoffMax time.Duration
	// StableAfter is how long a process must run for the backoff to start
	// again from BackoffMin (default 10s).
	StableAfter time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL (default 10s).
	StopGrace time.Duration
	// BaseEnv replaces DefaultBaseEnv.
	BaseEnv []string
	// Prepare, when set, is called for every process just before it is
	// started, after the supervisor has filled in the command (SysProcAttr
	// already has Setpgid). It is the place to put the process into a cgroup
	// (SysProcAttr.UseCgroupFD) or to drop privileges. An error counts as a
	// failed start.
	Prepare func(*exec.Cmd, Spec) error
	// TimeReady is closed when services with NeedsTime may start; nil: at
	// once.
	TimeReady <-chan struct{}
}

// Supervisor runs a set of services.
type Supervisor struct {
	opts   Options
	logger *slog.Logger

	// reconcileMu serializes Reconcile and Shutdown.
	reconcileMu sync.Mutex

	mu       sync.Mutex
	services map[string]*service
	// changed is closed and replaced on every state or health change; runners
	// waiting for dependencies select on it.
	changed chan struct{}
	closed  bool
	runners sync.WaitGroup
}

type service struct {
	id  string
	log *logstore.Log
	// ops serializes lifecycle operations; held while waiting for a stop.
	ops sync.Mutex

	// Guarded by Supervisor.mu.
	spec          Spec
	state         State
	message       string
	since         time.Time
	pid           int
	restarts      int
	healthy       *bool
	healthMessage string
	healthChanged time.Time
	events        []Event
	run           *run
	manualStop    bool
	removed       bool // deleted by Reconcile; must never start again
}

// run is one runner goroutine's lifetime.
type run struct {
	ctx      context.Context
	cancel   context.CancelFunc // graceful stop
	kill     chan struct{}      // closed to skip the grace period
	killOnce sync.Once
	done     chan struct{} // closed when the runner has returned
}

func (r *run) forceKill() { r.killOnce.Do(func() { close(r.kill) }) }

func (r *run) active() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// New returns a Supervisor with no services.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = opts.BackoffMin
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = 10 * time.Second
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.BaseEnv == nil {
		opts.BaseEnv = DefaultBaseEnv
	}
	return &Supervisor{
		opts:     opts,
		logger:   opts.Logger.With("component", "supervisor"),
		services: map[string]*service{},
		changed:  make(chan struct{}),
	}
}

// Reconcile makes the supervised set match specs: services not in specs are
// stopped (dependents first) and removed, services whose spec changed are
// restarted with the new spec, new services are started. Every service
// starts only once its dependencies are Running (and healthy when they have
// a health check). Invalid specs, unknown dependencies and cycles are
// reported before anything changes. A service stopped with Stop stays
// stopped, even when its spec changes. When ctx ends while services are
// stopping, they are killed and Reconcile returns ctx's error without
// applying the new specs.
func (s *Supervisor) Reconcile(ctx context.Context, specs []Spec) error {
	desired, err := validate(specs)
	if err != nil {
		return fmt.Errorf("reconcile services: %w", err)
	}
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrShutdown
	}
	oldSpecs := map[string]Spec{}
	var removed, changed, added []string
	for id, svc := range s.services {
		oldSpecs[id] = svc.spec
		if sp, ok := desired[id]; !ok {
			removed = append(removed, id)
		} else if !specEqual(svc.spec, sp) {
			changed = append(changed, id)
		}
	}
	for id := range desired {
		if _, ok := s.services[id]; !ok {
			added = append(added, id)
		}
	}
	s.mu.Unlock()
	sort.Strings(removed)
	sort.Strings(changed)
	sort.Strings(added)

	// Open the new logs first: a failure here changes nothing.
	newLogs := map[string]*logstore.Log{}
	for _, id := range added {
		l, err := s.openLog(id)
		if err != nil {
			for _, l := range newLogs {
				l.Close()
			}
			return fmt.Errorf("reconcile services: %w", err)
		}
		newLogs[id] = l
	}

	affected := append(slices.Clone(removed), changed...)
	sort.Strings(affected)
	s.mu.Lock()
	svcs := make([]*service, 0, len(affected))
	for _, id := range affected {
		svcs = append(svcs, s.services[id])
	}
	s.mu.Unlock()
	for _, svc := range svcs {
		svc.ops.Lock()
	}
	defer func() {
		for _, svc := range svcs {
			svc.ops.Unlock()
		}
	}()

	reasons := map[string]string{}
	for _, id := range removed {
		reasons[id] = "stopped: removed from config"
	}
	for _, id := range changed {
		reasons[id] = "stopped: spec changed"
	}
	if err := s.stopOrdered(ctx, svcs, oldSpecs, reasons); err != nil {
		for _, l := range newLogs {
			l.Close()
		}
		return fmt.Errorf("reconcile services: %w", err)
	}

	s.mu.Lock()
	var closeLogs []*logstore.Log
	for _, id := range removed {
		svc := s.services[id]
		svc.removed = true
		closeLogs = append(closeLogs, svc.log)
		delete(s.services, id)
	}
	var start []*service
	for _, id := range changed {
		svc := s.services[id]
		svc.spec = desired[id]
		if !svc.manualStop {
			start = append(start, svc)
		}
	}
	for _, id := range added {
		svc := &service{id: id, log: newLogs[id], spec: desired[id], state: Waiting, since: time.Now()}
		s.services[id] = svc
		start = append(start, svc)
	}
	for _, svc := range start {
		s.startLocked(svc)
	}
	s.broadcastLocked()
	s.mu.Unlock()

	for _, l := range closeLogs {
		if err := l.Close(); err != nil {
			s.logger.Warn("close service log", "error", err)
		}
	}
	if len(removed)+len(changed)+len(added) > 0 {
		s.logger.Info("services reconciled", "added", added, "changed", changed, "removed", removed)
	}
	return nil
}

// specEqual compares normalized specs.
func specEqual(a, b Spec) bool { return reflect.DeepEqual(a, b) }

func (s *Supervisor) openLog(id string) (*logstore.Log, error) {
	path := ""
	if s.opts.LogDir != "" {
		path = filepath.Join(s.opts.LogDir, id+".log")
	}
	l, err := logstore.Open(path, s.opts.LogLines)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", id, err)
	}
	return l, nil
}

// Start starts a stopped, finished or failed service and clears a manual
// stop. Starting a service that is already meant to run does nothing. It
// does not wait for the process: the service may first wait for its
// dependencies.
func (s *Supervisor) Start(id string) error {
	svc, err := s.get(id)
	if err != nil {
		return err
	}
	svc.ops.Lock()
	defer svc.ops.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrShutdown
	}
	if svc.removed {
		return fmt.Errorf("service %q: %w", id, ErrNotFound)
	}
	svc.manualStop = false
	s.startLocked(svc)
	return nil
}

// Stop stops a service and keeps it stopped until Start (or a Reconcile
// that removes it). It returns once the process has ended: at most
// StopGrace after SIGTERM, then SIGKILL. Dependents keep running.
func (s *Supervisor) Stop(id string) error {
	svc, err := s.get(id)
	if err != nil {
		return err
	}
	svc.ops.Lock()
	defer svc.ops.Unlock()
	s.stopHeld(svc, "stopped on request", true)
	return nil
}

// Restart stops the service (if it runs) and starts it again with a fresh
// backoff.
func (s *Supervisor) Restart(id string) error {
	svc, err := s.get(id)
	if err != nil {
		return err
	}
	svc.ops.Lock()
	defer svc.ops.Unlock()
	s.stopHeld(svc, "stopped for restart", false)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrShutdown
	}
	if svc.removed {
		return fmt.Errorf("service %q: %w", id, ErrNotFound)
	}
	svc.manualStop = false
	s.startLocked(svc)
	return nil
}

// List returns the status of every service, sorted by ID.
func (s *Supervisor) List() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.services))
	for _, id := range sortedIDs(s.services) {
		out = append(out, s.statusLocked(s.services[id]))
	}
	return out
}

// Log returns the log of a service.
func (s *Supervisor) Log(id string) (*logstore.Log, error) {
	svc, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return svc.log, nil
}

// Shutdown stops every service, dependents before their dependencies, and
// closes the logs. When ctx ends first, the remaining processes are killed
// without grace and ctx's error is returned. Afterwards List and Log still
// answer; everything else returns ErrShutdown.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	specs := map[string]Spec{}
	var svcs []*service
	for _, id := range sortedIDs(s.services) {
		svcs = append(svcs, s.services[id])
		specs[id] = s.services[id].spec
	}
	s.mu.Unlock()

	for _, svc := range svcs {
		svc.ops.Lock()
	}
	reasons := map[string]string{}
	for _, svc := range svcs {
		reasons[svc.id] = "stopped: shutdown"
	}
	err := s.stopOrdered(ctx, svcs, specs, reasons)
	for _, svc := range svcs {
		svc.ops.Unlock()
	}
	s.runners.Wait()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, svc := range svcs {
		if cerr := svc.log.Close(); cerr != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", svc.id, cerr))
		}
	}
	s.logger.Info("supervisor shut down")
	if len(errs) > 0 {
		return fmt.Errorf("shutdown services: %w", errors.Join(errs...))
	}
	return nil
}

func (s *Supervisor) get(id string) (*service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.services[id]
	if !ok {
		return nil, fmt.Errorf("service %q: %w", id, ErrNotFound)
	}
	return svc, nil
}

// stopOrdered stops svcs (whose ops the caller holds), each only after its
// dependents among svcs have stopped; independent services stop in
// parallel. When ctx ends, the remaining processes are killed at once.
func (s *Supervisor) stopOrdered(ctx context.Context, svcs []*service, specs map[string]Spec, reasons map[string]string) error {
	done := map[string]chan struct{}{}
	for _, svc := range svcs {
		done[svc.id] = make(chan struct{})
	}
	dependents := map[string][]string{}
	for _, svc := range svcs {
		for _, d := range specs[svc.id].DependsOn {
			if _, ok := done[d]; ok {
				dependents[d] = append(dependents[d], svc.id)
			}
		}
	}
	var wg sync.WaitGroup
	for _, svc := range svcs {
		wg.Go(func() {
			defer close(done[svc.id])
			for _, dep := range dependents[svc.id] {
				<-done[dep]
			}
			s.stopHeld(svc, reasons[svc.id], false)
		})
	}
	all := make(chan struct{})
	go func() {
		wg.Wait()
		close(all)
	}()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for _, svc := range svcs {
		if svc.run != nil {
			svc.run.cancel()
			svc.run.forceKill()
		}
	}
	s.mu.Unlock()
	<-all
	return ctx.Err()
}

// stopHeld stops svc's runner and waits for it; the caller holds svc.ops.
func (s *Supervisor) stopHeld(svc *service, reason string, manual bool) {
	s.mu.Lock()
	if manual {
		svc.manualStop = true
	}
	r := svc.run
	s.mu.Unlock()
	if r != nil {
		r.cancel()
		<-r.done
	}
	s.mu.Lock()
	if svc.state == Stopped {
		s.mu.Unlock()
		return
	}
	st, ev := s.setStateLocked(svc, Stopped, reason)
	s.mu.Unlock()
	s.notify(st, ev)
}

// startLocked starts a runner for svc unless one is active.
func (s *Supervisor) startLocked(svc *service) {
	if svc.run != nil && svc.run.active() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{ctx: ctx, cancel: cancel, kill: make(chan struct{}), done: make(chan struct{})}
	svc.run = r
	s.runners.Add(1)
	go s.runLoop(svc, r)
}

// setStateLocked records a state change and returns what to pass to
// notify once s.mu is released.
func (s *Supervisor) setStateLocked(svc *service, state State, msg string) (Status, Event) {
	now := time.Now()
	svc.state = state
	svc.message = msg
	svc.since = now
	if state != Running && state != Stopping {
		svc.pid = 0
	}
	ev := Event{Time: now, State: state, Message: msg}
	s.addEventLocked(svc, ev)
	s.logger.Info("service state changed", "service", svc.id, "state", state, "message", msg)
	return s.statusLocked(svc), ev
}

func (s *Supervisor) addEventLocked(svc *service, ev Event) {
	svc.events = append(svc.events, ev)
	if n := len(svc.events); n > maxEvents {
		svc.events = slices.Clone(svc.events[n-maxEvents:])
	}
	s.broadcastLocked()
}

func (s *Supervisor) setState(svc *service, state State, msg string) {
	s.mu.Lock()
	st, ev := s.setStateLocked(svc, state, msg)
	s.mu.Unlock()
	s.notify(st, ev)
}

func (s *Supervisor) notify(st Status, ev Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(st, ev)
	}
}

func (s *Supervisor) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Supervisor) statusLocked(svc *service) Status {
	st := Status{
		ID:            svc.id,
		Kind:          svc.spec.Kind,
		State:         svc.state,
		HealthMessage: svc.healthMessage,
		HealthChanged: svc.healthChanged,
		DependsOn:     slices.Clone(svc.spec.DependsOn),
		PID:           svc.pid,
		Restarts:      svc.restarts,
		Since:         svc.since,
		Events:        slices.Clone(svc.events),
	}
	if svc.spec.Health != nil {
		h := svc.healthy != nil && *svc.healthy
		st.Healthy = &h
	}
	return st
}

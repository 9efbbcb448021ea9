package supervisor

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitDelay bounds how long cmd.Wait waits for the output pipe after the
// process ended (a descendant that left the process group may hold it).
const waitDelay = 2 * time.Second

// runLoop is the runner goroutine of one service: wait for dependencies,
// run the process, restart it per policy, until r is cancelled or the
// policy says the service is done.
func (s *Supervisor) runLoop(svc *service, r *run) {
	defer s.runners.Done()
	defer close(r.done)
	defer r.cancel()

	failures := 0
	for {
		s.mu.Lock()
		spec := svc.spec
		s.mu.Unlock()

		if !s.waitDeps(svc, r, spec) {
			s.setState(svc, Stopped, "stopped while waiting for dependencies")
			return
		}
		started := time.Now()
		res := s.runOnce(svc, r, spec)
		if res.stopped {
			s.setState(svc, Stopped, "stopped ("+res.exit+")")
			return
		}
		failed := res.startErr != nil || !res.success
		switch {
		case res.startErr != nil:
			s.setState(svc, Failed, "start failed: "+res.startErr.Error())
		case failed:
			s.setState(svc, Failed, res.exit)
		default:
			s.setState(svc, Finished, res.exit)
		}
		if spec.Restart == RestartNever || (spec.Restart == RestartOnFailure && !failed) {
			return
		}
		if time.Since(started) >= s.opts.StableAfter {
			failures = 0
		}
		failures++
		delay := s.backoff(failures)
		s.setState(svc, Backoff, fmt.Sprintf("restarting in %s", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			s.setState(svc, Stopped, "stopped during backoff")
			return
		}
		s.mu.Lock()
		svc.restarts++
		s.mu.Unlock()
	}
}

func (s *Supervisor) backoff(failures int) time.Duration {
	d := s.opts.BackoffMin
	for i := 1; i < failures && d < s.opts.BackoffMax; i++ {
		d *= 2
	}
	return min(d, s.opts.BackoffMax)
}

// waitDeps blocks until every dependency of spec is ready (and, with
// NeedsTime, the clock), keeping svc in Waiting meanwhile. It returns false
// when r is cancelled.
func (s *Supervisor) waitDeps(svc *service, r *run, spec Spec) bool {
	for {
		if r.ctx.Err() != nil {
			return false
		}
		timeReady := s.opts.TimeReady
		if !spec.NeedsTime {
			timeReady = nil
		}
		s.mu.Lock()
		missing := s.unreadyLocked(spec)
		if timeReady != nil {
			select {
			case <-timeReady:
				timeReady = nil
			default:
				missing = append([]string{"time sync"}, missing...)
			}
		}
		if len(missing) == 0 {
			s.mu.Unlock()
			return true
		}
		changed := s.changed
		msg := "waiting for " + strings.Join(missing, ", ")
		var (
			st      Status
			ev      Event
			changes = svc.state != Waiting || svc.message != msg
		)
		if changes {
			st, ev = s.setStateLocked(svc, Waiting, msg)
		}
		s.mu.Unlock()
		if changes {
			s.notify(st, ev)
		}
		select {
		case <-changed:
		case <-timeReady: // nil (blocks forever) unless waiting for it
		case <-r.ctx.Done():
			return false
		}
	}
}

// unreadyLocked returns the dependencies of spec that are not ready: a
// dependency is ready when it is Running (and healthy if it has a health
// check), or when it has Finished and will not be restarted (a one-shot
// task that completed).
func (s *Supervisor) unreadyLocked(spec Spec) []string {
	var missing []string
	for _, id := range spec.DependsOn {
		dep, ok := s.services[id]
		ready := false
		switch {
		case !ok:
		case dep.state == Running:
			ready = dep.spec.Health == nil || (dep.healthy != nil && *dep.healthy)
		case dep.state == Finished:
			ready = dep.spec.Restart != RestartAlways
		}
		if !ready {
			missing = append(missing, id)
		}
	}
	return missing
}

type runResult struct {
	startErr error
	stopped  bool   // ended because the runner was cancelled
	success  bool   // exit code 0
	exit     string // how the process ended
}

// runOnce starts the process and returns when it has ended, stopping it
// when r is cancelled.
func (s *Supervisor) runOnce(svc *service, r *run, spec Spec) runResult {
	s.setState(svc, Starting, "starting "+spec.Command)
	cmd := exec.Command(spec.Command, spec.Args...)
	cmd.Env = append(append([]string{}, s.opts.BaseEnv...), spec.Env...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout = svc.log
	cmd.Stderr = svc.log
	// Pdeathsig: a service never outlives machined; when machined dies
	// (SIGKILL, crash) its services go too and the restarted machined starts
	// them afresh instead of finding strangers holding their ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = waitDelay
	if s.opts.Prepare != nil {
		if err := s.opts.Prepare(cmd, spec); err != nil {
			return runResult{startErr: fmt.Errorf("prepare: %w", err)}
		}
	}
	if err := cmd.Start(); err != nil {
		return runResult{startErr: err}
	}
	pid := cmd.Process.Pid

	s.mu.Lock()
	svc.pid = pid
	if spec.Health != nil {
		// Unknown until the first check: not worth an event.
		if svc.healthy == nil {
			svc.healthy = new(bool)
			svc.healthChanged = time.Now()
		}
		svc.healthMessage = "not checked yet"
	}
	st, ev := s.setStateLocked(svc, Running, fmt.Sprintf("started, pid %d", pid))
	s.mu.Unlock()
	s.notify(st, ev)

	exited := make(chan error, 1)
	go func() { exited <- waitGroup(cmd) }()

	var health sync.WaitGroup
	healthStop := make(chan struct{})
	if spec.Health != nil {
		health.Go(func() { s.healthLoop(svc, spec, healthStop) })
	}

	var (
		werr    error
		stopped bool
	)
	select {
	case werr = <-exited:
	case <-r.ctx.Done():
		stopped = true
		s.setState(svc, Stopping, "sending SIGTERM")
		signalGroup(pid, syscall.SIGTERM)
		grace := time.NewTimer(s.opts.StopGrace)
		select {
		case werr = <-exited:
		case <-grace.C:
			s.logger.Warn("service did not stop in time, killing", "service", svc.id, "grace", s.opts.StopGrace)
			signalGroup(pid, syscall.SIGKILL)
			werr = <-exited
		case <-r.kill:
			signalGroup(pid, syscall.SIGKILL)
			werr = <-exited
		}
		grace.Stop()
	}
	close(healthStop)
	health.Wait()
	if spec.Health != nil {
		s.mu.Lock()
		st, ev, changed := s.setHealthLocked(svc, false, "not running")
		s.mu.Unlock()
		if changed {
			s.notify(st, ev)
		}
	}

	res := runResult{stopped: stopped, exit: describeExit(cmd, werr)}
	res.success = cmd.ProcessState != nil && cmd.ProcessState.Success()
	return res
}

// waitGroup waits for the process to exit, kills whatever is left in its
// process group and reaps it. The group is killed while the leader is still
// a zombie, so its process group ID cannot have been reused.
func waitGroup(cmd *exec.Cmd) error {
	pid := cmd.Process.Pid
	var info unix.Siginfo
	var err error
	for {
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err == nil {
		signalGroup(pid, syscall.SIGKILL)
	}
	return cmd.Wait()
}

func signalGroup(pgid int, sig syscall.Signal) {
	// ESRCH: the group is already gone, which is what we want.
	_ = syscall.Kill(-pgid, sig)
}

func describeExit(cmd *exec.Cmd, werr error) string {
	ps := cmd.ProcessState
	if ps == nil {
		return fmt.Sprintf("wait: %v", werr)
	}
	msg := ps.String() // "exit status 1", "signal: killed"
	if ps.Success() {
		msg = "exited with status 0"
	}
	if errors.Is(werr, exec.ErrWaitDelay) {
		msg += " (output left open by a process outside its group)"
	}
	return msg
}

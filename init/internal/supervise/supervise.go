package supervise

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Action is what init does when supervision ends.
type Action int

// Actions.
const (
	Reboot Action = iota
	PowerOff
	Halt
)

func (a Action) String() string {
	switch a {
	case PowerOff:
		return "power off"
	case Halt:
		return "halt"
	}
	return "reboot"
}

// Signals are the signals Run must receive (signal.Notify them on the channel).
var Signals = []os.Signal{unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPWR}

// ActionFor maps a shutdown signal to its action; ok is false for other signals.
func ActionFor(s os.Signal) (a Action, ok bool) {
	switch s {
	case unix.SIGTERM, unix.SIGINT:
		return Reboot, true
	case unix.SIGUSR2, unix.SIGPWR:
		return PowerOff, true
	case unix.SIGUSR1:
		return Halt, true
	}
	return 0, false
}

// Supervisor runs one program (machined) and reaps every child of the process.
type Supervisor struct {
	Path string
	Args []string // argv[1:]
	Env  []string
	// Console receives the program's stdout and stderr (nil: init's own).
	Console *os.File
	// ExtraFiles are given to the program as descriptors 3, 4, … at every start.
	ExtraFiles []*os.File
	Backoff    Backoff
	// StopTimeout is how long the program gets after SIGTERM on shutdown.
	StopTimeout time.Duration
	Log         *slog.Logger
	// OnExit, when set, sees every reaped process (tests).
	OnExit func(pid int, status unix.WaitStatus)
	// Adopt, when not zero, is the PID of the program already started (by Start in
	// the process this one exec'ed from): Run supervises it instead of starting one.
	Adopt int

	pid     int // 0 when not running
	started time.Time
}

// Run starts the program and supervises it until a shutdown signal arrives on sigs;
// then it stops the program (SIGTERM, StopTimeout, SIGKILL) and returns the action.
func (s *Supervisor) Run(sigs <-chan os.Signal) Action {
	restart := time.NewTimer(0) // first start at once
	defer restart.Stop()
	if s.Adopt > 0 {
		restart.Stop()
		s.pid, s.started = s.Adopt, time.Now()
		s.Log.Info("program adopted", "program", s.Path, "pid", s.pid)
	}
	for {
		select {
		case <-restart.C:
			if err := s.start(); err != nil {
				d := s.Backoff.Next(0)
				s.Log.Error("start failed; retrying", "program", s.Path, "err", err, "in", d)
				restart.Reset(d)
			}
		case sig := <-sigs:
			if sig == unix.SIGCHLD {
				if s.reap() {
					ran := time.Since(s.started)
					d := s.Backoff.Next(ran)
					s.Log.Warn("program exited; restarting", "program", s.Path, "ran", ran.Round(time.Millisecond), "in", d)
					restart.Reset(d)
				}
				continue
			}
			a, ok := ActionFor(sig)
			if !ok {
				continue
			}
			s.Log.Info("shutdown requested", "signal", sig, "action", a)
			restart.Stop()
			s.stop(sigs)
			return a
		}
	}
}

// Start starts the program once, without supervising it: for a process that then
// exec's into the one that calls Run with Adopt set to Running().
func (s *Supervisor) Start() error { return s.start() }

func (s *Supervisor) start() error {
	out := s.Console
	if out == nil {
		out = os.Stderr
	}
	files := []uintptr{devNull(), out.Fd(), out.Fd()}
	for _, f := range s.ExtraFiles {
		files = append(files, f.Fd())
	}
	attr := &syscall.ProcAttr{
		Env:   s.Env,
		Files: files,
		// Its own session and process group: signals for init's group do not reach it.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	pid, err := syscall.ForkExec(s.Path, append([]string{s.Path}, s.Args...), attr)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.Path, err)
	}
	s.pid, s.started = pid, time.Now()
	s.Log.Info("program started", "program", s.Path, "pid", pid)
	return nil
}

var nullFd uintptr

func devNull() uintptr {
	if nullFd == 0 {
		if f, err := os.Open(os.DevNull); err == nil {
			nullFd = f.Fd() // kept open for the life of init
		}
	}
	return nullFd
}

// reap collects every exited child; it reports whether the supervised program was one.
func (s *Supervisor) reap() bool {
	died := false
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return died
		}
		if s.OnExit != nil {
			s.OnExit(pid, ws)
		}
		if pid == s.pid {
			s.Log.Warn("program exited", "program", s.Path, "pid", pid, "status", describe(ws))
			s.pid = 0
			died = true
		}
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}

// stop sends SIGTERM to the program and waits up to StopTimeout for it, reaping
// meanwhile; then SIGKILL.
func (s *Supervisor) stop(sigs <-chan os.Signal) {
	if s.pid == 0 {
		return
	}
	_ = unix.Kill(s.pid, unix.SIGTERM)
	deadline := time.NewTimer(s.StopTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond) // a missed SIGCHLD must not cost the timeout
	defer tick.Stop()
	for s.pid != 0 {
		select {
		case <-sigs:
		case <-tick.C:
		case <-deadline.C:
			s.Log.Warn("program did not stop in time; killing", "program", s.Path, "timeout", s.StopTimeout)
			_ = unix.Kill(s.pid, unix.SIGKILL)
		}
		s.reap()
	}
}

// Running returns the supervised program's pid, 0 when it does not run.
func (s *Supervisor) Running() int { return s.pid }

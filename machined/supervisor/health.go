package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	defaultHealthInterval = 5 * time.Second
	maxDefaultTimeout     = 5 * time.Second
	// healthOutputMax bounds how much of an exec check's output is kept for
	// the health message.
	healthOutputMax = 256
)

// healthLoop runs spec's health check now and then every interval until
// stop is closed.
func (s *Supervisor) healthLoop(svc *service, spec Spec, stop <-chan struct{}) {
	hc := spec.Health
	interval := hc.Interval
	if interval <= 0 {
		interval = defaultHealthInterval
	}
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = min(interval, maxDefaultTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		err := s.check(ctx, spec, timeout)
		if ctx.Err() != nil {
			return
		}
		msg := "ok"
		if err != nil {
			msg = err.Error()
		}
		s.mu.Lock()
		st, ev, changed := s.setHealthLocked(svc, err == nil, msg)
		s.mu.Unlock()
		if changed {
			s.notify(st, ev)
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return
		}
	}
}

// setHealthLocked records a health result; when healthy flips it adds an
// event, wakes runners waiting for dependencies and returns changed=true.
func (s *Supervisor) setHealthLocked(svc *service, healthy bool, msg string) (Status, Event, bool) {
	svc.healthMessage = msg
	if svc.healthy != nil && *svc.healthy == healthy {
		return Status{}, Event{}, false
	}
	now := time.Now()
	svc.healthy = &healthy
	svc.healthChanged = now
	text := "health check passed"
	if !healthy {
		text = "unhealthy: " + msg
	}
	ev := Event{Time: now, State: svc.state, Message: text}
	s.addEventLocked(svc, ev)
	s.logger.Info("service health changed", "service", svc.id, "healthy", healthy, "message", msg)
	return s.statusLocked(svc), ev, true
}

// check runs one health check with the given timeout.
func (s *Supervisor) check(ctx context.Context, spec Spec, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := spec.Health
	if hc.TCP != "" {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", hc.TCP)
		if err != nil {
			return fmt.Errorf("tcp %s: %w", hc.TCP, err)
		}
		conn.Close()
	}
	if len(hc.Exec) > 0 {
		if err := s.checkExec(ctx, spec); err != nil {
			return err
		}
	}
	return nil
}

func (s *Supervisor) checkExec(ctx context.Context, spec Spec) error {
	argv := spec.Health.Exec
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append([]string{}, s.opts.BaseEnv...), spec.Env...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	out := &tailBuffer{max: healthOutputMax}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		signalGroup(cmd.Process.Pid, syscall.SIGKILL)
		return nil
	}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out")
	}
	text := strings.TrimSpace(out.String())
	if text != "" {
		return fmt.Errorf("exec %s: %w: %s", argv[0], err, text)
	}
	return fmt.Errorf("exec %s: %w", argv[0], err)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = bytes.Clone(b.buf[len(b.buf)-b.max:])
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

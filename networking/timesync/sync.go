package timesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// Defaults.
const (
	// DefaultStepThreshold: an offset beyond it steps the clock; within it
	// the clock is slewed.
	DefaultStepThreshold = 128 * time.Millisecond
	DefaultInterval      = 64 * time.Second
	DefaultRetry         = 2 * time.Second
	Port                 = 123
)

// Clock is the system clock as the Syncer changes it.
type Clock interface {
	Now() time.Time
	// Step jumps the clock by offset.
	Step(offset time.Duration) error
	// Slew makes the kernel catch up offset gradually.
	Slew(offset time.Duration) error
}

// Status is what the Syncer last did.
type Status struct {
	Enabled   bool
	Synced    bool // at least one sync succeeded
	Servers   []string
	Server    string // of the last good answer
	Offset    time.Duration
	Delay     time.Duration
	Stratum   uint8
	LastSync  time.Time // by the local clock, after the correction
	LastError string
	Steps     int
	Slews     int
}

// Syncer keeps a Clock in line with NTP servers.
type Syncer struct {
	Servers       []string // host names or addresses, with an optional :port
	Clock         Clock
	Log           *slog.Logger
	Interval      time.Duration // between good syncs (DefaultInterval)
	Retry         time.Duration // after a failed round (DefaultRetry)
	StepThreshold time.Duration // DefaultStepThreshold

	mu     sync.Mutex
	st     Status
	synced chan struct{}
	once   sync.Once
}

func (s *Syncer) init() {
	s.once.Do(func() {
		s.synced = make(chan struct{})
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		if s.Interval <= 0 {
			s.Interval = DefaultInterval
		}
		if s.Retry <= 0 {
			s.Retry = DefaultRetry
		}
		if s.StepThreshold <= 0 {
			s.StepThreshold = DefaultStepThreshold
		}
		s.st.Enabled = true
		s.st.Servers = append([]string(nil), s.Servers...)
	})
}

// Run syncs until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	s.init()
	if len(s.Servers) == 0 {
		return errors.New("timesync: no servers")
	}
	for {
		wait := s.Interval
		if err := s.SyncOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.Log.Warn("time sync", "err", err)
			wait = s.Retry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// SyncOnce asks the servers in order until one answers and corrects the
// clock by its offset: a step beyond StepThreshold, else a slew.
func (s *Syncer) SyncOnce(ctx context.Context) error {
	s.init()
	var errs []error
	for _, srv := range s.Servers {
		addr := srv
		if _, _, err := net.SplitHostPort(srv); err != nil {
			addr = net.JoinHostPort(srv, strconv.Itoa(Port))
		}
		r, err := s.sample(ctx, addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.Server = srv
		s.Log.Debug("sntp answer", "server", srv, "offset", r.Offset, "delay", r.Delay)
		return s.correct(r)
	}
	err := errors.Join(errs...)
	s.mu.Lock()
	s.st.LastError = err.Error()
	s.mu.Unlock()
	return err
}

// samples is how many answers SyncOnce takes from a server; it trusts the
// one with the least round trip, whose offset the path's asymmetry spoils
// least (the first packet may wait for neighbour resolution).
const samples = 3

func (s *Syncer) sample(ctx context.Context, addr string) (Response, error) {
	var best Response
	var err error
	ok := false
	for range samples {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, qerr := Query(qctx, addr, s.Clock.Now)
		cancel()
		if qerr != nil {
			err = qerr
			continue
		}
		if !ok || r.Delay < best.Delay {
			best, ok = r, true
		}
	}
	if !ok {
		return Response{}, err
	}
	return best, nil
}

func (s *Syncer) correct(r Response) error {
	abs := r.Offset
	if abs < 0 {
		abs = -abs
	}
	step := abs > s.StepThreshold
	var err error
	if step {
		err = s.Clock.Step(r.Offset)
	} else {
		err = s.Clock.Slew(r.Offset)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.st.LastError = err.Error()
		return fmt.Errorf("timesync: correct by %s: %w", r.Offset, err)
	}
	if step {
		s.st.Steps++
		s.Log.Info("clock stepped", "server", r.Server, "offset", r.Offset)
	} else {
		s.st.Slews++
		s.Log.Debug("clock slewed", "server", r.Server, "offset", r.Offset)
	}
	s.st.Server, s.st.Offset, s.st.Delay, s.st.Stratum = r.Server, r.Offset, r.Delay, r.Stratum
	s.st.LastSync, s.st.LastError = s.Clock.Now(), ""
	if !s.st.Synced {
		s.st.Synced = true
		close(s.synced)
	}
	return nil
}

// Status returns the current state.
func (s *Syncer) Status() Status {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Servers = append([]string(nil), s.st.Servers...)
	return st
}

// WaitSync waits for the first sync or for ctx to end, and reports whether
// the clock was synced.
func (s *Syncer) WaitSync(ctx context.Context) bool {
	s.init()
	select {
	case <-s.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

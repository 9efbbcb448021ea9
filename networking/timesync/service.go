package timesync

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultReadyTimeout is how long Ready waits for the first sync once time
// servers are configured.
const DefaultReadyTimeout = 30 * time.Second

// Service runs a Syncer for the servers the machine config names, starting
// it afresh when they change. It also gates work that needs a right clock:
// Ready is closed at the first sync, or ReadyTimeout after servers were
// first configured without one, or at once when the config names none.
type Service struct {
	Clock Clock
	Log   *slog.Logger
	// ReadyTimeout bounds the wait for the first sync (DefaultReadyTimeout
	// when zero).
	ReadyTimeout time.Duration

	mu      sync.Mutex
	servers []string
	syncer  *Syncer
	cancel  context.CancelFunc
	done    chan struct{}

	gateOnce  sync.Once
	synced    chan struct{} // closed at the first sync of any Syncer
	ready     chan struct{} // closed when synced, timed out, or no servers
	readyOnce sync.Once
	timedOut  atomic.Bool
	armed     bool
}

func (s *Service) gate() {
	s.gateOnce.Do(func() {
		s.synced = make(chan struct{})
		s.ready = make(chan struct{})
	})
}

func (s *Service) open(timedOut bool) {
	s.readyOnce.Do(func() {
		s.timedOut.Store(timedOut)
		close(s.ready)
	})
}

// Apply syncs against servers from now on; none stops syncing.
func (s *Service) Apply(servers []string) {
	s.gate()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncer != nil && slices.Equal(servers, s.servers) {
		return
	}
	s.stopLocked()
	s.servers = slices.Clone(servers)
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(servers) == 0 {
		// Nothing will set the clock: what waits for it need not.
		s.open(false)
		return
	}
	if !s.armed {
		s.armed = true
		timeout := s.ReadyTimeout
		if timeout <= 0 {
			timeout = DefaultReadyTimeout
		}
		time.AfterFunc(timeout, func() {
			select {
			case <-s.synced:
			default:
				log.Warn("no time sync yet; going ahead with the local clock", "waited", timeout)
				s.open(true)
			}
		})
	}
	s.syncer = &Syncer{Servers: s.servers, Clock: s.Clock, Log: log}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func(sy *Syncer, done chan struct{}) {
		defer close(done)
		sy.Run(ctx) //nolint:errcheck // only "no servers", excluded above
	}(s.syncer, s.done)
	go func(sy *Syncer) {
		if sy.WaitSync(ctx) {
			s.markSynced()
		}
	}(s.syncer)
}

func (s *Service) markSynced() {
	select {
	case <-s.synced:
	default:
		s.mu.Lock()
		select {
		case <-s.synced:
		default:
			close(s.synced)
		}
		s.mu.Unlock()
	}
	s.open(false)
}

func (s *Service) stopLocked() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	s.syncer, s.cancel, s.done = nil, nil, nil
}

// Status is the running Syncer's state (Enabled false when none runs).
func (s *Service) Status() Status {
	s.mu.Lock()
	sy := s.syncer
	s.mu.Unlock()
	if sy == nil {
		return Status{}
	}
	return sy.Status()
}

// Synced is closed at the first successful sync since the Service started
// (of any of its Syncers); it stays closed when the servers change.
func (s *Service) Synced() <-chan struct{} {
	s.gate()
	return s.synced
}

// Ready is closed once work that needs a right clock may go ahead: at the
// first sync; ReadyTimeout after time servers were first configured without
// a sync (TimedOut then reports true); or when Apply found no servers (the
// clock is what it is). Before the first Apply it is open only if synced.
func (s *Service) Ready() <-chan struct{} {
	s.gate()
	return s.ready
}

// TimedOut reports whether Ready opened because the first sync did not come
// in time.
func (s *Service) TimedOut() bool { return s.timedOut.Load() }

// WaitSync waits for the first sync (of any Syncer the Service ran) or for
// ctx to end; with no servers configured and no sync so far it returns false
// at once.
func (s *Service) WaitSync(ctx context.Context) bool {
	s.gate()
	s.mu.Lock()
	sy := s.syncer
	s.mu.Unlock()
	select {
	case <-s.synced:
		return true
	default:
	}
	if sy == nil {
		return false
	}
	select {
	case <-s.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close stops syncing.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

package timesync

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// Service runs a Syncer for the servers the machine config names, starting
// it afresh when they change.
type Service struct {
	Clock Clock
	Log   *slog.Logger

	mu      sync.Mutex
	servers []string
	syncer  *Syncer
	cancel  context.CancelFunc
	done    chan struct{}
}

// Apply syncs against servers from now on; none stops syncing.
func (s *Service) Apply(servers []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncer != nil && slices.Equal(servers, s.servers) {
		return
	}
	s.stopLocked()
	s.servers = slices.Clone(servers)
	if len(servers) == 0 {
		return
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.syncer = &Syncer{Servers: s.servers, Clock: s.Clock, Log: log}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func(sy *Syncer, done chan struct{}) {
		defer close(done)
		sy.Run(ctx) //nolint:errcheck // only "no servers", excluded above
	}(s.syncer, s.done)
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

// WaitSync waits for the first sync of the running Syncer; with none it
// returns false at once.
func (s *Service) WaitSync(ctx context.Context) bool {
	s.mu.Lock()
	sy := s.syncer
	s.mu.Unlock()
	return sy != nil && sy.WaitSync(ctx)
}

// Close stops syncing.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

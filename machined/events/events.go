// Package events is machined's in-memory event bus: what happened on the node
// (a configuration applied, a service changing state, a reboot requested), kept
// in a ring of the most recent events and streamed to followers.
//
// Publishing never blocks. Followers do not own buffers that could fill up:
// each reads from the shared ring at its own position and is only woken by
// Publish, so a slow follower cannot slow the node down. A follower that
// falls further behind than the ring holds learns how many events it missed.
package events

import (
	"context"
	"maps"
	"sync"
	"time"
)

// DefaultSize is the number of events kept when New is given size <= 0.
const DefaultSize = 1024

// Event is one thing that happened on the node.
type Event struct {
	// ID increases by one with every published event, starting at 1.
	ID   uint64
	Time time.Time
	// Type is dotted, e.g. "config.applied", "service.state".
	Type    string
	Message string
	Attrs   map[string]string
}

// Bus keeps the last events and wakes followers. The zero value is not
// usable; call New.
type Bus struct {
	now func() time.Time

	mu     sync.Mutex
	ring   []Event
	start  int // index of the oldest event in ring
	count  int
	nextID uint64
	subs   map[*Subscription]struct{}
}

// New returns a bus that keeps the last size events (DefaultSize when
// size <= 0).
func New(size int) *Bus {
	if size <= 0 {
		size = DefaultSize
	}
	return &Bus{
		now:    time.Now,
		ring:   make([]Event, size),
		nextID: 1,
		subs:   map[*Subscription]struct{}{},
	}
}

// Publish records an event and wakes followers. It never blocks on them.
// attrs is copied.
func (b *Bus) Publish(typ, message string, attrs map[string]string) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	ev := Event{ID: b.nextID, Time: b.now(), Type: typ, Message: message, Attrs: maps.Clone(attrs)}
	b.nextID++
	if b.count < len(b.ring) {
		b.ring[(b.start+b.count)%len(b.ring)] = ev
		b.count++
	} else {
		b.ring[b.start] = ev
		b.start = (b.start + 1) % len(b.ring)
	}
	for s := range b.subs {
		select {
		case s.wake <- struct{}{}:
		default: // already woken; it will read everything new from the ring
		}
	}
	return ev
}

// Tail returns the last n events kept, oldest first (all of them when n < 0).
func (b *Bus) Tail(n int) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tailLocked(n)
}

func (b *Bus) tailLocked(n int) []Event {
	if n < 0 || n > b.count {
		n = b.count
	}
	out := make([]Event, 0, n)
	for i := b.count - n; i < b.count; i++ {
		out = append(out, b.ring[(b.start+i)%len(b.ring)])
	}
	return out
}

// Subscribe starts following the bus. The first call to Next returns the
// last tail events kept (all of them when tail < 0, none when tail == 0),
// then every event published after them, without gaps or repeats. Close the
// subscription when done.
func (b *Bus) Subscribe(tail int) *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	if tail < 0 || tail > b.count {
		tail = b.count
	}
	s := &Subscription{b: b, next: b.nextID - uint64(tail), wake: make(chan struct{}, 1)}
	b.subs[s] = struct{}{}
	if tail > 0 {
		s.wake <- struct{}{}
	}
	return s
}

// Subscription follows a Bus from a position of its own.
type Subscription struct {
	b    *Bus
	next uint64 // ID of the next event to return
	wake chan struct{}
}

// Next waits until there are events the subscriber has not seen and returns
// them, oldest first. missed counts events that were dropped from the ring
// before the subscriber could read them. Next returns ctx's error when ctx
// ends first. A Subscription is not for concurrent use.
func (s *Subscription) Next(ctx context.Context) (evs []Event, missed uint64, err error) {
	for {
		evs, missed = s.take()
		if len(evs) > 0 || missed > 0 {
			return evs, missed, nil
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

func (s *Subscription) take() ([]Event, uint64) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	oldest := b.nextID - uint64(b.count)
	var missed uint64
	if s.next < oldest {
		missed = oldest - s.next
		s.next = oldest
	}
	evs := b.tailLocked(int(b.nextID - s.next))
	s.next = b.nextID
	return evs, missed
}

// Close stops following. It is safe to call more than once.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	delete(s.b.subs, s)
}

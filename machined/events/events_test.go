package events

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// hang protects tests against deadlocks; it is not a timing assertion.
const hang = 30 * time.Second

func ids(evs []Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func publishN(b *Bus, n int) {
	for i := range n {
		b.Publish("test.event", fmt.Sprintf("event %d", i), map[string]string{"i": fmt.Sprint(i)})
	}
}

func TestTail(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		published int
		n         int
		want      []uint64
	}{
		{"empty", 4, 0, -1, []uint64{}},
		{"all", 4, 3, -1, []uint64{1, 2, 3}},
		{"last two", 4, 3, 2, []uint64{2, 3}},
		{"more than kept", 4, 3, 10, []uint64{1, 2, 3}},
		{"none", 4, 3, 0, []uint64{}},
		{"wrapped", 4, 10, -1, []uint64{7, 8, 9, 10}},
		{"wrapped last one", 4, 10, 1, []uint64{10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.size)
			publishN(b, tt.published)
			if diff := cmp.Diff(tt.want, ids(b.Tail(tt.n))); diff != "" {
				t.Errorf("Tail(%d) IDs (-want +got):\n%s", tt.n, diff)
			}
		})
	}
}

func TestPublishCopiesAttrs(t *testing.T) {
	b := New(4)
	attrs := map[string]string{"k": "v"}
	b.Publish("a.b", "m", attrs)
	attrs["k"] = "changed"
	if got := b.Tail(1)[0].Attrs["k"]; got != "v" {
		t.Errorf("stored attr = %q, want %q", got, "v")
	}
}

// next reads until it has n events, failing on missed events.
func next(t *testing.T, s *Subscription, n int) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	var out []Event
	for len(out) < n {
		evs, missed, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v (have %d of %d events)", err, len(out), n)
		}
		if missed > 0 {
			t.Fatalf("Next missed %d events", missed)
		}
		out = append(out, evs...)
	}
	return out
}

func TestSubscribeTailThenFollow(t *testing.T) {
	for _, tail := range []int{-1, 0, 2} {
		t.Run(fmt.Sprint("tail=", tail), func(t *testing.T) {
			b := New(8)
			publishN(b, 3)
			s := b.Subscribe(tail)
			defer s.Close()
			var want []uint64
			switch tail {
			case -1:
				want = []uint64{1, 2, 3, 4, 5}
			case 0:
				want = []uint64{4, 5}
			case 2:
				want = []uint64{2, 3, 4, 5}
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				publishN(b, 2)
			}()
			got := ids(next(t, s, len(want)))
			<-done
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("followed IDs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSlowFollowerNeverBlocksPublish(t *testing.T) {
	b := New(4)
	s := b.Subscribe(0)
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishN(b, 100) // nobody reads: must not block
	}()
	select {
	case <-done:
	case <-time.After(hang):
		t.Fatal("Publish blocked on a follower that does not read")
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	evs, missed, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if missed != 96 {
		t.Errorf("missed = %d, want 96", missed)
	}
	if diff := cmp.Diff([]uint64{97, 98, 99, 100}, ids(evs)); diff != "" {
		t.Errorf("IDs after lag (-want +got):\n%s", diff)
	}
}

func TestNextEndsWithContext(t *testing.T) {
	b := New(4)
	s := b.Subscribe(-1)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Next(ctx); err != context.Canceled {
		t.Errorf("Next on a cancelled context = %v, want %v", err, context.Canceled)
	}
}

func TestClose(t *testing.T) {
	b := New(4)
	s := b.Subscribe(0)
	s.Close()
	s.Close()
	if n := len(b.subs); n != 0 {
		t.Errorf("%d subscribers left after Close, want 0", n)
	}
}

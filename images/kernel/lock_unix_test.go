//go:build unix

package kernel

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLockBuild checks the store's build lock: a second taker waits while the first
// holds it, gives up when its context ends, and gets it once the first lets go.
func TestLockBuild(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockBuild(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		_, err := lockBuild(ctx, dir)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second lockBuild returned %v while the first holds the lock", err)
	case <-time.After(3 * lockPoll):
	}
	cancel()
	select {
	case err := <-got:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled lockBuild: %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled lockBuild still waits for the lock")
	}

	go func() {
		u, err := lockBuild(context.Background(), dir)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("lockBuild after the holder let go: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("lockBuild still waits after the holder let go")
	}
}

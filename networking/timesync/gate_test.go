package timesync

import (
	"context"
	"net"
	"testing"
	"time"
)

func isOpen(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestReadyAtFirstSync: Ready stays shut until the loopback responder's
// answer sets the clock, then opens for good, also across a change of
// servers.
func TestReadyAtFirstSync(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &Service{Clock: &fakeClock{}, ReadyTimeout: time.Hour}
	defer s.Close()
	if isOpen(s.Ready()) || isOpen(s.Synced()) {
		t.Fatal("Ready or Synced open before any Apply")
	}
	// The responder answers only once the gate was seen shut.
	s.Apply([]string{conn.LocalAddr().String()})
	if isOpen(s.Ready()) {
		t.Fatal("Ready open before the first sync")
	}
	go serve(conn, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	select {
	case <-s.Ready():
	case <-ctx.Done():
		t.Fatal("Ready never opened")
	}
	if !isOpen(s.Synced()) || s.TimedOut() {
		t.Errorf("after the first sync: Synced open %v, TimedOut %v; want true, false", isOpen(s.Synced()), s.TimedOut())
	}
	s.Apply([]string{"192.0.2.1:1"})
	if !isOpen(s.Ready()) || !s.WaitSync(ctx) {
		t.Error("a change of servers closed the gate again")
	}
}

// TestReadyTimeout: servers that never answer open the gate after
// ReadyTimeout, marked as timed out and not synced.
func TestReadyTimeout(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // reads nothing: a silent server
	s := &Service{Clock: &fakeClock{}, ReadyTimeout: 50 * time.Millisecond}
	defer s.Close()
	s.Apply([]string{conn.LocalAddr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	select {
	case <-s.Ready():
	case <-ctx.Done():
		t.Fatal("Ready never opened after the timeout")
	}
	if !s.TimedOut() || isOpen(s.Synced()) {
		t.Errorf("TimedOut %v, Synced open %v; want true, false", s.TimedOut(), isOpen(s.Synced()))
	}
}

// TestReadyWithoutServers: a config without time servers opens the gate at
// once: nothing will set the clock.
func TestReadyWithoutServers(t *testing.T) {
	s := &Service{Clock: &fakeClock{}}
	defer s.Close()
	s.Apply(nil)
	if !isOpen(s.Ready()) || s.TimedOut() || isOpen(s.Synced()) {
		t.Errorf("after Apply(nil): Ready %v, TimedOut %v, Synced %v; want true, false, false",
			isOpen(s.Ready()), s.TimedOut(), isOpen(s.Synced()))
	}
}

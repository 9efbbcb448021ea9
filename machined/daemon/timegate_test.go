package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// gateNetwork is a Network that keeps a clock the test controls.
type gateNetwork struct {
	fakeNetwork
	ready, synced chan struct{}
}

func (g *gateNetwork) TimeReady() <-chan struct{}  { return g.ready }
func (g *gateNetwork) TimeSynced() <-chan struct{} { return g.synced }

func newGateNetwork() *gateNetwork {
	return &gateNetwork{ready: make(chan struct{}), synced: make(chan struct{})}
}

func startGated(t *testing.T, net Network) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d, err := New(Options{
		StateDir: filepath.Join(dir, "state"), LogDir: filepath.Join(dir, "log"), RunDir: filepath.Join(dir, "run"),
		Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Network: net, NetworkWait: time.Millisecond,
		SysBlock: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopDaemon(t, d) })
	return d
}

// TestCertsMadeAgainAfterSync: the first time sync finds the clock years
// past what the certificates were made with (a board without an RTC); the
// maintenance and node certificates are made anew and served.
func TestCertsMadeAgainAfterSync(t *testing.T) {
	net := newGateNetwork()
	d := startGated(t, net)
	apply(t, d, configBytes(t, nil), machine.ApplyMode_APPLY_MODE_NO_REBOOT)
	d.mu.Lock()
	maint, node := Fingerprint(d.maintenanceCert), d.serverCert
	d.mu.Unlock()
	if node == nil {
		t.Fatal("no node certificate after the apply")
	}

	later := time.Now().Add(11 * 365 * 24 * time.Hour) // past both validities
	timeNow = func() time.Time { return later }
	t.Cleanup(func() { timeNow = time.Now })
	close(net.synced)
	close(net.ready)
	waitFor(t, "the certificates made anew", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return Fingerprint(d.maintenanceCert) != maint && d.serverCert != nil && d.serverCert != node
	})
}

func TestCertCovers(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour)}
	for _, tt := range []struct {
		name string
		at   time.Time
		want bool
	}{
		{"inside", now, true},
		{"before NotBefore", now.Add(-2 * time.Hour), false},
		{"within a day of NotAfter", now.Add(365*24*time.Hour - time.Hour), false},
		{"after NotAfter", now.Add(2 * 365 * 24 * time.Hour), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := certCovers(&tls.Certificate{Leaf: leaf}, tt.at); got != tt.want {
				t.Errorf("certCovers(at %v) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
	if certCovers(&tls.Certificate{}, now) {
		t.Error("certCovers(no leaf) = true, want false")
	}
}

// TestWaitTime: the gate reports a sync only when there was one; a timeout
// (Ready without Synced) lets work go ahead unsynced; process mode has no
// gate.
func TestWaitTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	timedOut := newGateNetwork()
	close(timedOut.ready)
	d := &Daemon{opts: Options{Network: timedOut}}
	if d.WaitTime(ctx) {
		t.Error("WaitTime after a timeout = true, want false")
	}

	synced := newGateNetwork()
	close(synced.synced)
	close(synced.ready)
	d = &Daemon{opts: Options{Network: synced}}
	if !d.WaitTime(ctx) {
		t.Error("WaitTime after a sync = false, want true")
	}
	if ch := d.timeReady(); ch == nil {
		t.Error("timeReady() = nil with a clock-keeping Network")
	}

	d = &Daemon{opts: Options{Network: &fakeNetwork{}}}
	if d.WaitTime(ctx) || d.timeReady() != nil {
		t.Error("a Network without a clock gates")
	}
	done, stop := context.WithCancel(ctx)
	stop()
	d = &Daemon{opts: Options{Network: newGateNetwork()}}
	if d.WaitTime(done) {
		t.Error("WaitTime with an ended context = true")
	}
}

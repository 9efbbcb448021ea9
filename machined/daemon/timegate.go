package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"time"
)

// Time gate: work that depends on a right clock (certificate checks) waits
// for the first time sync or a timeout (timesync.DefaultReadyTimeout, 30 s,
// counted from when time servers are first configured; no wait at all when
// the config names none). What waits:
//
//   - supervised services with NeedsTime (supervisor.Options.TimeReady):
//     they stay Waiting ("waiting for time sync"); at the timeout they start
//     with the local clock;
//   - the certificates the API serves: they are made at once (the API must
//     come up fast and the clock's servers are only known from the config),
//     and checked again at the first sync: one whose validity does not cover
//     the synced clock (made while the clock was years off, as on a board
//     without an RTC) is made anew. After a timeout nothing is redone.
//
// Process mode has no gate: its Network (nil) keeps no clock.

// TimeGate is a Network that also keeps the node's clock.
type TimeGate interface {
	// TimeReady is closed when work that needs a right clock may go ahead:
	// the first sync, the timeout, or no time servers.
	TimeReady() <-chan struct{}
	// TimeSynced is closed at the first sync.
	TimeSynced() <-chan struct{}
}

// timeReady is the gate for supervised services; nil (no gate) when the
// Network keeps no clock.
func (d *Daemon) timeReady() <-chan struct{} {
	if g, ok := d.opts.Network.(TimeGate); ok {
		return g.TimeReady()
	}
	return nil
}

// WaitTime waits until work that needs a right clock may go ahead, or ctx
// ends; it reports whether the clock was synced (false: timed out, no time
// servers, no clock kept, or ctx ended).
func (d *Daemon) WaitTime(ctx context.Context) bool {
	g, ok := d.opts.Network.(TimeGate)
	if !ok {
		return false
	}
	select {
	case <-g.TimeReady():
	case <-ctx.Done():
		return false
	}
	select {
	case <-g.TimeSynced():
		return true
	default:
		return false
	}
}

// certCovers reports whether the certificate is valid at now with a day to
// spare at the end. A certificate without Leaf (the maintenance certificate a
// first boot makes) is parsed for it.
func certCovers(c *tls.Certificate, now time.Time) bool {
	if c == nil {
		return false
	}
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return false
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return false
		}
	}
	return !now.Before(leaf.NotBefore) && now.Before(leaf.NotAfter.Add(-24*time.Hour))
}

// recheckCertsAfterSync waits for the first time sync and makes the API's
// certificates anew if the synced clock falls outside their validity.
func (d *Daemon) recheckCertsAfterSync(ctx context.Context) {
	g, ok := d.opts.Network.(TimeGate)
	if !ok {
		return
	}
	select {
	case <-g.TimeSynced():
	case <-g.TimeReady():
		select {
		case <-g.TimeSynced():
		default:
			return // timed out or no servers: the clock is what it is
		}
	case <-ctx.Done():
		return
	}
	d.recheckCerts(timeNow())
}

// timeNow is the clock the certificates are checked against (tests move it).
var timeNow = time.Now

// recheckCerts makes the maintenance and node certificates anew when they
// are not valid at now, and serves the new ones.
func (d *Daemon) recheckCerts(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	if !certCovers(&d.maintenanceCert, now) {
		path := filepath.Join(identityDir(d.opts.StateDir), "maintenance.pem")
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			d.log.Error("remove the maintenance certificate made with a wrong clock", "err", err)
			return
		}
		cert, _, err := loadMaintenanceCert(path, now)
		if err != nil {
			d.log.Error("make the maintenance certificate again after the time sync", "err", err)
			return
		}
		d.maintenanceCert = cert
		changed = true
		d.log.Warn("maintenance certificate made again: the clock was wrong when it was made",
			"fingerprint", Fingerprint(cert))
		d.bus.Publish("identity.renewed", "maintenance certificate made again after the time sync; fingerprint sha256:"+Fingerprint(cert), nil)
	}
	if d.serverCert != nil && !certCovers(d.serverCert, now) {
		d.serverCert, d.serverCertKey = nil, ""
		changed = true
		d.log.Warn("node certificate issued again: the clock was wrong when it was issued")
	}
	if !changed || d.srv == nil {
		return
	}
	if err := d.reconcileIdentity(context.Background(), d.cfg); err != nil {
		d.log.Error("serve the certificates made after the time sync", "err", err)
	}
}

// TimeReady implements TimeGate.
func (w ControllerNetwork) TimeReady() <-chan struct{} {
	if w.Time == nil {
		return closed
	}
	return w.Time.Ready()
}

// TimeSynced implements TimeGate.
func (w ControllerNetwork) TimeSynced() <-chan struct{} {
	if w.Time == nil {
		return never
	}
	return w.Time.Synced()
}

var (
	closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
	never  = make(chan struct{})
)

var _ TimeGate = ControllerNetwork{}

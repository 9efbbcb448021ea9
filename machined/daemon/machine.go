package daemon

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/kiln-os/kiln/machined/events"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/machined/version"
)

// The daemon is the machine behind the API.
var _ server.Machine = (*Daemon)(nil)

// Config returns the configuration in force: the bytes as applied, or the
// canonical YAML with secrets replaced when redact is set.
func (d *Daemon) Config(_ context.Context, redact bool) (*server.ConfigState, error) {
	d.mu.Lock()
	cfg, raw := d.cfg, d.raw
	d.mu.Unlock()
	if cfg == nil {
		return nil, fmt.Errorf("%w: the node has no configuration (maintenance mode)", server.ErrPrecondition)
	}
	st := &server.ConfigState{
		Data:          raw,
		Checksum:      checksum(raw),
		StagedPending: d.store.HasStaged(),
	}
	if redact {
		data, err := cfg.Redacted().Bytes()
		if err != nil {
			return nil, fmt.Errorf("redact configuration: %w", err)
		}
		st.Data, st.Redacted = data, true
	}
	return st, nil
}

// Version describes this machined.
func (d *Daemon) Version(context.Context) (*server.Version, error) {
	d.mu.Lock()
	maintenance, hostname := d.cfg == nil, d.hostname
	d.mu.Unlock()
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	return &server.Version{
		Tag:         version.Tag,
		SHA:         version.SHA,
		GoVersion:   runtime.Version(),
		OS:          runtime.GOOS,
		Arch:        runtime.GOARCH,
		Maintenance: maintenance,
		Hostname:    hostname,
		Platform:    d.opts.Platform,
	}, nil
}

// Hostname returns the host name recorded from the configuration.
func (d *Daemon) Hostname() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hostname
}

// Disks lists the block devices.
func (d *Daemon) Disks(context.Context) ([]server.Disk, error) {
	return readDisks(d.opts.SysBlock)
}

// Events is the node's event bus.
func (d *Daemon) Events() *events.Bus { return d.bus }

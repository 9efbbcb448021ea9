package server

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/events"
	"github.com/kiln-os/kiln/machined/logstore"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// fakeMachine answers every call without a node behind it.
type fakeMachine struct {
	bus *events.Bus
	log *logstore.Log

	mu        sync.Mutex
	reboots   int
	shutdowns int
	redacted  []bool // the redact argument of every Config call
	applied   []ApplyRequest
	// debug enables DebugAction; actions lists those it ran.
	debug   bool
	actions []string
}

func newFakeMachine() *fakeMachine {
	log, err := logstore.Open("", 100)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(log, "line 1\nline 2\n")
	bus := events.New(16)
	bus.Publish("config.applied", "applied", map[string]string{"mode": "NO_REBOOT"})
	return &fakeMachine{bus: bus, log: log}
}

func (f *fakeMachine) ApplyConfiguration(_ context.Context, req ApplyRequest) (*ApplyResult, error) {
	f.mu.Lock()
	f.applied = append(f.applied, req)
	f.mu.Unlock()
	if string(req.Data) == "invalid" {
		return nil, fmt.Errorf("parse: %w", &config.Error{Problems: []config.FieldError{
			{Path: "machine.type", Msg: "missing"},
			{Path: "cluster.name", Msg: "missing"},
		}})
	}
	return &ApplyResult{Mode: machine.ApplyMode_APPLY_MODE_NO_REBOOT, Diff: "+x", Message: "applied"}, nil
}

func (f *fakeMachine) ConfirmConfiguration(context.Context) (string, error) {
	return "", fmt.Errorf("%w: no configuration waits for confirmation", ErrPrecondition)
}

func (f *fakeMachine) Config(_ context.Context, redact bool) (*ConfigState, error) {
	f.mu.Lock()
	f.redacted = append(f.redacted, redact)
	f.mu.Unlock()
	data := "token: secret\n"
	if redact {
		data = "token: REDACTED\n"
	}
	return &ConfigState{Data: []byte(data), Redacted: redact, Checksum: "abc"}, nil
}

func (f *fakeMachine) Version(context.Context) (*Version, error) {
	return &Version{Tag: "v0.0.0-test", Platform: "process", Hostname: "node-1"}, nil
}

func (f *fakeMachine) Disks(context.Context) ([]Disk, error) {
	return []Disk{{Name: "vda", SizeBytes: 1 << 30}}, nil
}

func (f *fakeMachine) Services(context.Context) ([]supervisor.Status, error) {
	healthy := true
	return []supervisor.Status{{ID: "web", Kind: "extension", Healthy: &healthy, Since: time.Now()}}, nil
}

func (f *fakeMachine) service(id string) error {
	if id != "web" {
		return fmt.Errorf("service %q: %w", id, supervisor.ErrNotFound)
	}
	return nil
}

func (f *fakeMachine) StartService(_ context.Context, id string) error   { return f.service(id) }
func (f *fakeMachine) StopService(_ context.Context, id string) error    { return f.service(id) }
func (f *fakeMachine) RestartService(_ context.Context, id string) error { return f.service(id) }

func (f *fakeMachine) ServiceLog(_ context.Context, id string) (LogSource, error) {
	if err := f.service(id); err != nil {
		return nil, err
	}
	return f.log, nil
}

func (f *fakeMachine) Events() *events.Bus { return f.bus }

func (f *fakeMachine) Reboot(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reboots++
	return nil
}

func (f *fakeMachine) Shutdown(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdowns++
	return nil
}

func (f *fakeMachine) Processes(context.Context) ([]Process, error) {
	return []Process{{PID: 1, Name: "init", State: "S", RSSBytes: 3 << 20}}, nil
}

func (f *fakeMachine) Mounts(context.Context) ([]Mount, error) {
	return []Mount{
		{Source: "/dev/loop0", Target: "/", FSType: "squashfs", Options: "ro,relatime"},
		{Source: "/dev/vda4", Target: "/var", FSType: "ext4", Options: "rw,nosuid,nodev,noatime"},
	}, nil
}

func (f *fakeMachine) Netstat(context.Context) ([]Socket, error) {
	return []Socket{
		{Protocol: "tcp6", Local: netip.MustParseAddrPort("[::]:50000"), State: "LISTEN"},
		{Protocol: "udp", Local: netip.MustParseAddrPort("10.0.2.15:68")},
	}, nil
}

func (f *fakeMachine) NetworkStatus(context.Context) (*NetworkStatus, error) {
	return &NetworkStatus{
		Links: []NetLink{
			{Name: "lo", Index: 1, Type: "device", MTU: 65536, Up: true, Carrier: true},
			{Name: "bond0", Index: 4, Type: "bond", HardwareAddr: "52:54:00:12:34:56", MTU: 1500, Up: true, Carrier: true, Managed: true},
		},
		Addresses: []NetAddress{{Link: "bond0", Prefix: netip.MustParsePrefix("10.0.0.2/24"), Scope: "global", Source: "config"}},
		Routes: []NetRoute{{Link: "bond0", Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1"),
			Metric: 100, Protocol: "kiln", Scope: "global"}},
		Nameservers:      []netip.Addr{netip.MustParseAddr("10.0.0.53")},
		Search:           []string{"example.com"},
		NameserverSource: "config",
		Hostname:         "cp-1",
		HostnameSource:   "config",
		Time: TimeStatus{Enabled: true, Synced: true, Servers: []string{"10.0.0.123"}, Server: "10.0.0.123",
			Offset: 1500 * time.Microsecond, Delay: 300 * time.Microsecond, Stratum: 2,
			LastSync: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Slews: 3, Steps: 1},
		Leases: []NetLease{
			{Link: "bond0", Family: "ipv4", Address: netip.MustParsePrefix("10.0.0.9/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
				Routes: []NetLeaseRoute{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1")}},
				DNS:    []netip.Addr{netip.MustParseAddr("10.0.0.53")}, Domain: "example.com", Hostname: "cp-1", MTU: 1500,
				Server:   "10.0.0.1",
				Obtained: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Renew: time.Date(2026, 11, 28, 12, 30, 0, 0, time.UTC),
				Rebind: time.Date(2026, 11, 28, 12, 52, 30, 0, time.UTC), Expires: time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC)},
			{Link: "bond0", Family: "ipv6", Address: netip.MustParsePrefix("2001:db8::9/128"),
				DNS: []netip.Addr{netip.MustParseAddr("2001:db8::53")}, Server: "00030001020000000001",
				Obtained: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Expires: time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC)},
		},
	}, nil
}

func (f *fakeMachine) DebugAction(_ context.Context, action string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.debug {
		return "", fmt.Errorf("%w: debug actions are disabled", ErrPrecondition)
	}
	if action != "crash" {
		return "", fmt.Errorf("%w: unknown debug action %q", ErrInvalidArgument, action)
	}
	f.actions = append(f.actions, action)
	return "crashing", nil
}

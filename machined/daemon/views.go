package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-os/kiln/machined/platform"
	"github.com/kiln-os/kiln/machined/server"
)

// Processes lists the processes machined can see (the whole node, on a node).
func (d *Daemon) Processes(context.Context) ([]server.Process, error) {
	ps, err := platform.Processes("/proc")
	if err != nil {
		return nil, err
	}
	out := make([]server.Process, len(ps))
	for i, p := range ps {
		out[i] = server.Process(p)
	}
	return out, nil
}

// Mounts lists the mounted filesystems of machined's mount namespace (the
// node's, on a node).
func (d *Daemon) Mounts(context.Context) ([]server.Mount, error) {
	ms, err := platform.Mounts(d.opts.MountsPath)
	if err != nil {
		return nil, err
	}
	out := make([]server.Mount, 0, len(ms))
	for _, m := range ms {
		out = append(out, server.Mount{Source: m.Source, Target: m.Target, FSType: m.FSType, Options: strings.Join(m.Options, ",")})
	}
	return out, nil
}

// Netstat lists the listening TCP sockets and the unconnected (receiving)
// UDP sockets of machined's network namespace, IPv4 then IPv6.
func (d *Daemon) Netstat(context.Context) ([]server.Socket, error) {
	tcp, err := platform.Listening(d.opts.ProcNet)
	if err != nil {
		return nil, err
	}
	var out []server.Socket
	for _, s := range tcp {
		proto := "tcp6"
		if s.Addr.Addr().Is4() {
			proto = "tcp"
		}
		out = append(out, server.Socket{Protocol: proto, Local: s.Addr, State: "LISTEN"})
	}
	udp, err := platform.BoundUDP(d.opts.ProcNet)
	if err != nil {
		return nil, err
	}
	for _, s := range udp {
		proto := "udp6"
		if s.Addr.Addr().Is4() {
			proto = "udp"
		}
		out = append(out, server.Socket{Protocol: proto, Local: s.Addr})
	}
	return out, nil
}

// DebugActions lists the actions DebugAction knows.
var DebugActions = []string{"crash"}

// DebugAction runs a test-only action when debug actions are enabled:
// "crash" answers and then ends machined abnormally, without stopping
// anything, as a crash would; init restarts it.
func (d *Daemon) DebugAction(_ context.Context, action string) (string, error) {
	if !d.opts.DebugActions {
		return "", fmt.Errorf("%w: debug actions are disabled (start machined with --debug-actions, or boot the node with kiln.debug on the kernel command line)", server.ErrPrecondition)
	}
	switch action {
	case "crash":
		d.log.Warn("debug action: crashing on request")
		d.bus.Publish("machine.debug", "debug action crash: machined exits abnormally", nil)
		time.AfterFunc(powerDelay, func() { d.opts.Exit(crashExitCode) })
		return fmt.Sprintf("machined exits with status %d in %s", crashExitCode, powerDelay), nil
	}
	return "", fmt.Errorf("%w: unknown debug action %q (known: %s)", server.ErrInvalidArgument, action, strings.Join(DebugActions, ", "))
}

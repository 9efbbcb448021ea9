package daemon

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-os/kiln/machined/platform"
)

// announce tells the console and the event bus that the machine API listens:
// the maintenance instructions (in maintenance mode) and the readiness line
// whose format the package documentation fixes.
func (d *Daemon) announce() {
	addr := d.lis.Addr().String()
	maintenance := d.srv.Maintenance()
	mode := "configured"
	if maintenance {
		mode = "maintenance"
	}
	fp := d.servingFingerprint()
	addrs := d.globalAddrs()
	d.mu.Lock()
	hostname := d.hostname
	d.mu.Unlock()

	d.log.Info("machine API ready", "addr", addr, "mode", mode, "fingerprint", fp, "addrs", addrs)
	attrs := map[string]string{"addr": addr, "mode": mode, "fingerprint": fp}
	if maintenance {
		d.bus.Publish("machine.ready", "machine API ready in maintenance mode", attrs)
	} else {
		d.bus.Publish("machine.ready", "machine API ready", attrs)
	}
	if d.opts.Console == nil {
		return
	}
	var b strings.Builder
	if maintenance {
		target := d.consoleTarget(addrs)
		shown := "none yet"
		if len(addrs) > 0 {
			shown = joinAddrs(addrs, ", ")
		}
		fmt.Fprintf(&b, "[kiln] maintenance mode: this node has no configuration\n")
		fmt.Fprintf(&b, "[kiln]   addresses:   %s\n", shown)
		fmt.Fprintf(&b, "[kiln]   fingerprint: sha256:%s\n", fp)
		fmt.Fprintf(&b, "[kiln]   apply one:   kctl apply-config --insecure -n %s -f controlplane.yaml\n", target)
	}
	b.WriteString(ReadinessLine(addr, mode, fp, addrs, hostname, d.opts.Platform, ownCPU(), platform.Uptime()))
	b.WriteString("\n")
	// One write, so that the lines reach a shared console together.
	_, _ = io.WriteString(d.opts.Console, b.String())
}

// ownCPU is the CPU time this process has used, in user and kernel mode; zero when
// the kernel does not say.
func ownCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReadinessLine formats the readiness line (see the package documentation).
func ReadinessLine(api, mode, fingerprint string, addrs []netip.Addr, hostname, platform string, cpu, uptime time.Duration) string {
	a := "none"
	if len(addrs) > 0 {
		a = joinAddrs(addrs, ",")
	}
	if hostname == "" {
		hostname = "none"
	}
	return fmt.Sprintf("[kiln] ready api=%s mode=%s fingerprint=sha256:%s addrs=%s hostname=%s platform=%s cpu=%s uptime=%s",
		api, mode, fingerprint, a, hostname, platform, cpu.Round(time.Millisecond), uptime.Round(time.Millisecond))
}

func joinAddrs(addrs []netip.Addr, sep string) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, sep)
}

// consoleTarget is the address to put after -n in the console's command: the
// first IPv4 address of the node, else the first address, else the listen
// address's host.
func (d *Daemon) consoleTarget(addrs []netip.Addr) string {
	for _, a := range addrs {
		if a.Is4() {
			return a.String()
		}
	}
	if len(addrs) > 0 {
		return addrs[0].String()
	}
	host, _, err := net.SplitHostPort(d.lis.Addr().String())
	if err != nil || host == "" || host == "::" || host == "0.0.0.0" {
		return "<node address>"
	}
	return host
}

// globalAddrs lists the addresses the API is reached at: the listen address
// when it is a specific one (process mode), else the node's global unicast
// addresses.
func (d *Daemon) globalAddrs() []netip.Addr {
	if ap, err := netip.ParseAddrPort(d.lis.Addr().String()); err == nil && !ap.Addr().IsUnspecified() {
		return []netip.Addr{ap.Addr().Unmap()}
	}
	all, err := d.interfaceAddrs()
	if err != nil {
		d.log.Warn("list interface addresses", "err", err)
	}
	var out []netip.Addr
	for _, a := range all {
		if a.IsGlobalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

// servingFingerprint is the fingerprint of the certificate the API serves now.
func (d *Daemon) servingFingerprint() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg != nil && d.serverCert != nil && d.cfg.Machine.Machine.CA.Key != "" {
		return Fingerprint(*d.serverCert)
	}
	return Fingerprint(d.maintenanceCert)
}

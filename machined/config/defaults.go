package config

import "time"

// Default values. ApplyDefaults is the one place that applies them; the
// config reference reads them from there too.
const (
	DefaultPodSubnet           = "10.244.0.0/16"
	DefaultServiceSubnet       = "10.96.0.0/12"
	DefaultDNSDomain           = "cluster.local"
	DefaultProxyMode           = ProxyModeEBPF
	DefaultTimeServer          = "time.cloudflare.com"
	DefaultFileOp              = FileOpCreate
	DefaultFilePermissions     = FileMode(0o644)
	DefaultRestart             = RestartAlways
	DefaultHealthCheckInterval = 10 * time.Second
	DefaultHealthCheckTimeout  = 5 * time.Second
)

// ApplyDefaults fills every unset field that has a default. It is idempotent
// and leaves set fields alone.
func ApplyDefaults(c *Config) {
	if c.Machine != nil {
		m, cl := &c.Machine.Machine, &c.Machine.Cluster
		if !m.Time.Disabled && len(m.Time.Servers) == 0 {
			m.Time.Servers = []string{DefaultTimeServer}
		}
		for i := range m.Files {
			f := &m.Files[i]
			if f.Op == "" {
				f.Op = DefaultFileOp
			}
			if f.Permissions == 0 {
				f.Permissions = DefaultFilePermissions
			}
		}
		if len(cl.Network.PodSubnets) == 0 {
			cl.Network.PodSubnets = []string{DefaultPodSubnet}
		}
		if len(cl.Network.ServiceSubnets) == 0 {
			cl.Network.ServiceSubnets = []string{DefaultServiceSubnet}
		}
		if cl.Network.DNSDomain == "" {
			cl.Network.DNSDomain = DefaultDNSDomain
		}
		if cl.Proxy.Mode == "" {
			cl.Proxy.Mode = DefaultProxyMode
		}
	}
	for _, s := range c.Services {
		if s == nil {
			continue
		}
		if s.Restart == "" {
			s.Restart = DefaultRestart
		}
		if h := s.HealthCheck; h != nil {
			if h.Interval == 0 {
				h.Interval = DefaultHealthCheckInterval
			}
			if h.Timeout == 0 {
				h.Timeout = DefaultHealthCheckTimeout
				if h.Interval < h.Timeout {
					h.Timeout = h.Interval
				}
			}
		}
	}
}

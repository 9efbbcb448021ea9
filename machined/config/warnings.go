package config

import (
	"fmt"
	"time"
)

// now is the clock Warnings reads; tests replace it.
var now = time.Now

// Warnings returns non-fatal findings about a valid config: secrets a worker
// should not carry, certificates near or past their expiry.
func (c *Config) Warnings() []string {
	var out []string
	m, cl := &c.Machine.Machine, &c.Machine.Cluster
	if m.Type == TypeWorker {
		for _, s := range []struct{ path, val string }{
			{"machine.ca.key", m.CA.Key},
			{"cluster.ca.key", cl.CA.Key},
			{"cluster.etcd.ca.key", cl.Etcd.CA.Key},
			{"cluster.aggregatorCA.key", cl.AggregatorCA.Key},
			{"cluster.serviceAccount.key", cl.ServiceAccount.Key},
			{"cluster.secretboxEncryptionSecret", cl.SecretboxEncryptionSecret},
		} {
			if s.val != "" {
				out = append(out, fmt.Sprintf("%s: worker nodes do not need this secret; remove it (a compromised worker would leak it)", s.path))
			}
		}
	}
	for _, ca := range []struct{ path, crt string }{
		{"machine.ca.crt", m.CA.Crt},
		{"cluster.ca.crt", cl.CA.Crt},
		{"cluster.etcd.ca.crt", cl.Etcd.CA.Crt},
		{"cluster.aggregatorCA.crt", cl.AggregatorCA.Crt},
	} {
		if ca.crt == "" {
			continue
		}
		cert, err := ParseCertificate(ca.crt)
		if err != nil {
			continue
		}
		t := now()
		switch {
		case t.After(cert.NotAfter):
			out = append(out, fmt.Sprintf("%s: certificate expired on %s", ca.path, cert.NotAfter.UTC().Format(time.DateOnly)))
		case t.Before(cert.NotBefore):
			out = append(out, fmt.Sprintf("%s: certificate is not valid before %s (is the clock right?)", ca.path, cert.NotBefore.UTC().Format(time.RFC3339)))
		case cert.NotAfter.Sub(t) < 30*24*time.Hour:
			out = append(out, fmt.Sprintf("%s: certificate expires on %s", ca.path, cert.NotAfter.UTC().Format(time.DateOnly)))
		}
	}
	return out
}

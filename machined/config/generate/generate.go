// Package generate builds the machine configs of a new cluster from a
// secrets bundle: one for controlplane nodes, one for workers (which carry
// CA certificates but no CA keys), and the admin client certificate kctl
// uses to talk to the nodes.
package generate

import (
	"encoding/base64"
	"fmt"
	"time"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// AdminCertValidity is how long the generated admin certificate is valid.
const AdminCertValidity = 365 * 24 * time.Hour

// AdminRole is the machine API role of the generated client certificate.
const AdminRole = "os:admin"

// Options are the optional settings of Generate; zero values take the
// config defaults.
type Options struct {
	// InstallDisk is machine.install.disk, e.g. /dev/vda.
	InstallDisk string
	// CertSANs are extra names and IPs for the API certificates.
	CertSANs []string
	// PodSubnets and ServiceSubnets override the default cluster networks.
	PodSubnets, ServiceSubnets []string
	// DNSDomain overrides cluster.local.
	DNSDomain string
	// ProxyMode is ebpf (default) or disabled.
	ProxyMode string
	// AllowSchedulingOnControlPlanes lets workloads run on controlplane
	// nodes.
	AllowSchedulingOnControlPlanes bool
	// KernelArgs are extra kernel arguments, e.g. console=ttyS0.
	KernelArgs []string
}

// Output is what Generate returns.
type Output struct {
	// ControlPlane is the config for controlplane nodes.
	ControlPlane *config.Config
	// Worker is the config for worker nodes.
	Worker *config.Config
	// CACrt is the machine CA certificate (PEM), the trust root for kctl.
	CACrt []byte
	// AdminCrt and AdminKey are kctl's client certificate and key (PEM),
	// with role os:admin.
	AdminCrt, AdminKey []byte
}

// Generate builds the controlplane and worker configs for a cluster named
// clusterName whose Kubernetes API is at endpoint, and an admin client
// certificate. Both configs pass config.Parse.
func Generate(clusterName, endpoint string, b *secrets.Bundle, opts Options) (*Output, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("secrets bundle: %w", err)
	}
	pemB64 := func(p []byte) string { return config.EncodePEM(p) }
	cp := &config.MachineConfig{
		APIVersion: config.APIVersion,
		Kind:       config.KindMachineConfig,
		Machine: config.MachineSpec{
			Type:       config.TypeControlPlane,
			Token:      b.MachineToken,
			CA:         config.CertAndKey{Crt: pemB64(b.MachineCA.Crt), Key: pemB64(b.MachineCA.Key)},
			CertSANs:   opts.CertSANs,
			Install:    config.InstallConfig{Disk: opts.InstallDisk},
			KernelArgs: opts.KernelArgs,
		},
		Cluster: config.ClusterSpec{
			Name:         clusterName,
			ControlPlane: config.ControlPlaneConfig{Endpoint: endpoint},
			Network: config.ClusterNetworkConfig{
				PodSubnets:     opts.PodSubnets,
				ServiceSubnets: opts.ServiceSubnets,
				DNSDomain:      opts.DNSDomain,
			},
			Proxy:                          config.ProxyConfig{Mode: opts.ProxyMode},
			AllowSchedulingOnControlPlanes: opts.AllowSchedulingOnControlPlanes,
			CA:                             config.CertAndKey{Crt: pemB64(b.KubernetesCA.Crt), Key: pemB64(b.KubernetesCA.Key)},
			Etcd:                           config.EtcdConfig{CA: config.CertAndKey{Crt: pemB64(b.EtcdCA.Crt), Key: pemB64(b.EtcdCA.Key)}},
			AggregatorCA:                   config.CertAndKey{Crt: pemB64(b.AggregatorCA.Crt), Key: pemB64(b.AggregatorCA.Key)},
			ServiceAccount:                 config.ServiceAccountConfig{Key: pemB64(b.ServiceAccountKey)},
			Token:                          b.BootstrapToken,
			SecretboxEncryptionSecret:      base64.StdEncoding.EncodeToString(b.SecretboxKey),
		},
	}
	controlPlane, err := finish(&config.Config{Machine: cp})
	if err != nil {
		return nil, fmt.Errorf("controlplane config: %w", err)
	}

	// A worker needs the CA certificates to trust the control plane and
	// the tokens to join, and nothing that could sign.
	wk := controlPlane.DeepCopy()
	w := wk.Machine
	w.Machine.Type = config.TypeWorker
	w.Machine.CA.Key = ""
	w.Cluster.CA.Key = ""
	w.Cluster.Etcd = config.EtcdConfig{}
	w.Cluster.AggregatorCA = config.CertAndKey{}
	w.Cluster.ServiceAccount = config.ServiceAccountConfig{}
	w.Cluster.SecretboxEncryptionSecret = ""
	worker, err := finish(wk)
	if err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}

	admin, err := secrets.IssueClientCert(b.MachineCA, "admin", []string{AdminRole}, AdminCertValidity)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	return &Output{
		ControlPlane: controlPlane,
		Worker:       worker,
		CACrt:        b.MachineCA.Crt,
		AdminCrt:     admin.Crt,
		AdminKey:     admin.Key,
	}, nil
}

// finish runs a config through its own YAML and Parse, so that what Generate
// returns is exactly what a node will read back, defaults included.
func finish(c *config.Config) (*config.Config, error) {
	data, err := c.Bytes()
	if err != nil {
		return nil, err
	}
	out, err := config.Parse(data)
	if err != nil {
		return nil, err
	}
	return out, nil
}

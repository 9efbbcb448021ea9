package provision

import (
	"fmt"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/patch"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// GuestAddress is the address QEMU's user networking gives the guest by DHCP; the
// generated config names it as the Kubernetes API endpoint.
const GuestAddress = "10.0.2.15"

// Generated is a node's machine config and the credentials that go with it.
type Generated struct {
	Config  []byte // controlplane machine config, patches applied
	Secrets *secrets.Bundle
	// CA, Crt and Key are the machine CA and kctl's os:admin client certificate, PEM.
	CA, Crt, Key []byte
}

// GenerateConfig builds a controlplane config for a one-node cluster called name
// with the node's host name set to hostname, then applies patches in order (inline or
// @FILE, as `kctl gen config --config-patch`) and checks the result as a node would.
func GenerateConfig(name, hostname string, patches []patch.Patch) (*Generated, error) {
	bundle, err := secrets.NewBundle()
	if err != nil {
		return nil, fmt.Errorf("generate secrets: %w", err)
	}
	out, err := generate.Generate(name, "https://"+GuestAddress+":6443", bundle, generate.Options{})
	if err != nil {
		return nil, fmt.Errorf("generate the machine config: %w", err)
	}
	out.ControlPlane.Machine.Machine.Hostname = hostname
	data, err := out.ControlPlane.Bytes()
	if err != nil {
		return nil, err
	}
	if len(patches) > 0 {
		if data, err = patch.Apply(data, patches...); err != nil {
			return nil, fmt.Errorf("--config-patch: %w", err)
		}
	}
	if _, err := config.Parse(data); err != nil {
		return nil, fmt.Errorf("machine config after patches: %w", err)
	}
	return &Generated{Config: data, Secrets: bundle, CA: out.CACrt, Crt: out.AdminCrt, Key: out.AdminKey}, nil
}

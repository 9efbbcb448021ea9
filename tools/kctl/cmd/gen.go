package cmd

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/atomicfile"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/patch"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// Names of the files `kctl gen config` writes into --output-dir.
const (
	SecretsFile      = "secrets.yaml"
	ControlPlaneFile = "controlplane.yaml"
	WorkerFile       = "worker.yaml"
	KctlconfigFile   = "kctlconfig"
)

func newGenCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "gen",
		Short: "Generate machine configs and secrets",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(newGenConfigCommand(g), newGenSecretsCommand(g))
	return c
}

// genConfigOptions are the flags of `kctl gen config`.
type genConfigOptions struct {
	outputDir           string
	withSecrets         string
	patches             []string
	patchesControlPlane []string
	patchesWorker       []string
	installDisk         string
	force               bool
}

func newGenConfigCommand(g *globals) *cobra.Command {
	var o genConfigOptions
	c := &cobra.Command{
		Use:   "config CLUSTER ENDPOINT",
		Short: "Generate the machine configs and client config of a new cluster",
		Long: `Generate the machine configs of a new cluster named CLUSTER whose Kubernetes
API is at ENDPOINT (https://HOST:PORT; "HOST" alone means https://HOST:6443).

Writes into --output-dir:
  secrets.yaml       the cluster's CAs, keys and tokens (unless --with-secrets)
  controlplane.yaml  the machine config of control-plane nodes
  worker.yaml        the machine config of worker nodes
  kctlconfig         a client config with an os:admin certificate, context
                     CLUSTER, endpoint HOST (merge it with 'kctl config merge')

Existing files are not overwritten unless --force is given. Patches (JSON6902
or strategic merge, inline or @FILE) are applied in the order given: first
--config-patch, then the ones for the machine type.`,
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			return genConfig(g, args[0], args[1], o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.outputDir, "output-dir", ".", "directory to write the files into")
	f.StringVar(&o.withSecrets, "with-secrets", "", "use the secrets bundle in this file instead of generating one")
	f.StringArrayVar(&o.patches, "config-patch", nil, "patch for both configs (inline or @FILE; repeatable)")
	f.StringArrayVar(&o.patchesControlPlane, "config-patch-control-plane", nil, "patch for controlplane.yaml (repeatable)")
	f.StringArrayVar(&o.patchesWorker, "config-patch-worker", nil, "patch for worker.yaml (repeatable)")
	f.StringVar(&o.installDisk, "install-disk", "", "machine.install.disk, e.g. /dev/vda")
	f.BoolVar(&o.force, "force", false, "overwrite existing files")
	return c
}

// normalizeAPIEndpoint accepts https://host:port, host:port or host and
// returns the URL form, with Kubernetes' port 6443 when none is given.
func normalizeAPIEndpoint(s string) (*url.URL, error) {
	raw := strings.TrimSpace(s)
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("endpoint %q: want https://HOST:PORT", s)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "6443")
	}
	return u, nil
}

func genConfig(g *globals, cluster, endpoint string, o genConfigOptions) error {
	u, err := normalizeAPIEndpoint(endpoint)
	if err != nil {
		return err
	}
	// Load every patch before touching the disk, so a typo writes nothing.
	common, err := loadPatches(o.patches)
	if err != nil {
		return fmt.Errorf("--config-patch: %w", err)
	}
	cpPatches, err := loadPatches(o.patchesControlPlane)
	if err != nil {
		return fmt.Errorf("--config-patch-control-plane: %w", err)
	}
	wkPatches, err := loadPatches(o.patchesWorker)
	if err != nil {
		return fmt.Errorf("--config-patch-worker: %w", err)
	}

	names := []string{ControlPlaneFile, WorkerFile, KctlconfigFile}
	if o.withSecrets == "" {
		names = append([]string{SecretsFile}, names...)
	}
	paths := map[string]string{}
	for _, n := range names {
		paths[n] = filepath.Join(o.outputDir, n)
	}
	if !o.force {
		for _, n := range names {
			if _, err := os.Lstat(paths[n]); err == nil {
				return fmt.Errorf("%s already exists: remove it or pass --force", paths[n])
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("check %s: %w", paths[n], err)
			}
		}
	}

	var bundle *secrets.Bundle
	if o.withSecrets != "" {
		if bundle, err = secrets.LoadBundle(o.withSecrets); err != nil {
			return err
		}
	} else if bundle, err = secrets.NewBundle(); err != nil {
		return fmt.Errorf("generate secrets: %w", err)
	}

	out, err := generate.Generate(cluster, u.String(), bundle, generate.Options{InstallDisk: o.installDisk})
	if err != nil {
		return err
	}
	cpData, err := patched(out.ControlPlane, slices.Concat(common, cpPatches))
	if err != nil {
		return fmt.Errorf("%s: %w", ControlPlaneFile, err)
	}
	wkData, err := patched(out.Worker, slices.Concat(common, wkPatches))
	if err != nil {
		return fmt.Errorf("%s: %w", WorkerFile, err)
	}
	kc := clientconfig.New()
	kc.Context = cluster
	kc.Contexts[cluster] = clientconfig.NewContext([]string{u.Hostname()}, nil, out.CACrt, out.AdminCrt, out.AdminKey)
	kcData, err := kc.Bytes()
	if err != nil {
		return err
	}

	if err := os.MkdirAll(o.outputDir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	if o.withSecrets == "" {
		if err := bundle.Save(paths[SecretsFile]); err != nil {
			return err
		}
		fmt.Fprintf(g.io.Out, "created %s\n", paths[SecretsFile])
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{ControlPlaneFile, cpData}, {WorkerFile, wkData}, {KctlconfigFile, kcData}} {
		// Machine configs hold the cluster's keys: owner-only.
		if err := atomicfile.WriteFile(paths[f.name], f.data, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(g.io.Out, "created %s\n", paths[f.name])
	}
	return nil
}

// patched encodes cfg, applies the patches and checks the result as a node
// would.
func patched(cfg *config.Config, patches []patch.Patch) ([]byte, error) {
	data, err := cfg.Bytes()
	if err != nil {
		return nil, err
	}
	if len(patches) == 0 {
		return data, nil
	}
	if data, err = patch.Apply(data, patches...); err != nil {
		return nil, err
	}
	if _, err := config.Parse(data); err != nil {
		return nil, fmt.Errorf("after patches: %w", err)
	}
	return data, nil
}

func newGenSecretsCommand(g *globals) *cobra.Command {
	var (
		output string
		force  bool
	)
	c := &cobra.Command{
		Use:   "secrets",
		Short: "Generate a secrets bundle (CAs, keys, tokens) for 'gen config --with-secrets'",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if !force {
				if _, err := os.Lstat(output); err == nil {
					return fmt.Errorf("%s already exists: remove it or pass --force", output)
				}
			}
			b, err := secrets.NewBundle()
			if err != nil {
				return fmt.Errorf("generate secrets: %w", err)
			}
			if err := b.Save(output); err != nil {
				return err
			}
			fmt.Fprintf(g.io.Out, "created %s\n", output)
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", SecretsFile, "file to write")
	c.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return c
}

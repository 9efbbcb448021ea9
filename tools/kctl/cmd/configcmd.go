package cmd

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/client/clientconfig"
)

func newConfigCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Manage the client config (contexts)",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(
		newConfigContextsCommand(g),
		newConfigContextCommand(g),
		newConfigMergeCommand(g),
		newConfigInfoCommand(g),
	)
	return c
}

// mustLoadConfig reads the client config, which must exist.
func (g *globals) mustLoadConfig() (*clientconfig.Config, string, error) {
	cfg, path, err := g.loadConfig()
	if err != nil {
		return nil, path, err
	}
	if cfg == nil {
		return nil, path, fmt.Errorf("no client config at %s: create one with 'kctl config merge kctlconfig' after 'kctl gen config'", path)
	}
	return cfg, path, nil
}

func newConfigContextsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "contexts",
		Short: "List the contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, _, err := g.mustLoadConfig()
			if err != nil {
				return err
			}
			t := newTable(g.io.Out, "CURRENT", "NAME", "ENDPOINTS", "NODES")
			for _, name := range cfg.Names() {
				ctx := cfg.Contexts[name]
				cur := " "
				if name == cfg.Context {
					cur = "*"
				}
				t.row(cur, name, strings.Join(ctx.Endpoints, ","), strings.Join(ctx.Nodes, ","))
			}
			return t.flush()
		},
	}
}

func newConfigContextCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "context NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			cfg, _, err := g.mustLoadConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return cfg.Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, path, err := g.mustLoadConfig()
			if err != nil {
				return err
			}
			if _, _, err := cfg.Current(args[0]); err != nil {
				return fmt.Errorf("client config %s: %w", path, err)
			}
			cfg.Context = args[0]
			if err := cfg.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(g.io.Out, "current context: %s\n", args[0])
			return nil
		},
	}
}

func newConfigMergeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "merge FILE",
		Short: "Add the contexts of FILE to the client config",
		Long: `Add the contexts of FILE (e.g. the kctlconfig 'kctl gen config' wrote) to the
client config, creating it when missing. A context whose name is taken is
renamed NAME-1, NAME-2, ...; the current context of FILE becomes current.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			other, err := clientconfig.Load(args[0])
			if err != nil {
				return err
			}
			path, err := g.configPath()
			if err != nil {
				return err
			}
			cfg, err := clientconfig.Load(path)
			if errors.Is(err, fs.ErrNotExist) {
				cfg, err = clientconfig.New(), nil
			}
			if err != nil {
				return err
			}
			renamed := cfg.Merge(other)
			if err := cfg.Save(path); err != nil {
				return err
			}
			for _, name := range other.Names() {
				if n, ok := renamed[name]; ok {
					fmt.Fprintf(g.io.Out, "merged context %s as %s\n", name, n)
				} else {
					fmt.Fprintf(g.io.Out, "merged context %s\n", name)
				}
			}
			if cfg.Context != "" {
				fmt.Fprintf(g.io.Out, "current context: %s\n", cfg.Context)
			}
			return nil
		},
	}
}

func newConfigInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the current context: endpoints, nodes, roles and certificate expiry",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, path, err := g.mustLoadConfig()
			if err != nil {
				return err
			}
			ctx, name, err := cfg.Current(g.context)
			if err != nil {
				return fmt.Errorf("client config %s: %w", path, err)
			}
			t := newTable(g.io.Out, "Config:", path)
			t.row("Current context:", name)
			t.row("Endpoints:", strings.Join(ctx.Endpoints, ", "))
			t.row("Nodes:", strings.Join(ctx.Nodes, ", "))
			if ctx.HasCredentials() {
				_, crtPEM, _, err := ctx.PEM()
				if err != nil {
					return fmt.Errorf("client config %s: context %s: %w", path, name, err)
				}
				crt, err := parseCertPEM(crtPEM)
				if err != nil {
					return fmt.Errorf("client config %s: context %s: crt: %w", path, name, err)
				}
				t.row("Roles:", strings.Join(crt.Subject.Organization, ", "))
				left := time.Until(crt.NotAfter).Round(time.Hour)
				t.row("Certificate expires:", fmt.Sprintf("%s (%s)", crt.NotAfter.UTC().Format(time.RFC3339), expiresIn(left)))
			} else {
				t.row("Roles:", "none (no client certificate)")
			}
			return t.flush()
		},
	}
}

func expiresIn(d time.Duration) string {
	if d <= 0 {
		return "expired"
	}
	return fmt.Sprintf("in %d days", int(d.Hours()/24))
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

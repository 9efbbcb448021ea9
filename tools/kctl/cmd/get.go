package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

func newGetCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "get",
		Short: "Read state from nodes",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(newGetConfigCommand(g), newGetDisksCommand(g))
	return c
}

func newGetConfigCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the machine config in force (secrets redacted unless you are an admin)",
		Long: `Print the machine config in force on each node, as YAML. Secrets are redacted
unless the client certificate has the os:admin role. With several nodes, each
node's config is a YAML stream of its own, preceded by a "# node: NODE" line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.GetConfigResponse, error) {
				return c.GetConfig(ctx, &machine.GetConfigRequest{})
			})
			multi := g.targetCount() > 1
			for i, r := range res {
				if multi {
					if i > 0 {
						fmt.Fprintln(g.io.Out, "---")
					}
					fmt.Fprintf(g.io.Out, "# node: %s\n", r.Node)
				}
				data := r.Value.GetData()
				g.io.Out.Write(data) //nolint:errcheck // a failed stdout write has no one to tell
				if len(data) > 0 && data[len(data)-1] != '\n' {
					fmt.Fprintln(g.io.Out)
				}
			}
			return err
		},
	}
}

// diskRow is one disk as -o json|yaml prints it.
type diskRow struct {
	Node       string `json:"node" yaml:"node"`
	Name       string `json:"name" yaml:"name"`
	SizeBytes  uint64 `json:"sizeBytes" yaml:"sizeBytes"`
	Model      string `json:"model,omitempty" yaml:"model,omitempty"`
	Serial     string `json:"serial,omitempty" yaml:"serial,omitempty"`
	Rotational bool   `json:"rotational" yaml:"rotational"`
	ReadOnly   bool   `json:"readOnly" yaml:"readOnly"`
	SystemDisk bool   `json:"systemDisk" yaml:"systemDisk"`
}

func newGetDisksCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "disks",
		Short: "List the block devices of each node",
		Args:  cobra.NoArgs,
	}
	format := outputFlag(c, formatTable, formatYAML, formatJSON)
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		res, callErr := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.DisksResponse, error) {
			return c.Disks(ctx, &machine.DisksRequest{})
		})
		rows := []diskRow{}
		for _, r := range res {
			for _, d := range r.Value.GetDisks() {
				rows = append(rows, diskRow{
					Node: r.Node, Name: d.GetName(), SizeBytes: d.GetSizeBytes(), Model: d.GetModel(), Serial: d.GetSerial(),
					Rotational: d.GetRotational(), ReadOnly: d.GetReadOnly(), SystemDisk: d.GetSystemDisk(),
				})
			}
		}
		if *format != formatTable {
			if err := encode(g.io.Out, *format, rows); err != nil {
				return err
			}
			return callErr
		}
		if len(res) == 0 && callErr != nil {
			return callErr
		}
		t := newTable(g.io.Out, "NODE", "DISK", "SIZE", "MODEL", "SERIAL", "TYPE", "READ-ONLY", "SYSTEM")
		for _, d := range rows {
			typ := "SSD"
			if d.Rotational {
				typ = "HDD"
			}
			t.row(d.Node, d.Name, bytesHuman(d.SizeBytes), d.Model, d.Serial, typ, yesNo(d.ReadOnly), yesNo(d.SystemDisk))
		}
		if err := t.flush(); err != nil {
			return err
		}
		return callErr
	}
	return c
}

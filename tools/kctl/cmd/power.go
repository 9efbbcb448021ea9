package cmd

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

func newRebootCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reboot",
		Short: "Reboot the nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.RebootResponse, error) {
				return c.Reboot(ctx, &machine.RebootRequest{})
			})
			printMessages(g, res, func(r *machine.RebootResponse) string { return r.GetMessage() })
			return err
		},
	}
}

func newShutdownCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "shutdown",
		Short: "Power the nodes off",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.ShutdownResponse, error) {
				return c.Shutdown(ctx, &machine.ShutdownRequest{})
			})
			printMessages(g, res, func(r *machine.ShutdownResponse) string { return r.GetMessage() })
			return err
		},
	}
}

package cmd

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/config"
)

func newValidateCommand(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a machine config",
		Long: `Check a machine config the way a node will: strict decoding, defaults,
validation. Problems are printed one per line with their field path, and the
exit status is non-zero; warnings are printed on standard error.`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("read machine config: %w", err)
			}
			cfg, err := config.Parse(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			for _, w := range cfg.Warnings() {
				fmt.Fprintf(g.io.Err, "warning: %s: %s\n", file, w)
			}
			fmt.Fprintf(g.io.Out, "%s is valid\n", file)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "the machine config to check")
	c.MarkFlagRequired("file") //nolint:errcheck // the flag exists
	return c
}

package cmd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

// applyModes maps --mode to the API's modes, in the order help lists them.
var applyModes = []struct {
	flag string
	mode machine.ApplyMode
}{
	{"auto", machine.ApplyMode_APPLY_MODE_AUTO},
	{"no-reboot", machine.ApplyMode_APPLY_MODE_NO_REBOOT},
	{"reboot", machine.ApplyMode_APPLY_MODE_REBOOT},
	{"staged", machine.ApplyMode_APPLY_MODE_STAGED},
	{"try", machine.ApplyMode_APPLY_MODE_TRY},
}

// parseApplyMode reads a --mode value.
func parseApplyMode(s string) (machine.ApplyMode, error) {
	var names []string
	for _, m := range applyModes {
		if m.flag == s {
			return m.mode, nil
		}
		names = append(names, m.flag)
	}
	return 0, fmt.Errorf("--mode %q: want one of %s", s, strings.Join(names, ", "))
}

// modeName is the --mode spelling of an API mode.
func modeName(m machine.ApplyMode) string {
	for _, x := range applyModes {
		if x.mode == m {
			return x.flag
		}
	}
	return m.String()
}

func newApplyConfigCommand(g *globals) *cobra.Command {
	var (
		file    string
		mode    string
		timeout time.Duration
		dryRun  bool
	)
	c := &cobra.Command{
		Use:   "apply-config -f FILE",
		Short: "Apply a machine config to the nodes",
		Long: `Apply a machine config to the nodes. The node validates it and applies it
according to --mode:

  auto       live when every change can be applied live, otherwise reboot
  no-reboot  live; refused when a change needs a reboot
  reboot     store the config and reboot
  staged     store the config for the next boot; change nothing now
  try        live, rolled back after --timeout unless 'kctl confirm' keeps it

A node in maintenance mode (no config yet) answers without a client
certificate: use --insecure (and --cert-fingerprint to pin its certificate).
With --dry-run the node only reports the diff and whether a reboot is needed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := parseApplyMode(mode)
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("read machine config: %w", err)
			}
			req := &machine.ApplyConfigurationRequest{Data: data, Mode: m, DryRun: dryRun}
			if m == machine.ApplyMode_APPLY_MODE_TRY {
				req.TryTimeout = durationpb.New(timeout)
			}
			res, callErr := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.ApplyConfigurationResponse, error) {
				return c.ApplyConfiguration(ctx, req)
			})
			multi := g.targetCount() > 1
			for _, r := range res {
				for _, w := range r.Value.GetWarnings() {
					fmt.Fprintf(g.io.Err, "warning: %s: %s\n", r.Node, w)
				}
				if multi {
					fmt.Fprintf(g.io.Out, "NODE: %s\n", r.Node)
				}
				if dryRun {
					printDryRun(g, r.Value)
					continue
				}
				msg := r.Value.GetMessage()
				if msg == "" {
					msg = fmt.Sprintf("Applied the configuration (mode %s).", modeName(r.Value.GetMode()))
				}
				fmt.Fprintln(g.io.Out, strings.TrimRight(msg, "\n"))
			}
			return callErr
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "the machine config to apply")
	c.Flags().StringVarP(&mode, "mode", "m", "auto", "when the config takes effect: auto, no-reboot, reboot, staged or try")
	c.Flags().DurationVar(&timeout, "timeout", time.Minute, "with --mode try: how long until the config is rolled back unless confirmed")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only show the diff and whether a reboot would be needed")
	c.MarkFlagRequired("file")                          //nolint:errcheck // the flag exists
	c.RegisterFlagCompletionFunc("mode", completeModes) //nolint:errcheck // the flag exists
	return c
}

func completeModes(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var names []string
	for _, m := range applyModes {
		names = append(names, m.flag)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// printDryRun shows what an apply would do, in stable lines a script can
// read: the mode, whether a reboot is needed, then the diff.
func printDryRun(g *globals, r *machine.ApplyConfigurationResponse) {
	w := g.io.Out
	fmt.Fprintln(w, "Dry run: nothing was changed.")
	fmt.Fprintf(w, "Mode: %s\n", modeName(r.GetMode()))
	fmt.Fprintf(w, "Reboot required: %s\n", yesNo(r.GetRebootRequired()))
	if m := strings.TrimSpace(r.GetMessage()); m != "" {
		fmt.Fprintln(w, m)
	}
	diff := r.GetDiff()
	if strings.TrimSpace(diff) == "" {
		fmt.Fprintln(w, "No changes.")
		return
	}
	fmt.Fprint(w, diff)
	if !strings.HasSuffix(diff, "\n") {
		fmt.Fprintln(w)
	}
}

func newConfirmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "confirm",
		Short: "Keep a config applied with --mode try, cancelling its rollback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.ConfirmConfigurationResponse, error) {
				return c.ConfirmConfiguration(ctx, &machine.ConfirmConfigurationRequest{})
			})
			printMessages(g, res, func(r *machine.ConfirmConfigurationResponse) string { return r.GetMessage() })
			return err
		},
	}
}

package cmd

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	imagecli "github.com/kiln-os/kiln/images/cli"
)

// IO is where a command reads and writes.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// globals holds the flags every command shares.
type globals struct {
	io IO

	nodes       []string
	endpoints   []string
	kctlconfig  string
	context     string
	insecure    bool
	fingerprint string
}

// Run executes kctl with args (without the program name).
func Run(ctx context.Context, args []string, stdio IO) error {
	root := NewRootCommand(stdio)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// NewRootCommand builds the kctl command tree.
func NewRootCommand(stdio IO) *cobra.Command {
	root, _ := newRoot(stdio)
	return root
}

// newRoot builds the command tree and returns the globals its flags fill.
func newRoot(stdio IO) (*cobra.Command, *globals) {
	g := &globals{io: stdio}
	root := &cobra.Command{
		Use:   "kctl",
		Short: "kctl talks to Kiln nodes",
		Long: `kctl generates Kiln machine configs and talks to the machine API of Kiln nodes.

With --nodes, each node is dialled directly; without, the --endpoints are
dialled; without either, the nodes (then the endpoints) of the current context
of the client config (--kctlconfig, $KCTLCONFIG or ~/.kctl/config).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// No positional arguments at the root: an unknown command is an
		// error, not help.
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %q)", err, c.CommandPath()+" --help")
	})

	pf := root.PersistentFlags()
	pf.StringSliceVarP(&g.nodes, "nodes", "n", nil, "nodes to talk to, dialled directly (comma-separated or repeated)")
	pf.StringSliceVarP(&g.endpoints, "endpoints", "e", nil, "endpoints to dial when no --nodes are given")
	pf.StringVar(&g.kctlconfig, "kctlconfig", "", "client config file (default $KCTLCONFIG or ~/.kctl/config)")
	pf.StringVar(&g.context, "context", "", "context of the client config to use (default: its current context)")
	pf.BoolVarP(&g.insecure, "insecure", "i", false, "skip verification of the node's certificate and send none (maintenance mode)")
	pf.StringVar(&g.fingerprint, "cert-fingerprint", "", "accept only a node certificate with this SHA-256 fingerprint (implies --insecure)")

	// Every command; help lists them sorted.
	root.AddCommand(
		newGenCommand(g),
		newValidateCommand(g),
		newApplyConfigCommand(g),
		newConfirmCommand(g),
		newVersionCommand(g),
		newServicesCommand(g),
		newServiceCommand(g),
		newLogsCommand(g),
		newDmesgCommand(g),
		newEventsCommand(g),
		newGetCommand(g),
		newRebootCommand(g),
		newShutdownCommand(g),
		newConfigCommand(g),
		newClusterCommand(g),
		imagecli.NewCommand(),
	)
	return root, g
}

// Package cli is the `kctl image` command: `kctl image build` assembles node images for a
// board and `kctl image inspect` describes one. kctl mounts NewCommand under its root.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/build"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/inspect"
	"github.com/kiln-os/kiln/images/kernel"
	"github.com/kiln-os/kiln/machined/config"
)

// NewCommand returns `image` with its build and inspect subcommands.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build and inspect Kiln node images",
	}
	cmd.AddCommand(newBuildCommand(), newInspectCommand(), newFetchCommand(), newKernelCommand())
	return cmd
}

type buildFlags struct {
	board, formats, output, config, inputs, cache string
	init, machined, seed, version, components     string
	extras                                        []string
	verbose                                       bool
}

func newBuildCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build --board BOARD --format raw,qcow2,iso,uki,kernel --output DIR",
		Short: "Build node images for a board from the pinned inputs (offline)",
		Long: "Build node images for a board. Inputs are the Debian packages pinned in inputs.lock,\n" +
			"taken from --inputs (fetch them with `make inputs`); nothing is downloaded.\n" +
			"Outputs are written to a temporary directory and moved into --output only when all succeeded.\n" +
			"Boards: " + boardNames() + ".",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBuild(cmd.Context(), f, cmd.ErrOrStderr(), cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.board, "board", "", "board to build for ("+boardNames()+")")
	fl.StringVar(&f.formats, "format", "raw", "comma-separated outputs: raw, qcow2, iso, uki, kernel")
	fl.StringVar(&f.output, "output", "_out/images", "directory for the outputs")
	fl.StringVar(&f.config, "config", "", "machine config to put on the STATE partition (validated first)")
	fl.StringVar(&f.inputs, "inputs", "_out/cache", "directory holding the pinned .deb inputs")
	fl.StringVar(&f.cache, "cache", "", "directory for the extracted-kernel cache (default: user cache dir)")
	fl.StringVar(&f.init, "init", "", "init binary for the board's arch (default: go build ./init)")
	fl.StringVar(&f.machined, "machined", "", "machined binary for the board's arch (default: go build ./machined/cmd/machined)")
	fl.StringVar(&f.seed, "seed", "", "seed for partition and disk GUIDs (default: board name)")
	fl.StringVar(&f.version, "version", "dev", "version written into os-release")
	fl.StringVar(&f.components, "components", "", "directory of upstream components for the board's arch, as controlplane/build.sh writes it ($KILN_COMPONENTS/<arch>): kube, containerd, runc, CNI plugins and preloaded images go into the root filesystem")
	fl.StringArrayVar(&f.extras, "extra", nil, "HOSTPATH:ROOTPATH to add to the root filesystem (repeatable)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log every step")
	return cmd
}

func boardNames() string {
	var n []string
	for _, b := range boards.All() {
		n = append(n, b.Name())
	}
	return strings.Join(n, ", ")
}

// options turns flags into build options; every flag problem is found here.
func options(f buildFlags) (build.Options, error) {
	if f.board == "" {
		return build.Options{}, fmt.Errorf("--board is required (%s)", boardNames())
	}
	b, err := boards.Lookup(f.board)
	if err != nil {
		return build.Options{}, err
	}
	o := build.Options{
		Board: b, OutputDir: f.output, InputsDir: f.inputs, CacheDir: f.cache,
		Init: f.init, Machined: f.machined, Seed: f.seed, Version: f.version, Components: f.components,
		ValidateConfig: func(data []byte) error {
			_, err := config.Parse(data)
			return err
		},
	}
	seen := map[boards.Format]bool{}
	for _, s := range strings.Split(f.formats, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		ft, err := boards.ParseFormat(s)
		if err != nil {
			return o, fmt.Errorf("--format: %w", err)
		}
		if !seen[ft] {
			seen[ft] = true
			o.Formats = append(o.Formats, ft)
		}
	}
	if len(o.Formats) == 0 {
		return o, fmt.Errorf("--format: no format given")
	}
	if f.config != "" {
		if o.Config, err = os.ReadFile(f.config); err != nil {
			return o, fmt.Errorf("--config: %w", err)
		}
	}
	for _, x := range f.extras {
		src, dst, ok := strings.Cut(x, ":")
		if !ok || src == "" || dst == "" {
			return o, fmt.Errorf("--extra %q: want HOSTPATH:ROOTPATH", x)
		}
		o.Extras = append(o.Extras, build.Extra{Src: src, Dst: dst})
	}
	if o.Epoch, err = build.EpochFromEnv(); err != nil {
		return o, err
	}
	return o, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func runBuild(ctx context.Context, f buildFlags, stderr, stdout io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	o, err := options(f)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if isTerminal(stderr) && !f.verbose {
		var bar *progressbar.ProgressBar
		o.Progress = func(step string, n, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr),
					progressbar.OptionSetDescription(step), progressbar.OptionClearOnFinish(),
					progressbar.OptionShowCount())
			}
			bar.Describe(step)
			_ = bar.Set(n)
		}
		defer func() {
			if bar != nil {
				_ = bar.Finish()
			}
		}()
	} else {
		o.Progress = func(step string, n, total int) {
			fmt.Fprintf(stderr, "[%d/%d] %s\n", n+1, total, step)
		}
	}
	res, err := build.Build(ctx, o)
	if err != nil {
		return err
	}
	for _, p := range res.Files {
		fmt.Fprintln(stdout, p)
	}
	return nil
}

func newInspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:          "inspect FILE",
		Short:        "Describe an image: partitions, files, kernel version, whether a config is inside",
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := inspect.File(args[0])
			if err != nil {
				return err
			}
			r.Print(cmd.OutOrStdout())
			return nil
		},
	}
}

func newFetchCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:          "fetch-inputs",
		Short:        "Download the Debian packages pinned in inputs.lock with apt-get download (needs the backports and non-free-firmware sources)",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return inputs.Fetch(cmd.Context(), inputs.DefaultLock(), dir, log)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "_out/cache", "directory to download into")
	return cmd
}

func newKernelCommand() *cobra.Command {
	var board, dir string
	cmd := &cobra.Command{
		Use:   "kernel --board BOARD",
		Short: "Build a board's kernel from Debian's pinned source and configuration (once; kept in --inputs/kernels)",
		Long: "Build the kernel of a board whose kernel Kiln builds (generic-amd64) from the pinned\n" +
			"linux-source and linux-config packages in --inputs with the board's configuration\n" +
			"(boards/kernel/<board>.config). The result is kept under --inputs/kernels, keyed by every\n" +
			"input and the toolchain, so a second run returns at once. About 40 minutes on two cores.\n" +
			"Boards that take Debian's kernel package need nothing built.",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if board == "" {
				return fmt.Errorf("--board is required (%s)", boardNames())
			}
			b, err := boards.Lookup(board)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if b.Kernel().Build == nil {
				log.Info("board takes Debian's kernel package: nothing to build", "board", b.Name())
				return nil
			}
			k, err := kernel.Build(cmd.Context(), inputs.NewStore(dir, nil), b, cmd.ErrOrStderr(), log)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), k.Dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&board, "board", "", "board whose kernel to build ("+boardNames()+")")
	cmd.Flags().StringVar(&dir, "inputs", "_out/cache", "directory holding the pinned .deb inputs; the build goes into its kernels/")
	return cmd
}

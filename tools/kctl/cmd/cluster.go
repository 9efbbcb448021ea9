package cmd

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/tools/provision"
)

// clusterFlags are the flags of `kctl cluster create` and `destroy`.
type clusterFlags struct {
	name        string
	provisioner string
	stateDir    string
	image       string
	board       string
	inputs      string
	boot        string
	kernel      string
	initrd      string
	kernelArgs  []string
	arch        string
	memory      int
	cpus        int
	diskMiB     int
	patches     []string
	timeout     time.Duration
	verbose     bool
}

func newClusterCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "cluster",
		Short: "Create and destroy local clusters (QEMU)",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	var f clusterFlags
	pf := c.PersistentFlags()
	pf.StringVar(&f.name, "name", provision.DefaultName, "cluster name: its directory under --state-dir and its kctl context")
	pf.StringVar(&f.stateDir, "state-dir", "", "directory of the local clusters (default ~/.kctl/clusters)")
	c.AddCommand(newClusterCreateCommand(g, &f), newClusterDestroyCommand(g, &f))
	return c
}

func newClusterCreateCommand(g *globals, f *clusterFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "create",
		Short: "Boot a one-node cluster in QEMU and write its kctl context",
		Long: `Boot a one-node cluster in QEMU (TCG unless --accel kvm), apply a generated
controlplane config to it in maintenance mode and write a kctl context
(endpoint 127.0.0.1:PORT, forwarded to the node's port 50000) that becomes
current. QEMU keeps running after kctl exits; 'kctl cluster destroy' stops it
and removes what create made.

The node boots --image (a raw or qcow2 image from 'kctl image build'), or,
without --image, the --board built from the inputs in --inputs (run it from the
Kiln source tree). --boot direct boots the kernel and initramfs written beside
the image by 'kctl image build --format raw,kernel', which is faster than UEFI.

The cluster's directory (--state-dir/NAME) keeps the serial log, the disk
overlay, the secrets bundle and the applied machine config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.createOptions()
			if err != nil {
				return err
			}
			if o.KctlConfig, err = g.configPath(); err != nil {
				return err
			}
			o.Out = g.io.Out
			if f.verbose {
				o.Log = slog.New(slog.NewTextHandler(g.io.Err, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			_, err = provision.Create(cmd.Context(), o)
			return err
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.provisioner, "provisioner", "qemu", "how nodes are run (qemu)")
	fl.StringVar(&f.image, "image", "", "disk image to boot (raw or qcow2); default: build --board")
	fl.StringVar(&f.board, "board", "", "board to build when no --image is given (default generic-ARCH)")
	fl.StringVar(&f.inputs, "inputs", "_out/cache", "directory holding the pinned .deb inputs, for building --board")
	fl.StringVar(&f.boot, "boot", provision.BootUEFI, "uefi (firmware, systemd-boot, UKI) or direct (QEMU loads the kernel and initramfs)")
	fl.StringVar(&f.kernel, "kernel", "", "kernel for --boot direct (default: BASE-vmlinuz beside the image)")
	fl.StringVar(&f.initrd, "initrd", "", "initramfs for --boot direct (default: BASE-initramfs.zst beside the image)")
	fl.StringArrayVar(&f.kernelArgs, "kernel-arg", nil, "extra kernel argument for --boot direct, e.g. kiln.debug (repeatable)")
	fl.StringVar(&f.arch, "arch", "amd64", "node architecture: amd64 or arm64")
	fl.IntVar(&f.memory, "memory", 1024, "node memory in MiB")
	fl.IntVar(&f.cpus, "cpus", 2, "node CPUs")
	fl.IntVar(&f.diskMiB, "disk", 4096, "node disk size in MiB (EPHEMERAL grows to fill it)")
	fl.StringArrayVar(&f.patches, "config-patch", nil, "patch for the generated machine config (inline or @FILE; repeatable)")
	fl.DurationVar(&f.timeout, "wait-timeout", 10*time.Minute, "how long to wait for the node to boot and take its config")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the provisioner does, QEMU's command line included")
	return c
}

// createOptions checks the flags of `cluster create` and turns them into options.
func (f *clusterFlags) createOptions() (provision.Options, error) {
	if f.provisioner != "qemu" {
		return provision.Options{}, fmt.Errorf("--provisioner %q: only qemu is supported", f.provisioner)
	}
	if f.image != "" && f.board != "" {
		return provision.Options{}, errors.New("--image and --board exclude each other: give the image, or the board to build")
	}
	if f.diskMiB < 512 {
		return provision.Options{}, fmt.Errorf("--disk %d: a node needs at least 512 MiB", f.diskMiB)
	}
	if f.timeout <= 0 {
		return provision.Options{}, fmt.Errorf("--wait-timeout %s: must be positive", f.timeout)
	}
	patches, err := loadPatches(f.patches)
	if err != nil {
		return provision.Options{}, fmt.Errorf("--config-patch: %w", err)
	}
	return provision.Options{
		Name:          f.name,
		StateDir:      f.stateDir,
		Image:         f.image,
		Board:         f.board,
		InputsDir:     f.inputs,
		Boot:          strings.ToLower(f.boot),
		Kernel:        f.kernel,
		Initrd:        f.initrd,
		KernelArgs:    f.kernelArgs,
		Arch:          f.arch,
		MemoryMiB:     f.memory,
		CPUs:          f.cpus,
		DiskSize:      int64(f.diskMiB) << 20,
		ConfigPatches: patches,
		Timeout:       f.timeout,
	}, nil
}

func newClusterDestroyCommand(g *globals, f *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "destroy",
		Short: "Stop a local cluster's nodes and remove its directory and kctl context",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := provision.Destroy(f.stateDir, f.name); err != nil {
				return err
			}
			fmt.Fprintf(g.io.Out, "destroyed cluster %s\n", f.name)
			return nil
		},
	}
}

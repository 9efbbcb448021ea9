package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/atomicfile"
	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/machined/config/patch"
)

// Boot methods.
const (
	BootUEFI   = "uefi"   // firmware → systemd-boot → UKI from the disk image
	BootDirect = "direct" // QEMU -kernel/-initrd/-append, the disk for STATE/EPHEMERAL
)

// DefaultName is the cluster name when none is given.
const DefaultName = "kiln"

// Options of Create. Zero values take the defaults documented per field.
type Options struct {
	// Name of the cluster (DefaultName); also its directory and kctl context.
	Name string
	// StateDir holds the cluster directories (DefaultStateDir).
	StateDir string

	// Image is a raw or qcow2 disk image built by `kctl image build`. Without it, Board
	// is built from the inputs (the Kiln module must be the working directory).
	Image     string
	Board     string // default generic-<Arch>
	InputsDir string // default _out/cache

	// Boot is BootUEFI (default) or BootDirect. Direct boot takes Kernel, Initrd and the
	// command line from the files `kctl image build --format kernel` writes beside the
	// image (<base>-vmlinuz, <base>-initramfs.zst, <base>-cmdline.txt) unless given.
	Boot       string
	Kernel     string
	Initrd     string
	KernelArgs []string // appended to the image's command line (direct boot)

	Arch      string // amd64 (default: the host's) or arm64
	Accel     string // tcg (default) or kvm
	MemoryMiB int    // default 1024
	CPUs      int    // default 2
	// DiskSize is the node's disk size in bytes (default 4 GiB): the overlay is grown to
	// it and the node grows EPHEMERAL to fill it.
	DiskSize int64

	ConfigPatches []patch.Patch
	// KctlConfig is the client config the context goes into (clientconfig.Path("")).
	KctlConfig string

	// Timeout bounds the boot and the apply (default 10 minutes: TCG is slow).
	Timeout time.Duration
	// Ready overrides ReadyPattern.
	Ready *regexp.Regexp

	// Out receives one line per step for the user (nil: none).
	Out io.Writer
	Log *slog.Logger
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := CheckName(o.Name); err != nil {
		return err
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.Arch != "amd64" && o.Arch != "arm64" {
		return fmt.Errorf("--arch %q: want amd64 or arm64", o.Arch)
	}
	if o.Accel == "" {
		o.Accel = "tcg"
	}
	if o.Board == "" {
		o.Board = "generic-" + o.Arch
	}
	if o.InputsDir == "" {
		o.InputsDir = filepath.Join("_out", "cache")
	}
	switch o.Boot {
	case "":
		o.Boot = BootUEFI
	case BootUEFI, BootDirect:
	default:
		return fmt.Errorf("--boot %q: want %s or %s", o.Boot, BootUEFI, BootDirect)
	}
	if o.Boot == BootUEFI && (o.Kernel != "" || o.Initrd != "") {
		return errors.New("a kernel or initrd was given for UEFI boot: use --boot direct")
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1024
	}
	if o.MemoryMiB < 256 {
		return fmt.Errorf("--memory %d: a node needs at least 256 MiB", o.MemoryMiB)
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.CPUs < 1 {
		return fmt.Errorf("--cpus %d: want at least 1", o.CPUs)
	}
	if o.DiskSize == 0 {
		o.DiskSize = 4 << 30
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Ready == nil {
		o.Ready = ReadyPattern
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.KctlConfig == "" {
		p, err := clientconfig.Path("")
		if err != nil {
			return err
		}
		o.KctlConfig = p
	}
	return nil
}

// vmSpec is what the platform-specific part needs to start QEMU.
type vmSpec struct {
	arch, accel    string
	uefi           bool
	kernel, initrd string
	cmdline        string
	disk           string
	diskSize       int64
	memoryMiB      int
	cpus           int
	dir            string
}

// Create boots a one-node cluster and returns it once the node answers over mTLS with
// the generated identity and the kctl context is written. When it fails after QEMU
// started, QEMU is stopped and the directory (with the serial log) kept for Destroy.
func Create(ctx context.Context, o Options) (*Cluster, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	dir, err := clusterDir(o.StateDir, o.Name)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("cluster %q exists (%s): remove it with 'kctl cluster destroy --name %s'", o.Name, dir, o.Name)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cluster directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster directory: %w", err)
	}
	c := &Cluster{
		Name: o.Name, Provisioner: "qemu", Arch: o.Arch, Boot: o.Boot, Dir: dir,
		Hostname: o.Name + "-controlplane-1", Created: time.Now().UTC().Truncate(time.Second),
	}
	fail := func(err error) (*Cluster, error) {
		if c.PID != 0 {
			_ = stopQEMU(c, 10*time.Second)
		}
		return nil, fmt.Errorf("%w\nthe cluster directory %s is kept; remove it with 'kctl cluster destroy --name %s'", err, dir, o.Name)
	}
	if err := c.save(); err != nil {
		return fail(err)
	}

	spec, err := o.prepareBoot(ctx, c)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(o.Out, "booting %s (QEMU %s, %s boot, %d MiB, %d CPUs)\n", c.Hostname, strings.ToUpper(o.Accel), o.Boot, o.MemoryMiB, o.CPUs)
	if c.PID, c.HostPort, err = startQEMU(ctx, spec, o.Log); err != nil {
		return fail(err)
	}
	c.Endpoint = fmt.Sprintf("127.0.0.1:%d", c.HostPort)
	if err := c.save(); err != nil {
		return fail(err)
	}

	bootCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	m, err := waitConsole(bootCtx, &consoleWatch{path: c.SerialLog()}, o.Ready, func() bool { return running(c) })
	if err != nil {
		return fail(err)
	}
	if mode := submatch(o.Ready, m, "mode"); mode != "" && mode != "maintenance" {
		return fail(fmt.Errorf("the node booted %s, not in maintenance mode: the image carries a machine config; build it without --config", mode))
	}
	fp := submatch(o.Ready, m, "fingerprint")
	fmt.Fprintf(o.Out, "node is in maintenance mode at %s\n", c.Endpoint)

	gen, err := GenerateConfig(o.Name, c.Hostname, o.ConfigPatches)
	if err != nil {
		return fail(err)
	}
	if err := gen.Secrets.Save(filepath.Join(dir, SecretsFile)); err != nil {
		return fail(err)
	}
	if err := atomicfile.WriteFile(c.ConfigPath(), gen.Config, 0o600); err != nil {
		return fail(err)
	}
	fmt.Fprintf(o.Out, "applying the machine config (%s)\n", c.ConfigPath())
	if err := applyInsecure(bootCtx, c.Endpoint, fp, gen.Config); err != nil {
		return fail(err)
	}
	if err := WaitMTLS(bootCtx, c.Endpoint, gen.CA, gen.Crt, gen.Key, c.Hostname); err != nil {
		return fail(err)
	}
	if c.Context, err = writeContext(o.KctlConfig, o.Name, c.Endpoint, gen.CA, gen.Crt, gen.Key); err != nil {
		return fail(err)
	}
	c.KctlConfig = o.KctlConfig
	if err := c.save(); err != nil {
		return fail(err)
	}
	fmt.Fprintf(o.Out, "node %s is up: kctl context %s (%s) in %s\n", c.Hostname, c.Context, c.Endpoint, c.KctlConfig)
	return c, nil
}

// prepareBoot finds or builds the image and works out what QEMU boots.
func (o *Options) prepareBoot(ctx context.Context, c *Cluster) (vmSpec, error) {
	image := o.Image
	if image == "" {
		fmt.Fprintf(o.Out, "building image %s from %s\n", o.Board, o.InputsDir)
		var err error
		if image, err = buildImage(ctx, o, filepath.Join(c.Dir, "image")); err != nil {
			return vmSpec{}, err
		}
	}
	abs, err := filepath.Abs(image)
	if err != nil {
		return vmSpec{}, err
	}
	if _, err := os.Stat(abs); err != nil {
		return vmSpec{}, fmt.Errorf("--image: %w", err)
	}
	c.Image = abs
	spec := vmSpec{
		arch: o.Arch, accel: o.Accel, uefi: o.Boot == BootUEFI, disk: abs, diskSize: o.DiskSize,
		memoryMiB: o.MemoryMiB, cpus: o.CPUs, dir: c.Dir,
	}
	if o.Boot == BootDirect {
		k := KernelFilesFor(abs)
		spec.kernel, spec.initrd = firstOf(o.Kernel, k.Kernel), firstOf(o.Initrd, k.Initrd)
		for _, p := range []string{spec.kernel, spec.initrd} {
			if _, err := os.Stat(p); err != nil {
				return vmSpec{}, fmt.Errorf("direct boot: %w (build the image with --format raw,kernel)", err)
			}
		}
		cmdline := "quiet"
		if b, err := os.ReadFile(k.Cmdline); err == nil {
			cmdline = strings.TrimSpace(string(b))
		}
		spec.cmdline = strings.TrimSpace(cmdline + " " + strings.Join(o.KernelArgs, " "))
	} else if len(o.KernelArgs) > 0 {
		return vmSpec{}, errors.New("kernel arguments apply to direct boot only (the UKI's command line is signed into it): use --boot direct")
	}
	return spec, nil
}

// KernelFiles are the direct-boot outputs of `kctl image build --format kernel`.
type KernelFiles struct{ Kernel, Initrd, Cmdline string }

// KernelFilesFor returns the kernel outputs that sit beside a disk image of the same
// build: DIR/BOARD.raw → DIR/BOARD-vmlinuz, DIR/BOARD-initramfs.zst, DIR/BOARD-cmdline.txt.
func KernelFilesFor(image string) KernelFiles {
	base := strings.TrimSuffix(image, filepath.Ext(image))
	return KernelFiles{Kernel: base + "-vmlinuz", Initrd: base + "-initramfs.zst", Cmdline: base + "-cmdline.txt"}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// retryable reports whether a failed call may succeed later: the node is still coming
// up (QEMU's user networking accepts connections before the guest listens).
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// applyInsecure applies data in maintenance mode (no client certificate), pinning the
// node's certificate when fingerprint is not empty.
func applyInsecure(ctx context.Context, endpoint, fingerprint string, data []byte) error {
	c, err := client.New(ctx, endpoint, client.WithInsecure(fingerprint), client.WithUserAgent("kctl-provision"))
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		callCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := c.ApplyConfiguration(callCtx, &machine.ApplyConfigurationRequest{Data: data, Mode: machine.ApplyMode_APPLY_MODE_AUTO})
		cancel()
		if err == nil {
			return nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return fmt.Errorf("apply the machine config to %s: %w", endpoint, err)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return fmt.Errorf("apply the machine config to %s: %w", endpoint, err)
		}
	}
}

// WaitMTLS waits until the node at endpoint answers Version over mTLS with the given
// machine CA and client certificate, out of maintenance mode, and (when hostname is
// not empty) reports that host name.
func WaitMTLS(ctx context.Context, endpoint string, ca, crt, key []byte, hostname string) error {
	c, err := client.New(ctx, endpoint, client.WithMTLS(ca, crt, key), client.WithUserAgent("kctl-provision"))
	if err != nil {
		return err
	}
	defer c.Close()
	var last error
	for {
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		v, err := c.Version(callCtx, &machine.VersionRequest{})
		cancel()
		switch {
		case err != nil:
			last = err
		case v.GetMaintenance():
			last = errors.New("still in maintenance mode")
		case hostname != "" && v.GetHostname() != hostname:
			last = fmt.Errorf("host name %q, want %q", v.GetHostname(), hostname)
		default:
			return nil
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the node at %s to answer over mTLS: %w (last: %v)", endpoint, err, last)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Destroy stops the cluster's QEMU, removes its kctl context (if it still points at
// the node) and its directory. A cluster that does not exist is ErrNotFound.
func Destroy(stateDir, name string) error {
	c, err := Load(stateDir, name)
	if err != nil {
		return err
	}
	if c.PID != 0 {
		if err := stopQEMU(c, 10*time.Second); err != nil {
			return err
		}
	}
	if err := removeContext(c.KctlConfig, c.Context, c.Endpoint); err != nil {
		return err
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("remove %s: %w", c.Dir, err)
	}
	return nil
}

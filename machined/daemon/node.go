package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/init/handoff"
	"github.com/kiln-os/kiln/machined/platform"
	"github.com/kiln-os/kiln/machined/version"
	"github.com/kiln-os/kiln/networking"
	"github.com/kiln-os/kiln/networking/link"
	"github.com/kiln-os/kiln/networking/timesync"
)

// Where a node keeps things.
const (
	// StateMount is where STATE is mounted.
	StateMount = "/system/state"
	// stateFallback holds the state (on tmpfs) when the root filesystem has
	// no /system/state to mount on, or there is no system disk (a live ISO):
	// the node works but forgets its configuration at the next boot.
	stateFallback = "/run/kiln/state"
	// VarMount is where EPHEMERAL is mounted (over init's tmpfs /var).
	VarMount = "/var"
	// NodeListen is the machine API address on a node: every address, IPv4
	// and IPv6.
	NodeListen = ":50000"
	nodeRunDir = "/run/machined"
)

// NodeOptions configures PrepareNode; the zero value is a real node.
type NodeOptions struct {
	Log *slog.Logger
	// Console receives the banner.
	Console io.Writer
	// SysClassBlock, DevDir, Cmdline and MountsPath are /sys/class/block,
	// /dev, /proc/cmdline and /proc/self/mounts when empty.
	SysClassBlock, DevDir, Cmdline, MountsPath string
	// FATLoaded, FilesystemsLoaded, NetworkDriversLoaded, DriversLoaded and
	// ModulesLoaded are the files init creates once FAT, the other filesystems, the
	// network drivers, every device driver and then the late modules are loaded (the
	// handoff constants when empty).
	FATLoaded, FilesystemsLoaded, NetworkDriversLoaded, DriversLoaded, ModulesLoaded string
}

// How long machined looks for the system disk while init still loads drivers: a
// poll interval, and a limit for a loader that never finishes.
const (
	diskPoll = 20 * time.Millisecond
	diskWait = 2 * time.Minute
)

// waitSystemDisk calls find until it returns a disk. Until driversDone reports true a
// driver may still bring the disk, so a miss is retried every poll; after it, one more
// miss is final (a live ISO has no system disk). limit guards against a loader that
// never finishes.
func waitSystemDisk(find func() (*platform.Disk, error), driversDone func() bool, poll, limit time.Duration, log *slog.Logger) (*platform.Disk, error) {
	deadline := time.Now().Add(limit)
	waited := false
	for {
		done := driversDone()
		disk, err := find()
		if err == nil || done {
			return disk, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("drivers still loading after %s: %w", limit, err)
		}
		if !waited {
			log.Info("waiting for the system disk while drivers load")
			waited = true
		}
		time.Sleep(poll)
	}
}

// waitFile waits until path exists, polling, for at most limit.
func waitFile(path string, poll, limit time.Duration) bool {
	exists := fileExists(path)
	for deadline := time.Now().Add(limit); !exists(); time.Sleep(poll) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// PrepareServices readies the node for a configuration's services: it mounts
// EPHEMERAL on /var, where they keep their data, growing the partition and its
// filesystem to fill the disk (once; later calls wait for the first), and waits
// (for at most a few minutes) until init has loaded the late modules: bridge,
// bonding, netfilter and the like. Maintenance mode, which has no services, does
// not call it, so a node without a configuration leaves EPHEMERAL alone.
func (n *Node) PrepareServices() {
	if n.mountVar != nil {
		n.varOnce.Do(n.mountVar)
	}
	start := time.Now()
	if !waitFile(n.modulesLoaded, diskPoll, diskWait) {
		n.log.Warn("late modules still loading; going on", "waited", diskWait)
		return
	}
	if d := time.Since(start); d > diskPoll {
		n.log.Info("waited for the late modules", "took", d.Round(time.Millisecond))
	}
}

func fileExists(path string) func() bool {
	return func() bool {
		_, err := os.Stat(path)
		return err == nil
	}
}

// Node is what PrepareNode set up: the daemon's directories on the node's
// partitions, its host network and the power seam through init.
type Node struct {
	log           *slog.Logger
	mounts        string
	mounted       []string // by this machined, in mount order
	modulesLoaded string
	// mountVar mounts and grows EPHEMERAL (nil: no system disk). It runs at most
	// once, through varOnce: PrepareServices runs it, and Unmount uses varOnce to
	// wait for a run in progress or to rule out a later one.
	mountVar func()
	varOnce  sync.Once

	StateDir, LogDir string
	// Debug is kiln.debug on the kernel command line: debug actions and
	// debug logging.
	Debug bool
	// FallbackHostname is kiln-xxxxxx from the first NIC's MAC address.
	FallbackHostname string
	Net              *networking.Controller
	// Time keeps the clock in line with machine.time.servers.
	Time *timesync.Service
}

// PrepareNode readies a Kiln node for the daemon: it prints the banner, finds
// the system disk by its partition labels, mounts STATE and prepares the network.
// EPHEMERAL is mounted later, before a configuration first comes into force
// (PrepareServices).
// Partitions already mounted (machined restarted by init) are taken as they
// are. Without a system disk the node still starts, with its state on tmpfs.
func PrepareNode(opts NodeOptions) (*Node, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Console == nil {
		opts.Console = io.Discard
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&opts.SysClassBlock, "/sys/class/block")
	def(&opts.DevDir, "/dev")
	def(&opts.Cmdline, "/proc/cmdline")
	def(&opts.MountsPath, "/proc/self/mounts")
	def(&opts.FATLoaded, handoff.FATLoaded)
	def(&opts.FilesystemsLoaded, handoff.FilesystemsLoaded)
	def(&opts.NetworkDriversLoaded, handoff.NetworkDriversLoaded)
	def(&opts.DriversLoaded, handoff.DriversLoaded)
	def(&opts.ModulesLoaded, handoff.ModulesLoaded)
	n := &Node{log: opts.Log, mounts: opts.MountsPath, LogDir: filepath.Join(VarMount, "log"), modulesLoaded: opts.ModulesLoaded}
	cmdline, _ := os.ReadFile(opts.Cmdline)
	n.Debug = CmdlineFlag(string(cmdline), "kiln.debug")

	var uts unix.Utsname
	_ = unix.Uname(&uts)
	fmt.Fprintf(opts.Console, "[kiln] machined %s (kernel %s)\n", version.Tag, unix.ByteSliceToString(uts.Release[:]))

	disk, err := waitSystemDisk(func() (*platform.Disk, error) {
		return platform.FindSystemDisk(opts.SysClassBlock, opts.DevDir)
	}, fileExists(opts.DriversLoaded), diskPoll, diskWait, n.log)
	if err != nil {
		n.log.Error("no system disk: the configuration will not survive a reboot", "err", err)
		fmt.Fprintf(opts.Console, "[kiln] WARNING: no system disk (%v); state is kept in memory only\n", err)
		n.StateDir = stateFallback
	} else {
		n.log.Info("system disk", "disk", disk.Dev)
		// The filesystems load beside machined's start; FAT (STATE on every board)
		// first.
		n.waitFilesystem(disk, platform.LabelState, opts.FATLoaded, opts.FilesystemsLoaded)
		n.StateDir = StateMount
		if err := os.MkdirAll(StateMount, 0o755); err != nil {
			// A root filesystem without /system/state (it is read-only).
			n.log.Warn("no mount point for STATE; keeping the state in memory", "mountpoint", StateMount, "err", err)
			n.StateDir = stateFallback
		} else if err := n.mount(disk, platform.LabelState, StateMount); err != nil {
			return nil, err
		}
		// EPHEMERAL (/var) waits for a configuration: nothing but its services uses
		// /var (PrepareServices).
		n.mountVar = func() {
			n.waitFilesystem(disk, platform.LabelEphemeral, opts.FATLoaded, opts.FilesystemsLoaded)
			n.mountEphemeral(disk, opts.Console)
		}
	}
	if err := os.MkdirAll(n.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}

	// The fallback host name comes from the first NIC's address: its driver first.
	if !waitFile(opts.NetworkDriversLoaded, diskPoll, diskWait) {
		n.log.Warn("network drivers still loading; network links may be missing", "waited", diskWait)
	}
	if ls, err := link.List(); err != nil {
		n.log.Warn("list network links", "err", err)
	} else {
		n.FallbackHostname = HostnameFromLinks(ls)
	}
	n.Net = networking.New(networking.Options{
		Log:              n.log.With("component", "network"),
		Hosts:            "/etc/hosts",
		HostnameFile:     "/etc/hostname",
		SetHostname:      platform.SetHostname,
		FallbackHostname: n.FallbackHostname,
	})
	n.Time = &timesync.Service{Clock: timesync.SystemClock{}, Log: n.log.With("component", "time")}
	return n, nil
}

// waitFilesystem waits until init has loaded the filesystem of a partition: the FAT
// mark for a FAT partition, the mark of every filesystem for the others (and when the
// partition's filesystem cannot be told).
func (n *Node) waitFilesystem(disk *platform.Disk, label, fatLoaded, filesystemsLoaded string) {
	mark := filesystemsLoaded
	if p, ok := disk.Partitions[label]; ok {
		if fs, err := platform.DetectFS(p.Dev); err == nil && fs == "vfat" {
			mark = fatLoaded
		}
	}
	if !waitFile(mark, diskPoll, diskWait) {
		n.log.Warn("filesystem modules still loading; mounting anyway", "partition", label, "waited", diskWait)
	}
}

// mountEphemeral mounts EPHEMERAL on /var and grows it to fill the disk. Without it
// (an image written before the builder formatted it) /var stays init's tmpfs.
func (n *Node) mountEphemeral(disk *platform.Disk, console io.Writer) {
	defer func() {
		if err := os.MkdirAll(n.LogDir, 0o755); err != nil {
			n.log.Error("log directory", "err", err)
		}
	}()
	if err := n.mount(disk, platform.LabelEphemeral, VarMount); err != nil {
		n.log.Error("EPHEMERAL not mounted; /var stays in memory", "err", err)
		fmt.Fprintf(console, "[kiln] WARNING: EPHEMERAL not mounted (%v); /var is in memory\n", err)
		return
	}
	if res, err := platform.GrowEphemeral(disk, VarMount, n.log); err != nil {
		n.log.Error("grow EPHEMERAL", "err", err)
	} else if res.PartitionGrown {
		fmt.Fprintf(console, "[kiln] EPHEMERAL grown from %d to %d MiB\n", res.OldBytes>>20, res.NewBytes>>20)
	}
}

// mount mounts a partition of the system disk unless it is mounted there
// already.
func (n *Node) mount(disk *platform.Disk, label, target string) error {
	p, ok := disk.Partitions[label]
	if !ok {
		return fmt.Errorf("node: %s has no %s partition", disk.Dev, label)
	}
	if mountedAt(n.mounts, p.Dev, target) {
		n.log.Info("partition already mounted", "label", label, "target", target)
		n.mounted = append(n.mounted, target)
		return nil
	}
	if err := platform.MountPartition(disk, label, target); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.log.Info("partition mounted", "label", label, "dev", p.Dev, "target", target)
	n.mounted = append(n.mounted, target)
	return nil
}

// mountedAt reports whether the topmost mount on target is dev.
func mountedAt(mountsPath, dev, target string) bool {
	ms, err := platform.Mounts(mountsPath)
	if err != nil {
		return false
	}
	top := ""
	for _, m := range ms {
		if m.Target == target {
			top = m.Source
		}
	}
	return top == dev
}

// Unmount syncs and unmounts what PrepareNode and PrepareServices mounted, in
// reverse order; a busy filesystem is remounted read-only instead. Init unmounts
// whatever is left.
func (n *Node) Unmount() error {
	n.varOnce.Do(func() {}) // waits for a mount of EPHEMERAL in progress; none after this
	unix.Sync()
	var errs []error
	for i := len(n.mounted) - 1; i >= 0; i-- {
		t := n.mounted[i]
		if err := unix.Unmount(t, 0); err == nil {
			n.log.Info("unmounted", "target", t)
			continue
		} else if errors.Is(err, unix.EBUSY) {
			if rerr := unix.Mount("", t, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w; remount read-only: %w", t, err, rerr))
			}
		} else if !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	n.mounted = nil
	unix.Sync()
	return errors.Join(errs...)
}

// Power stops the network's DHCP, unmounts, syncs and asks init (PID 1) for
// the action: SIGTERM reboots, SIGUSR2 powers off. machined then exits and
// init does the rest.
func (n *Node) Power(a PowerAction) error {
	n.Net.Close()
	n.Time.Close()
	if err := n.Unmount(); err != nil {
		n.log.Error("unmount before power action", "err", err)
	}
	sig := unix.SIGTERM
	if a == PowerOff {
		sig = unix.SIGUSR2
	}
	n.log.Info("asking init to carry out the power action", "signal", sig)
	if err := unix.Kill(1, sig); err != nil {
		return fmt.Errorf("signal init: %w", err)
	}
	return nil
}

// Network adapts the node's network controller and time sync to the daemon.
func (n *Node) Network() Network { return ControllerNetwork{C: n.Net, Time: n.Time} }

// HostnameFromLinks derives the maintenance host name from the first NIC (by
// interface index): "kiln-" and the last three bytes of its MAC address.
// Without a NIC it is "kiln".
func HostnameFromLinks(ls []link.Link) string {
	for _, l := range ls {
		if l.Physical() {
			m := l.HardwareAddr
			return fmt.Sprintf("kiln-%02x%02x%02x", m[3], m[4], m[5])
		}
	}
	return "kiln"
}

// CmdlineFlag reports whether a boolean key is set on a kernel command line:
// "key" or "key=1|y|yes|true|on".
func CmdlineFlag(cmdline, key string) bool {
	on := false
	for _, f := range strings.Fields(cmdline) {
		k, v, hasV := strings.Cut(f, "=")
		if k != key {
			continue
		}
		switch {
		case !hasV:
			on = true
		default:
			switch strings.ToLower(v) {
			case "", "1", "y", "yes", "true", "on":
				on = true
			default:
				on = false
			}
		}
	}
	return on
}

// PlatformHostname sets the kernel's host name: the HostnameSetter of a node.
type PlatformHostname struct{}

// SetHostname implements HostnameSetter.
func (PlatformHostname) SetHostname(name string) error { return platform.SetHostname(name) }

// Command init is Kiln's PID 1. It runs from the initramfs: mounts the kernel
// filesystems, loads the early kernel modules, mounts the root squashfs read-only
// through a loop device, switches into it, coldplugs the remaining drivers, and then
// supervises machined (restart with backoff, orphan reaping) until machined or the
// kernel asks for a reboot or power-off, which it carries out in order.
//
// Nothing else runs: there is no shell. Settings come from the kernel command line
// (see internal/cmdline); logs go to /dev/kmsg.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/init/internal/boot"
	"github.com/kiln-os/kiln/init/internal/cmdline"
	"github.com/kiln-os/kiln/init/internal/modules"
	"github.com/kiln-os/kiln/init/internal/supervise"
	"github.com/kiln-os/kiln/machined/version"
)

// newRoot is where the root squashfs is mounted before the switch.
const newRoot = "/newroot"

func main() {
	// A small heap target keeps PID 1's RSS low; init allocates little after boot.
	debug.SetGCPercent(50)
	runtime.GOMAXPROCS(1)
	debug.SetMemoryLimit(8 << 20)
	if err := run(os.Args[1:]); err != nil {
		// Returning from PID 1 panics the kernel, which reboots after kernel.panic
		// seconds (set first thing): the clearest failure a node without a shell has.
		fmt.Fprintf(boot.OpenConsole(), "kiln-init: FATAL: %v\n", err)
		time.Sleep(2 * time.Second)
		os.Exit(1)
	}
}

// superviseArg0 is argv[0] of init's second phase: after the switch of root, init
// re-executes itself so the supervising PID 1 starts with a fresh heap and maps only
// the code it runs (the first phase's boot work would otherwise stay in its RSS). The
// kernel cannot pass this argv[0], so the command line cannot skip the boot phase.
const superviseArg0 = "kiln-init:supervise"

func run(_ []string) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("init must run as PID 1 (it is %d)", os.Getpid())
	}
	if os.Args[0] == superviseArg0 {
		return superviseMachined()
	}
	// Signals first: a Ctrl-Alt-Del or a SIGTERM during boot waits in the channel.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, supervise.Signals...)

	if err := boot.MountAll("/", boot.EarlyMounts()); err != nil {
		return err
	}
	con := boot.OpenConsole()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	fmt.Fprint(con, boot.Banner(version.Tag, release, runtime.GOARCH))

	params, perr := cmdline.Parse(readFile("/proc/cmdline"))
	log := newLogger(con, params.Debug)
	if perr != nil {
		log.Error("using defaults for bad settings", "err", perr)
	}
	if err := boot.ApplySysctls("/proc/sys", boot.KernelSettings()); err != nil {
		log.Warn("kernel settings", "err", err)
	}
	// Ctrl-Alt-Del becomes SIGINT to PID 1 (an orderly reboot) instead of a hard reset.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		log.Warn("disable hard Ctrl-Alt-Del", "err", err)
	}

	start := time.Now()
	if params.Modules {
		if set, err := moduleSet("/", release, log); err != nil {
			log.Warn("early modules: no manifest; relying on built-in drivers", "err", err)
		} else {
			if err := set.LoadStage(modules.Early); err != nil {
				log.Error("early modules", "err", err)
			}
			log.Debug("early modules loaded", "took", time.Since(start).Round(time.Millisecond))
		}
	}

	dev, err := boot.MountLoop(params.Root, newRoot, "squashfs", unix.MS_RDONLY|unix.MS_NODEV, "")
	if err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	log.Info("root mounted", "image", params.Root, "dev", dev)
	if err := boot.SwitchRoot(newRoot, boot.MovedMounts); err != nil {
		return err
	}
	if err := boot.WritableCopy("/etc", "/run/kiln/etc"); err != nil {
		log.Error("writable /etc", "err", err)
	}
	if err := boot.MountAll("/", []boot.Mount{{Source: "tmpfs", Target: "/var", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"}}); err != nil {
		log.Error("tmpfs /var", "err", err)
	}

	if params.Modules {
		if set, err := moduleSet("/", release, log); err != nil {
			log.Warn("coldplug: no manifest in the root", "err", err)
		} else {
			loaded, err := set.Coldplug("/sys/devices", 4)
			if err != nil {
				log.Error("coldplug", "err", err)
			}
			log.Info("drivers loaded", "modules", strings.Join(loaded, ","), "took", time.Since(start).Round(time.Millisecond))
		}
	}

	// Signals that arrive during the exec are lost (PID 1 without handlers ignores them);
	// the window is a few milliseconds, before machined runs.
	signal.Reset()
	// Without transparent huge pages for the heap: with THP "always" (Debian's kernels)
	// a touched 2 MiB page costs PID 1 almost half its budget. machined gets its own
	// environment, so the setting stays with init.
	env := append(os.Environ(), "GODEBUG=disablethp=1")
	if err := unix.Exec("/proc/self/exe", []string{superviseArg0}, env); err != nil {
		return fmt.Errorf("re-exec init for supervision: %w", err)
	}
	return nil
}

// superviseMachined is init's second phase: supervise machined until shutdown, then
// carry the shutdown out.
func superviseMachined() error {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, supervise.Signals...)
	// Children that died during the exec: their SIGCHLD came before Notify.
	sigs <- unix.SIGCHLD
	con := boot.OpenConsole()
	params, _ := cmdline.Parse(readFile("/proc/cmdline"))
	log := newLogger(con, params.Debug)
	sup := &supervise.Supervisor{
		Path:        params.Machined,
		Env:         []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "TERM=linux"},
		Console:     consoleFile(con),
		Backoff:     supervise.DefaultBackoff(),
		StopTimeout: params.StopTimeout,
		Log:         log.With("component", "supervise"),
	}
	action := sup.Run(sigs)
	fmt.Fprintf(con, "kiln-init: %s\n", action)
	if n := supervise.KillAll(5*time.Second, log); n > 0 {
		log.Warn("shutdown: killed processes that ignored SIGTERM")
	}
	return supervise.Finish(action, func() { boot.UnmountAll(log) }, log)
}

// newLogger logs to /dev/kmsg, or to the console when that fails.
func newLogger(con io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		return slog.New(slog.NewTextHandler(con, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(boot.NewKmsgHandler(kmsg, "kiln-init", level))
}

func moduleSet(root, release string, log *slog.Logger) (*modules.Set, error) {
	m, err := modules.Read(root + modules.ManifestPath(release))
	if err != nil {
		return nil, err
	}
	return &modules.Set{Manifest: m, Root: root, Loader: modules.Finit{}, Log: log}, nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func consoleFile(w any) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return os.Stderr
}

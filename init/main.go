// Command init is Kiln's PID 1. It runs from the initramfs: mounts the kernel
// filesystems, loads the modules the root mount needs (loop, squashfs), mounts the root
// squashfs read-only through a loop device, loads in parallel the filesystems every
// boot needs and, by coldplug, the drivers of the devices present, switches into the
// root, and then supervises machined (restart with backoff, orphan reaping) until
// machined or the kernel asks for a reboot or power-off, which it carries out in order.
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
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
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
	// The boot phase inserts modules from several goroutines and scans sysfs meanwhile:
	// with one P, a goroutine back from a long finit_module waits for the P behind the
	// others. Its heap is dropped by the re-exec, so the small limits of the
	// supervising phase do not apply here.
	runtime.GOMAXPROCS(runtime.NumCPU())
	debug.SetMemoryLimit(64 << 20)
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

	// First only what mounting the root needs (loop and squashfs, unless built in).
	// Then, with the root mounted at newRoot but not yet switched to, everything else
	// at once: the filesystems every boot needs and, by coldplug, the drivers of the
	// devices present, early modules from the initramfs and late ones from the new
	// root, and machined read ahead into the page cache.
	start := time.Now()
	// The first coldplug scan needs only /sys: it runs beside the root mount.
	prescan := make(chan []string, 1)
	var set *modules.Set
	if params.Modules {
		go func() {
			as, _ := modules.BusModaliases("/sys/bus")
			prescan <- as
		}()
		var err error
		if set, err = moduleSet("/", release, log); err != nil {
			log.Warn("modules: no manifest; relying on built-in drivers", "err", err)
		} else if err := set.LoadProviders(rootNeeds()...); err != nil {
			log.Error("modules for the root filesystem", "err", err)
		}
	}

	dev, err := boot.MountLoop(params.Root, newRoot, "squashfs", unix.MS_RDONLY|unix.MS_NODEV, "")
	if err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	log.Info("root mounted", "image", params.Root, "dev", dev)

	var wg sync.WaitGroup
	if set != nil {
		// The initramfs holds the early modules, the root every module.
		set.StageRoots = map[string]string{modules.Late: newRoot}
		first := <-prescan
		// Drivers first: the slowest chains (scsi_mod, libata, ahci and its port
		// probe) start before the filesystems take the semaphore.
		wg.Add(1)
		go func() {
			defer wg.Done()
			scan := func() ([]string, error) {
				if first != nil {
					as := first
					first = nil
					return as, nil
				}
				return modules.BusModaliases("/sys/bus")
			}
			loaded, err := set.Coldplug(scan, 4)
			if err != nil {
				log.Error("coldplug", "err", err)
			}
			log.Info("drivers loaded", "modules", strings.Join(loaded, ","), "took", time.Since(start).Round(time.Millisecond))
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := set.LoadModules(set.Manifest.Unconditional(modules.Early)); err != nil {
				log.Error("filesystem modules", "err", err)
			}
		}()
	}
	// machined's pages come from the compressed squashfs: reading it now, beside the
	// module loads, takes the decompression off the path from exec to machined's start.
	wg.Add(1)
	go func() {
		defer wg.Done()
		readAhead(filepath.Join(newRoot, params.Machined))
	}()
	// The switch deletes the initramfs' files: the loads from it end first.
	wg.Wait()
	log.Info("modules loaded", "took", time.Since(start).Round(time.Millisecond))

	if err := boot.SwitchRoot(newRoot, boot.MovedMounts); err != nil {
		return err
	}
	if err := boot.WritableCopy("/etc", "/run/kiln/etc"); err != nil {
		log.Error("writable /etc", "err", err)
	}
	if err := boot.MountAll("/", []boot.Mount{{Source: "tmpfs", Target: "/var", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"}}); err != nil {
		log.Error("tmpfs /var", "err", err)
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
	return &modules.Set{Manifest: m, Root: root, Loader: modules.Finit{}, Log: log, Parallel: moduleParallel}, nil
}

// moduleParallel is how many modules init inserts at once: enough to keep both vCPUs
// of a small VM busy while one module's init waits.
const moduleParallel = 4

// rootNeeds are the module requests mounting the root squashfs through a loop device
// makes (what the kernel would ask modprobe for).
func rootNeeds() []string {
	var need []string
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		need = append(need, "devname:loop-control")
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(fs), "\tsquashfs\n") {
		need = append(need, "fs-squashfs")
	}
	return need
}

// readAhead reads a file once so its pages are in the page cache; errors do not matter
// (the exec reports them).
func readAhead(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(io.Discard, f)
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

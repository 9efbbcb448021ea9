// Command init is Kiln's PID 1. It runs from the initramfs: mounts the kernel
// filesystems, starts machined from the initramfs (machined waits for the root), loads
// the modules the root mount needs (loop, squashfs), mounts the root squashfs
// read-only through a loop device, binds machined into it, switches into the root, and
// then supervises machined (restart with backoff, orphan reaping) until machined or the
// kernel asks for a reboot or power-off, which it carries out in order. Right after the
// switch it lets machined enter the root (package handoff) and, while machined starts,
// loads STATE's FAT filesystem, the network drivers and the other device drivers (by
// coldplug), marking each step for machined; then it starts a child of itself for the
// remaining filesystems and the late modules, and re-executes itself as the
// supervisor, which adopts machined.
//
// Nothing else runs: there is no shell. Settings come from the kernel command line
// (see internal/cmdline); logs go to /dev/kmsg.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-os/kiln/init/handoff"
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

// driversArg0 is argv[0] of the child the supervising init starts to load the device
// drivers (loadDrivers). Like superviseArg0, the kernel cannot pass it.
const driversArg0 = "kiln-init:drivers"

func run(_ []string) error {
	if os.Args[0] == driversArg0 && os.Getppid() == 1 {
		return loadRemaining()
	}
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

	// machined starts first, from the initramfs when the image put it there: its
	// start, the longest step of a boot under emulation, overlaps the root mount. It
	// enters the root once init has switched (handoff.EarlyEnv).
	sup := machinedSupervisor(con, params, log)
	early := startEarlyMachined(sup, params, log)

	// Only what mounting the root needs loads before the switch (loop and squashfs,
	// unless built in): machined's start is the longest step of a boot under emulation,
	// so it begins as early as it can. The drivers machined needs to reach its
	// configuration and the network load right after it starts (loadDrivers); the
	// devices they are for are found now, beside the root mount.
	start := time.Now()
	var set *modules.Set
	var devices <-chan []string
	if params.Modules {
		var err error
		if set, err = moduleSet("/", release, params, log); err != nil {
			log.Warn("modules: no usable manifest; relying on built-in drivers", "err", err)
		} else if len(set.Manifest.Modules) == 0 {
			// The kernel has every driver built in (generic-amd64's has no module support
			// at all): no devices to match, no loader child to start.
			set = nil
		} else {
			devices = scanDevices(log)
			if err := set.LoadProviders(rootNeeds()...); err != nil {
				log.Error("modules for the root filesystem", "err", err)
			}
		}
	}

	dev, err := boot.MountLoop(params.Root, newRoot, "squashfs", unix.MS_RDONLY|unix.MS_NODEV, "")
	if err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	log.Info("root mounted", "image", params.Root, "dev", dev, "took", time.Since(start).Round(time.Millisecond))
	if early.ready != nil {
		bindEarlyMachined(newRoot+params.Machined, log)
	}

	if err := boot.SwitchRoot(newRoot, boot.MovedMounts); err != nil {
		return err
	}

	// machined starts by now, not after the re-exec: the second phase's runtime start
	// is off its path, and so is the loading of its drivers, which this phase does
	// while machined starts (loadDrivers). The supervising phase adopts machined by the
	// PID passed in its environment. The writable /etc and the tmpfs /var come right
	// after the start: machined touches neither before it has seen a handoff mark, and
	// every mark is made after them (package handoff).
	// Without transparent huge pages for the heap: with THP "always" (Debian's kernels)
	// a touched 2 MiB page costs PID 1 almost half its budget.
	env := append(os.Environ(), "GODEBUG=disablethp=1")
	if early.ready != nil {
		early.rootSwitched(log)
		env = append(env, fmt.Sprintf("%s=%d", machinedPIDEnv, early.pid))
	} else if err := sup.Start(); err != nil {
		log.Error("start machined; the supervisor retries", "err", err)
	} else {
		env = append(env, fmt.Sprintf("%s=%d", machinedPIDEnv, sup.Running()))
	}
	if err := boot.WritableCopy("/etc", "/run/kiln/etc"); err != nil {
		log.Error("writable /etc", "err", err)
	}
	if err := boot.MountAll("/", []boot.Mount{{Source: "tmpfs", Target: "/var", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"}}); err != nil {
		log.Error("tmpfs /var", "err", err)
	}
	if set != nil {
		loadDrivers(set, <-devices, start, log)
		startRemaining(log)
	} else {
		markDriversDone(log)
	}
	// A reboot or power-off asked for during the boot phase is carried out by the
	// supervising phase. Signals that arrive during the exec itself are lost (PID 1
	// without handlers ignores them), except SIGCHLD, which the second phase assumes;
	// that window is a few milliseconds.
	signal.Reset()
	env = append(env, pendingSignalsEnv+"="+drainSignals(sigs))
	if err := unix.Exec("/proc/self/exe", []string{superviseArg0}, env); err != nil {
		return fmt.Errorf("re-exec init for supervision: %w", err)
	}
	return nil
}

// pendingSignalsEnv carries the signals the boot phase received (numbers, comma
// separated) to the supervising phase, which acts on them.
const pendingSignalsEnv = "KILN_INIT_SIGNALS"

// drainSignals returns the signals waiting in sigs as pendingSignalsEnv's value.
func drainSignals(sigs chan os.Signal) string {
	var got []string
	for {
		select {
		case s := <-sigs:
			if n, ok := s.(unix.Signal); ok {
				got = append(got, strconv.Itoa(int(n)))
			}
		default:
			return strings.Join(got, ",")
		}
	}
}

// pendingSignals parses pendingSignalsEnv's value; unknown entries are skipped.
func pendingSignals(v string) []os.Signal {
	var out []os.Signal
	for f := range strings.SplitSeq(v, ",") {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
			out = append(out, unix.Signal(n))
		}
	}
	return out
}

// superviseMachined is init's second phase: supervise machined until shutdown, then
// carry the shutdown out.
func superviseMachined() error {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, supervise.Signals...)
	// Children that died during the exec: their SIGCHLD came before Notify. Then what
	// the boot phase received.
	sigs <- unix.SIGCHLD
	for _, s := range pendingSignals(os.Getenv(pendingSignalsEnv)) {
		select {
		case sigs <- s:
		default: // full: more of the same would change nothing
		}
	}
	os.Unsetenv(pendingSignalsEnv)
	con := boot.OpenConsole()
	params, _ := cmdline.Parse(readFile("/proc/cmdline"))
	log := newLogger(con, params.Debug)
	sup := machinedSupervisor(con, params, log)
	if pid, err := strconv.Atoi(os.Getenv(machinedPIDEnv)); err == nil && pid > 0 {
		sup.Adopt = pid
	}
	os.Unsetenv(machinedPIDEnv)
	action := sup.Run(sigs)
	fmt.Fprintf(con, "kiln-init: %s\n", action)
	if n := supervise.KillAll(5*time.Second, log); n > 0 {
		log.Warn("shutdown: killed processes that ignored SIGTERM")
	}
	return supervise.Finish(action, func() {
		boot.UnmountAll(log)
		boot.DrainConsole(con, 2*time.Second)
	}, log)
}

// machinedPIDEnv carries the PID of the machined the boot phase started to the
// supervising phase.
const machinedPIDEnv = "KILN_INIT_MACHINED_PID"

// machinedSupervisor is the supervisor of machined, the same in both phases.
func machinedSupervisor(con io.Writer, params cmdline.Params, log *slog.Logger) *supervise.Supervisor {
	return &supervise.Supervisor{
		Path: params.Machined,
		// KILN_INIT tells machined it runs under Kiln's init (node mode), also when it
		// starts before init's re-exec renames PID 1. Its heap, like init's, goes
		// without transparent huge pages (Debian's kernels default to "always"), which
		// would count whole 2 MiB pages against its RSS budget.
		Env:         []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "TERM=linux", "KILN_INIT=1", "GODEBUG=disablethp=1"},
		Console:     consoleFile(con),
		Backoff:     supervise.DefaultBackoff(),
		StopTimeout: params.StopTimeout,
		Log:         log.With("component", "supervise"),
	}
}

// earlyMachined is where the image builder puts machined in the initramfs. Init
// starts it before the root mount and binds it over kiln.machined in the root, so
// that the supervisor restarts the same binary from there.
const earlyMachined = "/machined"

// earlyStart is a machined started from the initramfs, waiting for the switch of root.
type earlyStart struct {
	pid   int
	ready *os.File // nil: machined was not started early
}

// startEarlyMachined starts machined from the initramfs (earlyMachined) with the
// handoff descriptors, when the image has it there and kiln.machined is the default.
// Otherwise, or when the start fails, machined starts from the root after the switch.
func startEarlyMachined(sup *supervise.Supervisor, params cmdline.Params, log *slog.Logger) earlyStart {
	if params.Machined != cmdline.DefaultMachined {
		return earlyStart{}
	}
	if _, err := os.Stat(earlyMachined); err != nil {
		return earlyStart{}
	}
	proc, err := os.OpenFile("/proc/1", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		log.Error("start machined before the root mount", "err", err)
		return earlyStart{}
	}
	defer proc.Close()
	r, w, err := os.Pipe()
	if err != nil {
		log.Error("start machined before the root mount", "err", err)
		return earlyStart{}
	}
	defer r.Close()
	first := *sup
	first.Path = earlyMachined
	first.Env = append(slices.Clip(sup.Env), handoff.EarlyEnv+"=1")
	first.ExtraFiles = []*os.File{proc, r} // handoff.EarlyProcFD, handoff.EarlyReadyFD
	if err := first.Start(); err != nil {
		w.Close()
		log.Error("start machined before the root mount; starting it from the root", "err", err)
		return earlyStart{}
	}
	return earlyStart{pid: first.Running(), ready: w}
}

// rootSwitched tells the early machined that the root is in place.
func (e earlyStart) rootSwitched(log *slog.Logger) {
	if _, err := e.ready.Write([]byte{1}); err != nil {
		log.Error("tell machined the root is mounted", "err", err)
	}
	e.ready.Close()
}

// bindEarlyMachined binds the initramfs's machined, read-only, over the file the
// image has at dst (kiln.machined in the new root), which is what later restarts run.
// The binding keeps the binary when the switch frees the initramfs.
func bindEarlyMachined(dst string, log *slog.Logger) {
	if err := unix.Mount(earlyMachined, dst, "", unix.MS_BIND, ""); err != nil {
		log.Error("bind machined into the root; restarts of machined will fail", "err", err)
		return
	}
	if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		log.Error("make the binding of machined read-only", "err", err)
	}
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

func moduleSet(root, release string, params cmdline.Params, log *slog.Logger) (*modules.Set, error) {
	m, err := modules.Read(root + modules.ManifestPath(release))
	if err != nil {
		return nil, err
	}
	loader := modules.Finit{Params: params.ModuleParams}
	return &modules.Set{Manifest: m, Root: root, Loader: loader, Log: log, Parallel: moduleParallel}, nil
}

// moduleParallel is how many modules init inserts at once: two, so that a driver whose
// init waits for its hardware (ahci probing its SATA links) does not hold up the
// others, while machined, starting at the same time, keeps a CPU of a small VM.
const moduleParallel = 2

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

// scanDevices lists the modaliases of the devices present in the background, so that
// the scan overlaps the root mount and the switch; it sends one result. /sys/bus is
// opened first and walked from its descriptor (modules.BusModaliasesDir): the switch
// moves /sys while the scan may still run, and a walk by path would come back short
// (a node then booted without its disk and NIC).
func scanDevices(log *slog.Logger) <-chan []string {
	c := make(chan []string, 1)
	d, err := os.Open("/sys/bus")
	if err != nil {
		log.Error("scan devices", "err", err)
		c <- nil
		return c
	}
	go func() {
		defer d.Close()
		aliases, err := modules.BusModaliasesDir(d)
		if err != nil {
			log.Error("scan devices", "err", err)
		}
		c <- aliases
	}()
	return c
}

// driversNice is the nice value the boot phase inserts drivers with. On a VM with
// few CPUs, machined's start (one thread, CPU-bound under emulation) and the
// insertions compete; machined's start is the longer path, so it goes first and the
// insertions take the CPU time it leaves.
const driversNice = 10

// nicedLoader inserts modules from a thread running at a nice value (per thread on
// Linux), put back to 0 afterwards.
type nicedLoader struct {
	modules.Loader
	nice int
}

func (l nicedLoader) Load(path string) error {
	return atNice(l.nice, func() error { return l.Loader.Load(path) })
}

// atNice runs f on a thread set to a nice value (per thread on Linux; a child forked
// from it inherits the value), put back to 0 afterwards.
func atNice(nice int, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, nice); err == nil {
		defer unix.Setpriority(unix.PRIO_PROCESS, 0, 0)
	}
	return f()
}

// loadDrivers is the boot phase's last step, beside machined's start: it loads what
// a node needs to be reachable, in groups beside each other and beside coldplug,
// which loads the drivers of every device present (aliases, scanned before the root
// mount; a slow one, ahci probing its SATA links, then holds up no group): the FAT
// filesystem of STATE with the hardware random number drivers, and the network
// drivers. It marks each group done for machined (handoff.FATLoaded,
// NetworkDriversLoaded, DriversLoaded). All share the set's parallelism, and a
// module one group is inserting is waited for by the others, not inserted twice.
func loadDrivers(set *modules.Set, aliases []string, start time.Time, log *slog.Logger) {
	log = log.With("component", "drivers")
	set.Loader = nicedLoader{Loader: set.Loader, nice: driversNice}
	early := set.Manifest.Unconditional(modules.Early)
	var wg sync.WaitGroup
	group := func(name, done string, load func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := load(); err != nil {
				log.Error(name, "err", err)
			}
			log.Info(name+" loaded", "took", time.Since(start).Round(time.Millisecond))
			mark(done, log)
		}()
	}
	group("FAT filesystem", handoff.FATLoaded, func() error {
		// The random number drivers first: machined's keys wait for the random pool.
		return errors.Join(set.Load(set.Manifest.EntropyDrivers(aliases)...),
			set.Load(modules.FATModules(early)...))
	})
	group("network drivers", handoff.NetworkDriversLoaded, func() error {
		return set.Load(set.Manifest.NetworkDrivers(aliases)...)
	})
	// The first scan is the one made before the root mount; later rounds look again
	// for devices the drivers loaded so far brought (disks behind virtio_scsi).
	first := true
	scan := func() ([]string, error) {
		if first {
			first = false
			return aliases, nil
		}
		return modules.BusModaliases("/sys/bus")
	}
	loaded, err := set.Coldplug(scan, 4)
	if err != nil {
		log.Error("coldplug", "err", err)
	}
	wg.Wait()
	log.Info("drivers loaded", "modules", strings.Join(loaded, ","), "took", time.Since(start).Round(time.Millisecond))
	// machined waits for the drivers (its disk, its links) first; for the other
	// filesystems when it mounts EPHEMERAL, and for the late modules only when it
	// applies a stored configuration.
	mark(handoff.DriversLoaded, log)
}

// startRemaining starts the child that loads what is not on the path to a reachable
// node (loadRemaining). It is not waited for here: the supervisor's reaper collects
// it, and machined learns the outcome from the marks.
func startRemaining(log *slog.Logger) {
	// The child is init's own binary again: the initramfs copy is deleted, but the
	// running executable stays reachable through /proc/self/exe.
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{driversArg0}
	cmd.Env = []string{"GODEBUG=disablethp=1"}
	if err := startNiced(cmd, remainingNice); err != nil {
		log.Error("start the module loader; filesystems and late modules stay unloaded", "err", err)
		mark(handoff.FilesystemsLoaded, log)
		mark(handoff.ModulesLoaded, log)
		return
	}
	_ = cmd.Process.Release()
}

// remainingNice is the nice value of the child that loads the remaining modules: the
// lowest priority, so that under TCG, where every cycle counts, they slow nothing on
// the way to a reachable node.
const remainingNice = 19

// startNiced starts cmd with a nice value: the child's threads inherit the value of
// the thread that forks it, which is set for the fork and then put back.
func startNiced(cmd *exec.Cmd, nice int) error {
	return atNice(nice, cmd.Start)
}

func markDriversDone(log *slog.Logger) {
	mark(handoff.FATLoaded, log)
	mark(handoff.NetworkDriversLoaded, log)
	mark(handoff.DriversLoaded, log)
	mark(handoff.FilesystemsLoaded, log)
	mark(handoff.ModulesLoaded, log)
}

// mark creates one of the handoff files.
func mark(path string, log *slog.Logger) {
	err := os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		err = os.WriteFile(path, nil, 0o644)
	}
	if err != nil {
		log.Error("mark for machined", "path", path, "err", err)
	}
}

// loadRemaining runs in a child of init at the lowest priority, after the boot phase
// loaded the drivers: it loads one at a time the board's other early filesystems
// (ext4 for EPHEMERAL; handoff.FilesystemsLoaded), then the board's late modules
// (handoff.ModulesLoaded), and exits. Modules come from the root, which holds every
// one; those already loaded are skipped.
func loadRemaining() error {
	debug.SetMemoryLimit(64 << 20)
	start := time.Now()
	con := boot.OpenConsole()
	params, _ := cmdline.Parse(readFile("/proc/cmdline"))
	log := newLogger(con, params.Debug).With("component", "modules")
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	set, err := moduleSet("/", unix.ByteSliceToString(uts.Release[:]), params, log)
	if err != nil {
		log.Warn("modules: no usable manifest; relying on built-in drivers", "err", err)
		mark(handoff.FilesystemsLoaded, log)
		mark(handoff.ModulesLoaded, log)
		return nil
	}
	if err := set.AdoptLoaded("/proc/modules"); err != nil {
		log.Warn("modules loaded by the boot phase", "err", err)
	}
	set.Parallel = 1
	if err := set.LoadModules(set.Manifest.Unconditional(modules.Early)); err != nil {
		log.Error("filesystems", "err", err)
	}
	mark(handoff.FilesystemsLoaded, log)
	log.Info("filesystems loaded", "took", time.Since(start).Round(time.Millisecond))
	if err := set.LoadModules(set.Manifest.Unconditional(modules.Late)); err != nil {
		log.Error("late modules", "err", err)
	}
	mark(handoff.ModulesLoaded, log)
	log.Info("modules loaded", "took", time.Since(start).Round(time.Millisecond))
	return nil
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

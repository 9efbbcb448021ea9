package modules

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Loader inserts one module file into the kernel. Loading a module that is already
// loaded must succeed.
type Loader interface {
	Load(path string) error
}

// Set loads modules from one manifest and remembers what it loaded, so dependencies
// shared by several devices are inserted once. Its methods may be called from several
// goroutines.
type Set struct {
	Manifest *Manifest
	Root     string // the manifest's paths are relative to it ("/" on a node)
	// StageRoots overrides Root for the modules of a stage: init loads late modules
	// from the new root while it is still mounted at /newroot, beside the early ones
	// from the initramfs.
	StageRoots map[string]string
	Loader     Loader
	Log        *slog.Logger
	// Parallel is how many modules are inserted at once, over all calls (1 when
	// zero: one at a time, in order). A module is started only when its dependencies
	// are in: independent ones overlap their decompression, relocation and init, and a
	// driver whose init waits for its hardware (ahci probing its ports) does not hold
	// up the others.
	Parallel int

	mu     sync.Mutex
	sem    chan struct{}
	loaded map[string]bool
	// pending holds the modules being inserted; done closes when the outcome (loaded
	// or failed) is known.
	pending map[string]*inflight
}

type inflight struct {
	done chan struct{}
	err  error
}

// initLocked makes the set's bookkeeping on first use; s.mu is held.
func (s *Set) initLocked() {
	if s.loaded == nil {
		s.loaded = map[string]bool{}
		s.pending = map[string]*inflight{}
		s.sem = make(chan struct{}, max(s.Parallel, 1))
	}
}

// Loaded reports whether the set has loaded the named module.
func (s *Set) Loaded(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded[name]
}

// Load loads the named modules with their dependencies first. It goes on after a
// failure (one broken driver must not stop the boot) and returns all errors joined.
func (s *Set) Load(names ...string) error {
	mods, err := s.Manifest.WithDeps(names...)
	if err != nil {
		return err
	}
	return s.load(mods)
}

// LoadStage loads every module of a stage, dependencies first.
func (s *Set) LoadStage(stage string) error {
	return s.load(s.Manifest.Stage(stage))
}

// LoadModules loads the given manifest modules (which must include their
// dependencies, as Manifest.WithDeps and Manifest.Unconditional return them).
func (s *Set) LoadModules(mods []Module) error { return s.load(mods) }

// LoadProviders loads the modules that provide each name (a request like
// "fs-squashfs" or "devname:loop-control"), with their dependencies. A name nothing in
// the manifest provides is not an error: the kernel may have it built in.
func (s *Set) LoadProviders(names ...string) error {
	var want []string
	for _, n := range names {
		want = append(want, s.Manifest.Providers(n)...)
	}
	if len(want) == 0 {
		return nil
	}
	return s.Load(want...)
}

// root returns the directory the paths of a stage's modules are relative to. It
// reads StageRoots without the lock: callers set it before loading.
func (s *Set) root(stage string) string {
	if r, ok := s.StageRoots[stage]; ok {
		return r
	}
	return s.Root
}

// load inserts mods, each after those of its dependencies that are in the manifest.
// mods is in load order, so every dependency listed in it comes before its user. A
// module another call is inserting is waited for, not inserted twice. A failed module
// is forgotten when its attempt ends, so a later call may try it again.
func (s *Set) load(mods []Module) error {
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	// mine are the attempts this call waits for by module name (its own and those of
	// other calls), theirs those of other calls.
	mine := map[string]*inflight{}
	var theirs []*inflight
	s.mu.Lock()
	s.initLocked()
	sem := s.sem
	for _, mod := range mods {
		if s.loaded[mod.Name] {
			continue
		}
		if f := s.pending[mod.Name]; f != nil {
			mine[mod.Name] = f
			theirs = append(theirs, f)
			continue
		}
		type dep struct {
			name string
			f    *inflight
		}
		var deps []dep
		for _, d := range mod.Depends {
			if f := mine[d]; f != nil {
				deps = append(deps, dep{d, f})
			}
		}
		f := &inflight{done: make(chan struct{})}
		s.pending[mod.Name] = f
		mine[mod.Name] = f

		insert := func() {
			defer close(f.done)
			for _, d := range deps {
				<-d.f.done
				if d.f.err != nil {
					f.err = fmt.Errorf("module %s: not loaded because %s failed", mod.Name, d.name)
					break
				}
			}
			if f.err == nil {
				sem <- struct{}{}
				if err := s.Loader.Load(filepath.Join(s.root(mod.Stage), mod.Path)); err != nil {
					f.err = fmt.Errorf("module %s: %w", mod.Name, err)
				}
				<-sem
			}
			s.mu.Lock()
			delete(s.pending, mod.Name)
			if f.err == nil {
				s.loaded[mod.Name] = true
			}
			s.mu.Unlock()
			if f.err != nil {
				errMu.Lock()
				errs = append(errs, f.err)
				errMu.Unlock()
			} else if s.Log != nil {
				s.Log.Debug("module loaded", "module", mod.Name)
			}
		}
		if s.Parallel <= 1 {
			// One at a time, in order; the lock is not held while loading.
			s.mu.Unlock()
			insert()
			s.mu.Lock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			insert()
		}()
	}
	s.mu.Unlock()
	wg.Wait()
	for _, f := range theirs {
		<-f.done // its error is reported by the call that made the attempt
	}
	return errors.Join(errs...)
}

// Coldplug loads the modules whose aliases match the modaliases that scan returns
// (BusModaliases on a node), all matches of a scan at once. Loading may add
// devices (a bus driver finds what sits behind it: virtio_scsi its disks), so it walks
// again after a walk that loaded something, at most rounds times, matching only
// modaliases not seen before. It returns the modules it loaded, in the order their devices
// were found.
func (s *Set) Coldplug(scan func() ([]string, error), rounds int) ([]string, error) {
	var loaded []string
	var errs []error
	tried := map[string]bool{}
	seen := map[string]bool{}
	for range rounds {
		aliases, err := scan()
		if err != nil {
			return loaded, err
		}
		var want []string
		for _, a := range aliases {
			if seen[a] {
				continue
			}
			seen[a] = true
			for _, name := range s.Manifest.Match(a) {
				if !tried[name] && !s.Loaded(name) {
					tried[name] = true
					want = append(want, name)
				}
			}
		}
		if len(want) == 0 {
			break
		}
		if err := s.Load(want...); err != nil {
			errs = append(errs, err)
		}
		for _, n := range want {
			if s.Loaded(n) {
				loaded = append(loaded, n)
			}
		}
	}
	return loaded, errors.Join(errs...)
}

// BusModaliases returns the distinct modalias strings of the devices on every bus below
// sysBus (normally /sys/bus): sysBus/*/devices/*/modalias. The kernel puts every device a
// driver can bind on a bus, so this finds what a walk of /sys/devices finds at a small
// part of its cost (a walk reads thousands of directories; this a few dozen). Class
// devices (input, which no Kiln module serves) are not included.
func BusModaliases(sysBus string) ([]string, error) {
	d, err := os.Open(sysBus)
	if err != nil {
		return nil, fmt.Errorf("read modaliases: %w", err)
	}
	defer d.Close()
	return BusModaliasesDir(d)
}

// BusModaliasesDir is BusModaliases below an open directory: every path is resolved from
// its descriptor, so the walk goes on when the mount is moved meanwhile (init scans
// while it mounts the root, and switching the root moves /sys).
func BusModaliasesDir(sysBus *os.File) ([]string, error) {
	buses, err := sysBus.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("read modaliases: %w", err)
	}
	byName := func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) }
	slices.SortFunc(buses, byName)
	at := int(sysBus.Fd())
	seen := map[string]bool{}
	var out []string
	for _, b := range buses {
		rel := b.Name() + "/devices"
		fd, err := unix.Openat(at, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		dir := os.NewFile(uintptr(fd), rel)
		devs, err := dir.ReadDir(-1)
		dir.Close()
		if err != nil {
			continue
		}
		slices.SortFunc(devs, byName)
		for _, d := range devs {
			a, err := readAt(at, rel+"/"+d.Name()+"/modalias")
			if err != nil {
				continue // no modalias, or the device went away
			}
			if a != "" && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// readAt reads a sysfs attribute below the directory at and trims it. An attribute
// is at most a page, so one read of a page gets all of it, as os.ReadFile did before
// (a device tree's "of:" modalias lists every compatible string and can be long).
func readAt(at int, rel string) (string, error) {
	fd, err := unix.Openat(at, rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	var buf [4096]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// Modaliases returns the distinct modalias strings of every device below dir (files
// named "modalias"), in walk order. Unreadable entries are skipped: sysfs has files
// that vanish or refuse reads while devices come and go.
func Modaliases(dir string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil
		}
		// Symlinks (subsystem, driver, device links) lead back into the tree: skip.
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if d.Name() != "modalias" || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		a := strings.TrimSpace(string(b))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read modaliases under %s: %w", dir, err)
	}
	return out, nil
}

// AdoptLoaded marks as loaded the modules procModules (normally /proc/modules) lists,
// so a second loader after the switch of root does not insert them again.
func (s *Set) AdoptLoaded(procModules string) error {
	data, err := os.ReadFile(procModules)
	if err != nil {
		return fmt.Errorf("read loaded modules: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for line := range strings.Lines(string(data)) {
		if name, _, ok := strings.Cut(line, " "); ok && name != "" {
			s.loaded[name] = true
		}
	}
	return nil
}

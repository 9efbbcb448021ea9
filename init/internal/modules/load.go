package modules

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Loader inserts one module file into the kernel. Loading a module that is already
// loaded must succeed.
type Loader interface {
	Load(path string) error
}

// Set loads modules from one manifest and remembers what it loaded, so dependencies
// shared by several devices are inserted once.
type Set struct {
	Manifest *Manifest
	Root     string // the manifest's paths are relative to it ("/" on a node)
	Loader   Loader
	Log      *slog.Logger

	loaded map[string]bool
}

// Loaded reports whether the set has loaded the named module.
func (s *Set) Loaded(name string) bool { return s.loaded[name] }

// Load loads the named modules with their dependencies first. It goes on after a
// failure (one broken driver must not stop the boot) and returns all errors joined.
func (s *Set) Load(names ...string) error {
	mods, err := s.Manifest.WithDeps(names...)
	if err != nil {
		return err
	}
	return s.load(mods)
}

// LoadStage loads every module of a stage, in manifest order.
func (s *Set) LoadStage(stage string) error {
	return s.load(s.Manifest.Stage(stage))
}

func (s *Set) load(mods []Module) error {
	if s.loaded == nil {
		s.loaded = map[string]bool{}
	}
	var errs []error
	failed := map[string]bool{}
	for _, mod := range mods {
		if s.loaded[mod.Name] {
			continue
		}
		if dep := firstFailed(mod.Depends, failed); dep != "" {
			failed[mod.Name] = true
			errs = append(errs, fmt.Errorf("module %s: not loaded because %s failed", mod.Name, dep))
			continue
		}
		if err := s.Loader.Load(filepath.Join(s.Root, mod.Path)); err != nil {
			failed[mod.Name] = true
			errs = append(errs, fmt.Errorf("module %s: %w", mod.Name, err))
			continue
		}
		s.loaded[mod.Name] = true
		if s.Log != nil {
			s.Log.Debug("module loaded", "module", mod.Name)
		}
	}
	return errors.Join(errs...)
}

func firstFailed(deps []string, failed map[string]bool) string {
	for _, d := range deps {
		if failed[d] {
			return d
		}
	}
	return ""
}

// Coldplug loads the modules whose aliases match the modaliases of the devices under
// sysDevices (normally /sys/devices), and repeats while loading added modules (a bus
// driver creates new devices), at most rounds times. It returns the modules it loaded.
func (s *Set) Coldplug(sysDevices string, rounds int) ([]string, error) {
	var loaded []string
	var errs []error
	tried := map[string]bool{}
	for range rounds {
		aliases, err := Modaliases(sysDevices)
		if err != nil {
			return loaded, err
		}
		var want []string
		for _, a := range aliases {
			for _, name := range s.Manifest.Match(a) {
				if !tried[name] && !s.loaded[name] {
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
			if s.loaded[n] {
				loaded = append(loaded, n)
			}
		}
	}
	return loaded, errors.Join(errs...)
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

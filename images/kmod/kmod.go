// Package kmod reads kernel module metadata from .ko/.ko.xz files (the ELF .modinfo
// section: name=, depends=, alias=, softdep=) and resolves a requested module set into
// a load-ordered manifest that init uses instead of depmod's modules.dep/modules.alias,
// which Debian's kernel packages do not ship.
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/ulikunitz/xz"
)

// Info is the metadata of one module.
type Info struct {
	Name    string
	Depends []string
	Aliases []string
	// SoftPre are modules to load before this one if present (softdep=pre:).
	SoftPre []string
}

// Normalize spells a module name as the kernel does (dashes become underscores).
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// NameFromPath derives the module name from its file name (usb-storage.ko.xz → usb_storage).
func NameFromPath(p string) string {
	b := path.Base(p)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if strings.HasSuffix(b, ext) {
			return Normalize(strings.TrimSuffix(b, ext))
		}
	}
	return ""
}

// Decompress returns a module file's uncompressed name and contents: a .ko.xz is
// decompressed (to .ko), anything else returned as it is. Images carry modules
// uncompressed: the initramfs and the root squashfs compress them anyway, and the kernel
// then inserts them without its own single-threaded decompression on every boot. The
// module signature sits inside the compressed data and survives.
func Decompress(name string, data []byte) (string, []byte, error) {
	if !strings.HasSuffix(name, ".xz") {
		return name, data, nil
	}
	r, err := xz.NewReader(bytes.NewReader(data))
	if err != nil {
		return "", nil, fmt.Errorf("module %s: %w", name, err)
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return "", nil, fmt.Errorf("module %s: decompress: %w", name, err)
	}
	return strings.TrimSuffix(name, ".xz"), raw, nil
}

// ReadInfo parses the .modinfo section of a module file, decompressing .ko.xz first.
func ReadInfo(name string, data []byte) (Info, error) {
	name, data, err := Decompress(name, data)
	if err != nil {
		return Info{}, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return Info{}, fmt.Errorf("module %s: %w", name, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, fmt.Errorf("module %s: no .modinfo section", name)
	}
	b, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("module %s: read .modinfo: %w", name, err)
	}
	info := ParseModinfo(b)
	if info.Name == "" {
		info.Name = NameFromPath(name)
	}
	return info, nil
}

// ParseModinfo parses NUL-separated key=value records of a .modinfo section.
func ParseModinfo(b []byte) Info {
	var info Info
	for _, rec := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(rec), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			info.Name = Normalize(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					info.Depends = append(info.Depends, Normalize(d))
				}
			}
		case "alias":
			info.Aliases = append(info.Aliases, v)
		case "softdep":
			// "pre: a b post: c"
			pre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						info.SoftPre = append(info.SoftPre, Normalize(w))
					}
				}
			}
		}
	}
	return info
}

// ParseBuiltin reads modules.builtin (one kernel/…/name.ko path per line) into a set of
// module names.
func ParseBuiltin(b []byte) map[string]bool {
	set := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if n := NameFromPath(strings.TrimSpace(line)); n != "" {
			set[n] = true
		}
	}
	return set
}

// Stage says where a module lives and when init loads it.
type Stage string

// Stages.
const (
	Early Stage = "early" // in the initramfs, loaded in order before the root is mounted
	Late  Stage = "late"  // in the root filesystem, loaded by modalias or on demand
)

// Module is one entry of the manifest.
type Module struct {
	Name string `json:"name"`
	// Path is relative to the filesystem root, e.g. lib/modules/<release>/kernel/fs/ext4/ext4.ko.xz.
	Path    string   `json:"path"`
	Stage   Stage    `json:"stage"`
	Depends []string `json:"depends,omitempty"`
	Aliases []string `json:"aliases,omitempty"`
}

// Manifest tells init which modules exist, in load order (every module after its
// dependencies), and which device aliases each serves.
type Manifest struct {
	Kernel  string   `json:"kernel"`
	Modules []Module `json:"modules"`
	// Builtin are requested modules that the kernel has built in (nothing to load).
	Builtin []string `json:"builtin,omitempty"`
}

// ManifestPath is where the manifest sits in the initramfs and the root filesystem.
func ManifestPath(release string) string { return "lib/modules/" + release + "/kiln-modules.txt" }

// Text is the manifest as the images carry it: lines of words separated by spaces,
// which init reads without a JSON decoder (under emulation, decoding the JSON form
// of a whole kernel's manifest took init 55 ms before it could mount the root,
// splitting the text 10 ms).
//
//	# comment
//	kernel RELEASE
//	builtin NAME...
//	module NAME STAGE PATH [depends=NAME,...] [alias=PATTERN]...
//
// Modules are listed in load order. A word holds no white space, which Text checks
// (module names, paths and device alias patterns have none).
func (m *Manifest) Text() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Kiln module manifest: module NAME STAGE PATH [depends=NAME,...] [alias=PATTERN]..., in load order\n")
	bad := func(what, w string) error {
		if w == "" || strings.ContainsAny(w, " \t\r\n") {
			return fmt.Errorf("module manifest: %s %q is empty or has white space", what, w)
		}
		return nil
	}
	if err := bad("kernel release", m.Kernel); err != nil {
		return nil, err
	}
	fmt.Fprintf(&b, "kernel %s\n", m.Kernel)
	if len(m.Builtin) > 0 {
		for _, n := range m.Builtin {
			if err := bad("built-in module", n); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "builtin %s\n", strings.Join(m.Builtin, " "))
	}
	for _, mod := range m.Modules {
		for _, w := range []struct{ what, v string }{{"module name", mod.Name}, {"stage of " + mod.Name, string(mod.Stage)}, {"path of " + mod.Name, mod.Path}} {
			if err := bad(w.what, w.v); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "module %s %s %s", mod.Name, mod.Stage, mod.Path)
		if len(mod.Depends) > 0 {
			for _, d := range mod.Depends {
				if err := bad("dependency of "+mod.Name, d); err != nil {
					return nil, err
				}
				if strings.Contains(d, ",") {
					return nil, fmt.Errorf("module manifest: dependency %q of %s has a comma", d, mod.Name)
				}
			}
			fmt.Fprintf(&b, " depends=%s", strings.Join(mod.Depends, ","))
		}
		for _, a := range mod.Aliases {
			if err := bad("alias of "+mod.Name, a); err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, " alias=%s", a)
		}
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// Source is what Resolve needs to know about the kernel package.
type Source struct {
	Release string
	// Paths maps module name → path of its file, relative to the root.
	Paths map[string]string
	// Builtin is the set of modules built into the kernel.
	Builtin map[string]bool
	// Info returns the metadata of the named module.
	Info func(name string) (Info, error)
}

// Resolve returns the manifest for the early and late module requests. Every dependency
// is added with the stage of its first dependent (early wins); order is deterministic:
// requests in the given order, each after its dependencies (depth first).
func Resolve(src Source, early, late []string) (*Manifest, error) {
	m := &Manifest{Kernel: src.Release}
	index := map[string]int{}
	visiting := map[string]bool{}
	builtin := map[string]bool{}

	var visit func(name string, stage Stage, chain []string, soft bool) error
	visit = func(name string, stage Stage, chain []string, soft bool) error {
		name = Normalize(name)
		if _, ok := index[name]; ok {
			return nil
		}
		if src.Builtin[name] {
			if len(chain) == 0 {
				builtin[name] = true
			}
			return nil
		}
		p, ok := src.Paths[name]
		if !ok {
			if soft {
				return nil
			}
			if len(chain) == 0 {
				return fmt.Errorf("module %s: not in kernel %s (neither a module nor built in)", name, src.Release)
			}
			return fmt.Errorf("module %s (needed by %s): not in kernel %s", name, strings.Join(chain, " → "), src.Release)
		}
		if visiting[name] {
			return fmt.Errorf("module dependency cycle: %s → %s", strings.Join(chain, " → "), name)
		}
		visiting[name] = true
		info, err := src.Info(name)
		if err != nil {
			return err
		}
		next := append(append([]string{}, chain...), name)
		for _, d := range info.SoftPre {
			if err := visit(d, stage, next, true); err != nil {
				return err
			}
		}
		for _, d := range info.Depends {
			if err := visit(d, stage, next, false); err != nil {
				return err
			}
		}
		visiting[name] = false
		aliases := append([]string{}, info.Aliases...)
		sort.Strings(aliases)
		index[name] = len(m.Modules)
		m.Modules = append(m.Modules, Module{Name: name, Path: p, Stage: stage, Depends: info.Depends, Aliases: aliases})
		return nil
	}
	for _, n := range early {
		if err := visit(n, Early, nil, false); err != nil {
			return nil, err
		}
	}
	for _, n := range late {
		if err := visit(n, Late, nil, false); err != nil {
			return nil, err
		}
	}
	for n := range builtin {
		m.Builtin = append(m.Builtin, n)
	}
	sort.Strings(m.Builtin)
	return m, nil
}

// WithDeps returns the named modules and everything they depend on, in load order.
// A name built into the kernel is skipped; one the manifest lacks is an error.
func (m *Manifest) WithDeps(names []string) ([]Module, error) {
	index := map[string]int{}
	for i, mod := range m.Modules {
		index[mod.Name] = i
	}
	builtin := map[string]bool{}
	for _, n := range m.Builtin {
		builtin[n] = true
	}
	want := map[int]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		name = Normalize(name)
		i, ok := index[name]
		if !ok {
			if builtin[name] {
				return nil
			}
			return fmt.Errorf("module %s: not in the manifest", name)
		}
		if want[i] {
			return nil
		}
		want[i] = true
		for _, d := range m.Modules[i].Depends {
			if err := visit(d); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	var out []Module
	for i, mod := range m.Modules {
		if want[i] {
			out = append(out, mod)
		}
	}
	return out, nil
}

// Stage returns the modules of one stage, in load order.
func (m *Manifest) Stage(s Stage) []Module {
	var out []Module
	for _, mod := range m.Modules {
		if mod.Stage == s {
			out = append(out, mod)
		}
	}
	return out
}

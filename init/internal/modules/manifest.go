package modules

import (
	"fmt"
	"os"
	"strings"
)

// Stages, as images/kmod writes them.
const (
	Early = "early" // in the initramfs, loaded before the root is mounted
	Late  = "late"  // in the root filesystem, loaded on demand (coldplug)
)

// Module is one manifest entry, as images/kmod.Module. Init keeps its own copy so PID 1
// does not link the builder's ELF and xz readers (a test checks the two stay
// compatible).
type Module struct {
	Name    string
	Path    string // relative to the filesystem root
	Stage   string
	Depends []string
	Aliases []string
}

// Manifest lists the modules of one kernel in load order.
type Manifest struct {
	Kernel  string
	Modules []Module
	Builtin []string

	index map[string]int
	// byBus indexes alias patterns by their literal bus prefix ("pci", "virtio"); the
	// patterns under "" can match any modalias. Built by check.
	byBus map[string][]aliasRef
}

// aliasRef is one alias pattern of the module at index mod.
type aliasRef struct {
	pattern string
	mod     int
}

// ManifestPath is where the manifest of a kernel release sits below a root.
func ManifestPath(release string) string {
	return "lib/modules/" + release + "/kiln-modules.txt"
}

// Read reads and checks a manifest file.
func Read(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module manifest: %w", err)
	}
	return Parse(b)
}

// Parse reads a manifest in the text form images/kmod writes (kmod.Manifest.Text) and
// checks that every dependency is listed (or built in) before the module that needs
// it. An error names the line.
func Parse(b []byte) (*Manifest, error) {
	var m Manifest
	text := string(b)
	for n := 1; text != ""; n++ {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("module manifest line %d: %s", n, fmt.Sprintf(format, a...))
		}
		switch f[0] {
		case "kernel":
			if len(f) != 2 {
				return nil, bad("want kernel RELEASE")
			}
			m.Kernel = f[1]
		case "builtin":
			m.Builtin = append(m.Builtin, f[1:]...)
		case "module":
			if len(f) < 4 {
				return nil, bad("want module NAME STAGE PATH [depends=NAME,...] [alias=PATTERN]...")
			}
			mod := Module{Name: f[1], Stage: f[2], Path: f[3]}
			for _, attr := range f[4:] {
				key, v, _ := strings.Cut(attr, "=")
				switch {
				case v == "":
					return nil, bad("%s: %q: want depends=NAME,... or alias=PATTERN", mod.Name, attr)
				case key == "depends":
					mod.Depends = append(mod.Depends, strings.Split(v, ",")...)
				case key == "alias":
					mod.Aliases = append(mod.Aliases, v)
				default:
					return nil, bad("%s: unknown attribute %q", mod.Name, key)
				}
			}
			m.Modules = append(m.Modules, mod)
		default:
			return nil, bad("unknown entry %q", f[0])
		}
	}
	if m.Kernel == "" {
		return nil, fmt.Errorf("module manifest: no kernel line")
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) check() error {
	m.index = make(map[string]int, len(m.Modules))
	for i, mod := range m.Modules {
		if mod.Name == "" || mod.Path == "" {
			return fmt.Errorf("module manifest: entry %d: name and path are required", i)
		}
		if _, dup := m.index[mod.Name]; dup {
			return fmt.Errorf("module manifest: %s listed twice", mod.Name)
		}
		m.index[mod.Name] = i
	}
	m.byBus = map[string][]aliasRef{}
	for i, mod := range m.Modules {
		for _, a := range mod.Aliases {
			bus := ""
			if p, _, ok := strings.Cut(a, ":"); ok && !strings.ContainsAny(p, "*?[\\") {
				bus = p
			}
			m.byBus[bus] = append(m.byBus[bus], aliasRef{a, i})
		}
	}
	// A dependency must come before its user. One that is not listed at all is built
	// into the kernel (images/kmod records only requested built-ins).
	for i, mod := range m.Modules {
		for _, d := range mod.Depends {
			if j, ok := m.index[d]; ok && j > i {
				return fmt.Errorf("module manifest: %s depends on %s, which is listed after it", mod.Name, d)
			}
		}
	}
	return nil
}

// Stage returns the modules of a stage in load order.
func (m *Manifest) Stage(stage string) []Module {
	var out []Module
	for _, mod := range m.Modules {
		if mod.Stage == stage {
			out = append(out, mod)
		}
	}
	return out
}

// WithDeps returns the named modules and everything they depend on, in manifest (load)
// order. Built-in names are dropped; an unknown requested name is an error, an unknown
// dependency is taken as built in.
func (m *Manifest) WithDeps(names ...string) ([]Module, error) {
	builtin := map[string]bool{}
	for _, b := range m.Builtin {
		builtin[b] = true
	}
	need := map[int]bool{}
	var visit func(n string, dep bool) error
	visit = func(n string, dep bool) error {
		i, ok := m.index[n]
		if !ok {
			if builtin[n] || dep {
				return nil // built into the kernel
			}
			return fmt.Errorf("module %s is not in the manifest", n)
		}
		if need[i] {
			return nil
		}
		need[i] = true
		for _, d := range m.Modules[i].Depends {
			if err := visit(d, true); err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n, false); err != nil {
			return nil, err
		}
	}
	var out []Module
	for i, mod := range m.Modules {
		if need[i] {
			out = append(out, mod)
		}
	}
	return out, nil
}

// Match returns the names of the modules with an alias pattern matching modalias, in
// manifest order. Only the patterns of the modalias's bus are tried (a pattern whose
// literal prefix is "pci:" cannot match "virtio:…"), which keeps a coldplug of hundreds
// of devices against thousands of patterns cheap under emulation.
func (m *Manifest) Match(modalias string) []string {
	bus := ""
	if p, _, ok := strings.Cut(modalias, ":"); ok {
		bus = p
	}
	hit := map[int]bool{}
	for _, refs := range [][]aliasRef{m.byBus[bus], m.byBus[""]} {
		for _, r := range refs {
			if !hit[r.mod] && Glob(r.pattern, modalias) {
				hit[r.mod] = true
			}
		}
	}
	if len(hit) == 0 {
		return nil
	}
	var out []string
	for i, mod := range m.Modules {
		if hit[i] {
			out = append(out, mod.Name)
		}
	}
	return out
}

// EntropyDrivers returns the names of the hardware random number drivers
// (drivers/char/hw_random) whose aliases match one of modaliases. Loading them early
// lets the kernel's random pool initialise before programs block on getrandom(2):
// under emulation, without a hardware source, that wait lasts seconds.
func (m *Manifest) EntropyDrivers(modaliases []string) []string {
	return m.driversUnder(modaliases, "/char/hw_random/")
}

// NetworkDrivers returns the names of the network device drivers (modules under
// kernel/drivers/net) whose aliases match one of modaliases.
func (m *Manifest) NetworkDrivers(modaliases []string) []string {
	return m.driversUnder(modaliases, "/drivers/net/")
}

// driversUnder returns, in the order modaliases match them, the modules whose path
// contains dir and whose aliases match one of modaliases.
func (m *Manifest) driversUnder(modaliases []string, dir string) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range modaliases {
		for _, n := range m.Match(a) {
			i, ok := m.index[n]
			if ok && !seen[n] && strings.Contains(m.Modules[i].Path, dir) {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

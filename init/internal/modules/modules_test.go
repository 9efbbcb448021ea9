package modules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kiln-os/kiln/images/kmod"
)

func TestGlob(t *testing.T) {
	for _, tt := range []struct {
		pattern, name string
		want          bool
	}{
		{"virtio:d00000002v*", "virtio:d00000002v00001AF4", true},
		{"virtio:d00000002v*", "virtio:d00000001v00001AF4", false},
		{"pci:v00001AF4d00001041sv*sd*bc*sc*i*", "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00", true},
		{"pci:v00008086d*sv*sd*bc01sc06i01*", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", true},
		{"usb:v05ACp021[0-9]d*", "usb:v05ACp0215d0100", true},
		{"usb:v05ACp021[0-9]d*", "usb:v05ACp021Ad0100", false},
		{"usb:v*p*d*dc*dsc*dp*ic08isc0[!5]*", "usb:v1234p5678d0100dc00dsc00dp00ic08isc06ip50in00", true},
		{"usb:v*p*d*dc*dsc*dp*ic08isc0[!5]*", "usb:v1234p5678d0100dc00dsc00dp00ic08isc05ip50in00", false},
		{"of:N*T*Cbrcm,bcm2835-sdhci", "of:NmmcT(null)Cbrcm,bcm2835-sdhci", true},
		{"a*b*c", "a/x/b/y/c", true}, // '*' crosses '/', unlike path.Match
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"a[bc", "ab", false}, // unclosed class matches nothing
		{`a\*`, "a*", true},
		{"acpi*:PNP0A03:*", "acpi:PNP0A03:", true},
		{"*x*x*x*y", "xxxxxxxxxxxxxxxxxxxxxxxx", false},
	} {
		if got := Glob(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

const testManifest = `kernel 6.12.95+deb12-amd64
builtin virtio
module crc16 early lib/modules/r/crc16.ko.xz
module mbcache early lib/modules/r/mbcache.ko.xz
module jbd2 early lib/modules/r/jbd2.ko.xz
module ext4 early lib/modules/r/ext4.ko.xz depends=crc16,mbcache,jbd2 alias=fs-ext4
module virtio_blk early lib/modules/r/virtio_blk.ko.xz depends=virtio alias=virtio:d00000002v*
module failover late lib/modules/r/failover.ko.xz
module net_failover late lib/modules/r/net_failover.ko.xz depends=failover
module virtio_net late lib/modules/r/virtio_net.ko.xz depends=net_failover alias=virtio:d00000001v*
module virtio_pci_ext late lib/modules/r/virtio_pci_ext.ko.xz alias=pci:v00001AF4d*sv*sd*bc*sc*i*
`

func TestParseManifest(t *testing.T) {
	m, err := Parse([]byte(testManifest))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var early []string
	for _, mod := range m.Stage(Early) {
		early = append(early, mod.Name)
	}
	if diff := cmp.Diff([]string{"crc16", "mbcache", "jbd2", "ext4", "virtio_blk"}, early); diff != "" {
		t.Errorf("Stage(early) (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		name, text, want string
	}{
		{"dependency after user", "kernel r\nmodule a early a.ko depends=b\nmodule b early b.ko\n", "a depends on b, which is listed after it"},
		{"duplicate", "kernel r\nmodule a early a.ko\nmodule a early a.ko\n", "a listed twice"},
		{"no path", "kernel r\n\nmodule a early\n", "line 3: want module NAME STAGE PATH"},
		{"empty attribute", "kernel r\nmodule a early a.ko alias=\n", `line 2: a: "alias=": want depends=NAME,... or alias=PATTERN`},
		{"unknown attribute", "kernel r\nmodule a early a.ko soft=b\n", `line 2: a: unknown attribute "soft"`},
		{"unknown entry", "# comment\nkernel r\nmodules a\n", `line 3: unknown entry "modules"`},
		{"no kernel", "module a early a.ko\n", "no kernel line"},
		{"JSON", `{"kernel": "r"}`, `line 1: unknown entry "{\"kernel\":"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.text)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %v, want error containing %q", tt.text, err, tt.want)
			}
		})
	}
}

func TestWithDepsAndMatch(t *testing.T) {
	m, err := Parse([]byte(testManifest))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		names   []string
		want    []string
		wantErr string
	}{
		{[]string{"virtio_net"}, []string{"failover", "net_failover", "virtio_net"}, ""},
		{[]string{"ext4", "crc16"}, []string{"crc16", "mbcache", "jbd2", "ext4"}, ""},
		{[]string{"virtio_blk"}, []string{"virtio_blk"}, ""}, // virtio is built in
		{[]string{"virtio"}, nil, ""},
		{[]string{"nope"}, nil, "module nope is not in the manifest"},
	} {
		mods, err := m.WithDeps(tt.names...)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("WithDeps(%q) error = %v, want %q", tt.names, err, tt.wantErr)
			}
			continue
		}
		var got []string
		for _, mod := range mods {
			got = append(got, mod.Name)
		}
		if err != nil || !cmp.Equal(got, tt.want, cmpopts.EquateEmpty()) {
			t.Errorf("WithDeps(%q) = %q, %v, want %q", tt.names, got, err, tt.want)
		}
	}
	if got := m.Match("virtio:d00000001v00001AF4"); !cmp.Equal(got, []string{"virtio_net"}) {
		t.Errorf("Match(virtio net) = %q", got)
	}
	if got := m.Match("platform:serial8250"); got != nil {
		t.Errorf("Match(serial8250) = %q, want none", got)
	}
}

// fakeLoader records loads; loading a path runs its hook (e.g. a bus driver that
// makes new devices appear) and fails for paths in fail.
type fakeLoader struct {
	loads []string
	fail  map[string]bool
	hooks map[string]func()
}

func (f *fakeLoader) Load(path string) error {
	name := strings.TrimSuffix(filepath.Base(path), ".ko.xz")
	f.loads = append(f.loads, name)
	if f.fail[name] {
		return errors.New("Exec format error")
	}
	if h := f.hooks[name]; h != nil {
		h()
	}
	return nil
}

func TestSetLoad(t *testing.T) {
	m, err := Parse([]byte(testManifest))
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLoader{fail: map[string]bool{"mbcache": true}}
	s := &Set{Manifest: m, Root: "/", Loader: fl}
	err = s.LoadStage(Early)
	if err == nil || !strings.Contains(err.Error(), "module ext4: not loaded because mbcache failed") {
		t.Errorf("LoadStage error = %v, want ext4 skipped after mbcache", err)
	}
	if diff := cmp.Diff([]string{"crc16", "mbcache", "jbd2", "virtio_blk"}, fl.loads); diff != "" {
		t.Errorf("loads (-want +got):\n%s", diff)
	}
	fl.loads = nil
	if err := s.Load("virtio_blk", "virtio_net"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"failover", "net_failover", "virtio_net"}, fl.loads); diff != "" {
		t.Errorf("second load, already loaded ones skipped (-want +got):\n%s", diff)
	}
}

func writeAlias(t *testing.T, dir, rel, alias string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "modalias"), []byte(alias+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
}

func TestColdplug(t *testing.T) {
	m, err := Parse([]byte(testManifest))
	if err != nil {
		t.Fatal(err)
	}
	sys := t.TempDir()
	writeAlias(t, sys, "pci0000:00/0000:00:02.0", "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00")
	writeAlias(t, sys, "platform/serial8250", "platform:serial8250")
	writeAlias(t, sys, "platform/serial8250/again", "platform:serial8250")
	// A symlink loop like sysfs's subsystem links must not be followed.
	if err := os.Symlink(sys, filepath.Join(sys, "platform", "subsystem")); err != nil {
		t.Fatal(err)
	}
	fl := &fakeLoader{hooks: map[string]func(){
		// The PCI driver brings up the virtio devices behind it.
		"virtio_pci_ext": func() {
			writeAlias(t, sys, "pci0000:00/0000:00:02.0/virtio0", "virtio:d00000001v00001AF4")
			writeAlias(t, sys, "pci0000:00/0000:00:03.0/virtio1", "virtio:d00000002v00001AF4")
		},
	}}
	s := &Set{Manifest: m, Root: "/", Loader: fl}
	got, err := s.Coldplug(func() ([]string, error) { return Modaliases(sys) }, 5)
	if err != nil {
		t.Fatalf("Coldplug: %v", err)
	}
	if diff := cmp.Diff([]string{"virtio_pci_ext", "virtio_net", "virtio_blk"}, got); diff != "" {
		t.Errorf("Coldplug loaded (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"virtio_pci_ext", "failover", "net_failover", "virtio_net", "virtio_blk"}, fl.loads, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("loads (-want +got):\n%s", diff)
	}
	as, err := Modaliases(sys)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(as, " "), "platform:serial8250"); n != 1 {
		t.Errorf("Modaliases lists platform:serial8250 %d times, want once: %q", n, as)
	}
}

// TestKmodCompat writes a manifest with the image builder's types and reads it back
// with init's: the two copies of the format must not drift apart.
func TestKmodCompat(t *testing.T) {
	src := kmod.Source{
		Release: "6.12.95+deb12-amd64",
		Paths: map[string]string{
			"jbd2": "lib/modules/6.12.95+deb12-amd64/kernel/fs/jbd2/jbd2.ko.xz",
			"ext4": "lib/modules/6.12.95+deb12-amd64/kernel/fs/ext4/ext4.ko.xz",
			"loop": "lib/modules/6.12.95+deb12-amd64/kernel/drivers/block/loop.ko.xz",
		},
		Builtin: map[string]bool{"crc16": true},
		Info: func(name string) (kmod.Info, error) {
			switch name {
			case "ext4":
				return kmod.Info{Name: "ext4", Depends: []string{"jbd2", "crc16"}, Aliases: []string{"fs-ext4"}}, nil
			case "loop":
				return kmod.Info{Name: "loop", Aliases: []string{"devname:loop-control", "block-major-7-*"}}, nil
			}
			return kmod.Info{Name: name}, nil
		},
	}
	km, err := kmod.Resolve(src, []string{"ext4"}, []string{"loop"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := km.Text()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ManifestPath(src.Release), kmod.ManifestPath(src.Release); got != want {
		t.Errorf("ManifestPath = %q, images/kmod writes %q", got, want)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(kmod manifest): %v\n%s", err, b)
	}
	var want []Module
	for _, km := range km.Modules {
		want = append(want, Module{Name: km.Name, Path: km.Path, Stage: string(km.Stage), Depends: km.Depends, Aliases: km.Aliases})
	}
	if diff := cmp.Diff(want, m.Modules, cmpopts.EquateEmpty()); diff != "" || m.Kernel != km.Kernel || !cmp.Equal(m.Builtin, km.Builtin, cmpopts.EquateEmpty()) {
		t.Errorf("Parse(Text()) modules (-kmod +init):\n%s\nkernel %q, builtin %q; kmod wrote kernel %q, builtin %q", diff, m.Kernel, m.Builtin, km.Kernel, km.Builtin)
	}
	mods, err := m.WithDeps("ext4")
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 2 || mods[0].Name != "jbd2" || mods[1].Stage != Early || mods[1].Path != src.Paths["ext4"] {
		t.Errorf("WithDeps(ext4) = %+v", mods)
	}
	if got := m.Match("block-major-7-0"); !cmp.Equal(got, []string{"loop"}) || m.Stage(Late)[0].Name != "loop" {
		t.Errorf("Match(block-major-7-0) = %q, late = %+v", got, m.Stage(Late))
	}
}

// planManifest is shaped like generic-amd64's: storage drivers with their helpers,
// filesystems, a device-mapper target without aliases.
const planManifest = `kernel r
module virtio_blk early m/virtio_blk.ko.xz alias=virtio:d00000002v*
module scsi_common early m/scsi_common.ko.xz
module scsi_mod early m/scsi_mod.ko.xz depends=scsi_common
module libata early m/libata.ko.xz depends=scsi_mod,scsi_common
module ahci early m/ahci.ko.xz depends=libata alias=pci:v*d*sv*sd*bc01sc06i01*
module sd_mod early m/sd_mod.ko.xz depends=scsi_mod alias=scsi:t-0x00*
module loop early m/loop.ko.xz alias=block-major-7-* alias=devname:loop-control
module squashfs early m/squashfs.ko.xz alias=fs-squashfs
module fat early m/kernel/fs/fat/fat.ko.xz
module vfat early m/kernel/fs/fat/vfat.ko.xz depends=fat alias=fs-vfat
module nls_cp437 early m/kernel/fs/nls/nls_cp437.ko.xz
module crc32c_generic early m/crc32c_generic.ko.xz alias=crypto-crc32c alias=crc32c
module acpi_thing early m/acpi_thing.ko.xz alias=acpi*:PNP0C0A:*
module bridge late m/bridge.ko.xz alias=rtnl-link-bridge
`

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestUnconditionalAndProviders(t *testing.T) {
	m, err := Parse([]byte(planManifest))
	if err != nil {
		t.Fatal(err)
	}
	// Drivers and the helpers only drivers use wait for a device; filesystems, loop and
	// crc32c load anyway; late modules are never unconditional.
	want := []string{"loop", "squashfs", "fat", "vfat", "nls_cp437", "crc32c_generic"}
	if diff := cmp.Diff(want, names(m.Unconditional(Early))); diff != "" {
		t.Errorf("Unconditional(early) (-want +got):\n%s", diff)
	}
	// STATE's FAT comes out of the early list ahead of the rest (crc32c_generic and
	// the other filesystems wait).
	if diff := cmp.Diff([]string{"fat", "vfat", "nls_cp437"}, FATModules(m.Unconditional(Early))); diff != "" {
		t.Errorf("FATModules (-want +got):\n%s", diff)
	}
	if got := m.Unconditional(Late); len(got) != 1 || got[0].Name != "bridge" {
		t.Errorf("Unconditional(late) = %q, want [bridge] (no device alias, nothing depends on it)", names(got))
	}
	for _, tt := range []struct {
		mod  string
		want bool
	}{
		{"virtio_blk", true}, {"ahci", true}, {"sd_mod", true}, {"acpi_thing", true},
		{"loop", false}, {"vfat", false}, {"crc32c_generic", false}, {"scsi_mod", false}, {"bridge", false},
	} {
		i := m.index[tt.mod]
		if got := DeviceBound(m.Modules[i]); got != tt.want {
			t.Errorf("DeviceBound(%s) = %v, want %v", tt.mod, got, tt.want)
		}
	}
	for _, tt := range []struct {
		name string
		want []string
	}{
		{"fs-squashfs", []string{"squashfs"}},
		{"devname:loop-control", []string{"loop"}},
		{"block-major-7-0", []string{"loop"}},
		{"fs-btrfs", nil},
	} {
		if got := m.Providers(tt.name); !cmp.Equal(got, tt.want, cmpopts.EquateEmpty()) {
			t.Errorf("Providers(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
	// The bus index must not hide patterns whose bus part is itself a pattern.
	for alias, want := range map[string][]string{
		"acpi:PNP0C0A:": {"acpi_thing"},
		"pci:v00008086d00002922sv1sd2bc01sc06i01": {"ahci"},
		"virtio:d00000002v00001AF4":               {"virtio_blk"},
		"scsi:t-0x00":                             {"sd_mod"},
		"platform:serial8250":                     nil,
	} {
		if got := m.Match(alias); !cmp.Equal(got, want, cmpopts.EquateEmpty()) {
			t.Errorf("Match(%q) = %q, want %q", alias, got, want)
		}
	}
}

func TestLoadProviders(t *testing.T) {
	m, err := Parse([]byte(planManifest))
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLoader{}
	s := &Set{Manifest: m, Root: "/", Loader: fl}
	if err := s.LoadProviders("devname:loop-control", "fs-squashfs", "fs-btrfs"); err != nil {
		t.Fatalf("LoadProviders: %v", err)
	}
	if diff := cmp.Diff([]string{"loop", "squashfs"}, fl.loads); diff != "" {
		t.Errorf("loads (-want +got):\n%s", diff)
	}
}

// orderLoader checks, at each insert, that the module's dependencies are in already,
// and counts how many inserts overlap.
type orderLoader struct {
	t    *testing.T
	m    *Manifest
	mu   sync.Mutex
	in   map[string]bool
	runs int
	peak int
	gate chan struct{} // closed when enough inserts overlap (or never, for one at a time)
	want int
	fail map[string]bool
}

func (l *orderLoader) Load(path string) error {
	name := strings.TrimSuffix(filepath.Base(path), ".ko.xz")
	l.mu.Lock()
	for _, d := range l.m.Modules[l.m.index[name]].Depends {
		if _, listed := l.m.index[d]; listed && !l.in[d] {
			l.t.Errorf("%s inserted before its dependency %s", name, d)
		}
	}
	l.runs++
	l.peak = max(l.peak, l.runs)
	if l.runs >= l.want && l.gate != nil {
		select {
		case <-l.gate:
		default:
			close(l.gate)
		}
	}
	l.mu.Unlock()
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-time.After(2 * time.Second): // hang protection: fewer overlap than wanted
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs--
	if l.fail[name] {
		return errors.New("Exec format error")
	}
	l.in[name] = true
	return nil
}

func TestLoadParallel(t *testing.T) {
	m, err := Parse([]byte(planManifest))
	if err != nil {
		t.Fatal(err)
	}
	l := &orderLoader{t: t, m: m, in: map[string]bool{}, gate: make(chan struct{}), want: 3, fail: map[string]bool{"scsi_mod": true}}
	s := &Set{Manifest: m, Root: "/", Loader: l, Parallel: 3}
	// Two callers at once, sharing scsi_common: each module is inserted once, after its
	// dependencies; the failed scsi_mod keeps its users out.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, set := range [][]Module{m.Unconditional(Early), m.Stage(Early)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.LoadModules(set)
		}()
	}
	wg.Wait()
	if errs[0] != nil {
		t.Errorf("LoadModules(unconditional) = %v", errs[0])
	}
	joined := errors.Join(errs...)
	for _, want := range []string{"module scsi_mod: Exec format error", "module libata: not loaded because scsi_mod failed", "module sd_mod: not loaded because scsi_mod failed"} {
		if joined == nil || !strings.Contains(joined.Error(), want) {
			t.Errorf("errors = %v, want one containing %q", joined, want)
		}
	}
	if l.peak < 3 {
		t.Errorf("at most %d inserts overlapped, want 3 (Parallel)", l.peak)
	}
	if l.peak > 3 {
		t.Errorf("%d inserts overlapped, more than Parallel=3", l.peak)
	}
	for _, n := range []string{"virtio_blk", "scsi_common", "vfat", "fat", "acpi_thing"} {
		if !s.Loaded(n) {
			t.Errorf("Loaded(%s) = false after the loads", n)
		}
	}
	if s.Loaded("ahci") || s.Loaded("scsi_mod") {
		t.Errorf("ahci or scsi_mod loaded although scsi_mod failed")
	}
	// A failed module is tried again by a later call.
	delete(l.fail, "scsi_mod")
	l.gate = nil
	if err := s.Load("ahci"); err != nil {
		t.Errorf("Load(ahci) after the fix = %v", err)
	}
}

func TestBusModaliases(t *testing.T) {
	sys := t.TempDir()
	devs := filepath.Join(sys, "devices")
	writeAlias(t, devs, "pci0000:00/0000:00:02.0", "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00")
	writeAlias(t, devs, "pci0000:00/0000:00:02.0/virtio0", "virtio:d00000001v00001AF4")
	writeAlias(t, devs, "pci0000:00/0000:00:03.0/virtio1", "virtio:d00000001v00001AF4") // a second NIC
	if err := os.MkdirAll(filepath.Join(devs, "platform", "nomodalias"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := func(bus, name, target string) {
		t.Helper()
		dir := filepath.Join(sys, "bus", bus, "devices")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// Relative, as sysfs makes them.
		if err := os.Symlink(filepath.Join("..", "..", "..", "devices", target), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	link("pci", "0000:00:02.0", "pci0000:00/0000:00:02.0")
	link("virtio", "virtio0", "pci0000:00/0000:00:02.0/virtio0")
	link("virtio", "virtio1", "pci0000:00/0000:00:03.0/virtio1")
	link("platform", "nomodalias", "platform/nomodalias")
	if err := os.MkdirAll(filepath.Join(sys, "bus", "empty"), 0o755); err != nil { // no devices/
		t.Fatal(err)
	}
	got, err := BusModaliases(filepath.Join(sys, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00", "virtio:d00000001v00001AF4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BusModaliases (-want +got):\n%s", diff)
	}
	if _, err := BusModaliases(filepath.Join(sys, "nope")); err == nil {
		t.Error("BusModaliases(missing dir) = nil error")
	}

	// Opened before, walked after the tree moved (init scans while it switches the
	// root, which moves /sys): nothing is lost.
	d, err := os.Open(filepath.Join(sys, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	moved := sys + "-moved"
	if err := os.Rename(sys, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Rename(moved, sys) })
	got, err = BusModaliasesDir(d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BusModaliasesDir after a move (-want +got):\n%s", diff)
	}
}

func TestCompressed(t *testing.T) {
	for _, tt := range []struct {
		head []byte
		want bool
	}{
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, true},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0}, true},
		{[]byte{0x1f, 0x8b, 8, 0, 0, 0}, true},
		{[]byte{0x7f, 'E', 'L', 'F', 2, 1}, false},
		{[]byte{0xfd, '7'}, false},
		{nil, false},
	} {
		if got := Compressed(tt.head); got != tt.want {
			t.Errorf("Compressed(% x) = %v, want %v", tt.head, got, tt.want)
		}
	}
}

// pathLoader records the paths it is asked to load.
type pathLoader struct {
	mu    sync.Mutex
	paths []string
}

func (l *pathLoader) Load(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.paths = append(l.paths, path)
	return nil
}

func TestStageRoots(t *testing.T) {
	m, err := Parse([]byte(testManifest))
	if err != nil {
		t.Fatal(err)
	}
	l := &pathLoader{}
	s := &Set{Manifest: m, Root: "/", Loader: l, StageRoots: map[string]string{Late: "/newroot"}}
	if err := s.Load("virtio_net", "virtio_blk"); err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/modules/r/virtio_blk.ko.xz", "/newroot/lib/modules/r/failover.ko.xz", "/newroot/lib/modules/r/net_failover.ko.xz", "/newroot/lib/modules/r/virtio_net.ko.xz"}
	if diff := cmp.Diff(want, l.paths); diff != "" {
		t.Errorf("loaded paths (-want +got):\n%s", diff)
	}
}

func TestAdoptLoaded(t *testing.T) {
	m, err := Parse([]byte(testManifest))
	if err != nil {
		t.Fatal(err)
	}
	procModules := filepath.Join(t.TempDir(), "modules")
	// /proc/modules as the kernel writes it: name, size, users, dependents, state, address.
	if err := os.WriteFile(procModules, []byte("crc16 12288 1 ext4, Live 0x0000000000000000\njbd2 196608 1 ext4, Live 0x0000000000000000\nmbcache 16384 1 ext4, Live 0x0000000000000000\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	fl := &fakeLoader{}
	s := &Set{Manifest: m, Root: "/", Loader: fl}
	if err := s.AdoptLoaded(procModules); err != nil {
		t.Fatal(err)
	}
	if err := s.Load("ext4"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ext4"}, fl.loads); diff != "" {
		t.Errorf("loads after adopting crc16, jbd2, mbcache (-want +got):\n%s", diff)
	}
	if err := s.AdoptLoaded(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("AdoptLoaded of a missing file: no error")
	}
}

func TestDriverClasses(t *testing.T) {
	m, err := Parse([]byte(`kernel 6.1.0-test
module virtio_rng late lib/modules/6.1.0-test/kernel/drivers/char/hw_random/virtio-rng.ko.xz alias=virtio:d00000004v*
module virtio_net late lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko.xz alias=virtio:d00000001v*
`))
	if err != nil {
		t.Fatal(err)
	}
	got := m.EntropyDrivers([]string{"virtio:d00000001v00001AF4", "virtio:d00000004v00001AF4", "virtio:d00000004v00001AF4"})
	if diff := cmp.Diff([]string{"virtio_rng"}, got); diff != "" {
		t.Errorf("EntropyDrivers (-want +got):\n%s", diff)
	}
	if got := m.EntropyDrivers([]string{"virtio:d00000001v00001AF4"}); len(got) != 0 {
		t.Errorf("EntropyDrivers without an RNG device = %q, want none", got)
	}
	got = m.NetworkDrivers([]string{"virtio:d00000004v00001AF4", "virtio:d00000001v00001AF4"})
	if diff := cmp.Diff([]string{"virtio_net"}, got); diff != "" {
		t.Errorf("NetworkDrivers (-want +got):\n%s", diff)
	}
	if got := m.NetworkDrivers([]string{"virtio:d00000004v00001AF4"}); len(got) != 0 {
		t.Errorf("NetworkDrivers without a NIC = %q, want none", got)
	}
}

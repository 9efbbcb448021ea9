package modules

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

const testManifest = `{
  "kernel": "6.12.95+deb12-amd64",
  "modules": [
    {"name": "crc16", "path": "lib/modules/r/crc16.ko.xz", "stage": "early"},
    {"name": "mbcache", "path": "lib/modules/r/mbcache.ko.xz", "stage": "early"},
    {"name": "jbd2", "path": "lib/modules/r/jbd2.ko.xz", "stage": "early"},
    {"name": "ext4", "path": "lib/modules/r/ext4.ko.xz", "stage": "early", "depends": ["crc16", "mbcache", "jbd2"], "aliases": ["fs-ext4"]},
    {"name": "virtio_blk", "path": "lib/modules/r/virtio_blk.ko.xz", "stage": "early", "depends": ["virtio"], "aliases": ["virtio:d00000002v*"]},
    {"name": "failover", "path": "lib/modules/r/failover.ko.xz", "stage": "late"},
    {"name": "net_failover", "path": "lib/modules/r/net_failover.ko.xz", "stage": "late", "depends": ["failover"]},
    {"name": "virtio_net", "path": "lib/modules/r/virtio_net.ko.xz", "stage": "late", "depends": ["net_failover"], "aliases": ["virtio:d00000001v*"]},
    {"name": "virtio_pci_ext", "path": "lib/modules/r/virtio_pci_ext.ko.xz", "stage": "late", "aliases": ["pci:v00001AF4d*sv*sd*bc*sc*i*"]}
  ],
  "builtin": ["virtio"]
}`

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
		name, json, want string
	}{
		{"dependency after user", `{"modules":[{"name":"a","path":"a.ko","depends":["b"]},{"name":"b","path":"b.ko"}]}`, "a depends on b, which is listed after it"},
		{"duplicate", `{"modules":[{"name":"a","path":"a.ko"},{"name":"a","path":"a.ko"}]}`, "a listed twice"},
		{"no path", `{"modules":[{"name":"a"}]}`, "entry 0: name and path are required"},
		{"not json", `{`, "module manifest"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.json)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%s) = %v, want error containing %q", tt.json, err, tt.want)
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
	got, err := s.Coldplug(sys, 5)
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
	b, err := json.Marshal(km)
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

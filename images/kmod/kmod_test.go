package kmod

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseModinfo(t *testing.T) {
	raw := "license=GPL\x00depends=crc16,mbcache,jbd2\x00softdep=pre: crc32c post: foo\x00" +
		"alias=fs-ext4\x00alias=ext3\x00name=ext4\x00vermagic=6.12\x00"
	got := ParseModinfo([]byte(raw))
	want := Info{Name: "ext4", Depends: []string{"crc16", "mbcache", "jbd2"},
		Aliases: []string{"fs-ext4", "ext3"}, SoftPre: []string{"crc32c"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseModinfo mismatch (-want +got):\n%s", diff)
	}
}

func TestNameFromPath(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/usb/storage/usb-storage.ko.xz": "usb_storage",
		"kernel/fs/ext4/ext4.ko":                       "ext4",
		"modules.order":                                "",
	} {
		if got := NameFromPath(in); got != want {
			t.Errorf("NameFromPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func fakeSource() Source {
	infos := map[string]Info{
		"ext4":           {Name: "ext4", Depends: []string{"crc16", "mbcache", "jbd2"}, SoftPre: []string{"crc32c_generic", "absent"}, Aliases: []string{"fs-ext4"}},
		"crc16":          {Name: "crc16"},
		"mbcache":        {Name: "mbcache"},
		"jbd2":           {Name: "jbd2", Depends: []string{"crc16"}},
		"crc32c_generic": {Name: "crc32c_generic", Aliases: []string{"crypto-crc32c", "crc32c"}},
		"virtio_net":     {Name: "virtio_net", Depends: []string{"net_failover"}, Aliases: []string{"virtio:d00000001v*"}},
		"net_failover":   {Name: "net_failover", Depends: []string{"failover"}},
		"failover":       {Name: "failover"},
		"broken":         {Name: "broken", Depends: []string{"nowhere"}},
		"cyc_a":          {Name: "cyc_a", Depends: []string{"cyc_b"}},
		"cyc_b":          {Name: "cyc_b", Depends: []string{"cyc_a"}},
	}
	paths := map[string]string{}
	for n := range infos {
		paths[n] = "lib/modules/r/kernel/" + n + ".ko.xz"
	}
	return Source{
		Release: "r",
		Paths:   paths,
		Builtin: map[string]bool{"virtio_blk": true},
		Info: func(n string) (Info, error) {
			i, ok := infos[n]
			if !ok {
				return Info{}, fmt.Errorf("no %s", n)
			}
			return i, nil
		},
	}
}

func TestResolve(t *testing.T) {
	m, err := Resolve(fakeSource(), []string{"virtio-blk", "ext4"}, []string{"virtio_net", "jbd2"})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, mod := range m.Modules {
		order = append(order, string(mod.Stage)+":"+mod.Name)
	}
	want := []string{"early:crc32c_generic", "early:crc16", "early:mbcache", "early:jbd2", "early:ext4",
		"late:failover", "late:net_failover", "late:virtio_net"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("Resolve order mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"virtio_blk"}, m.Builtin); diff != "" {
		t.Errorf("Builtin mismatch (-want +got):\n%s", diff)
	}
	if got := len(m.Stage(Early)); got != 5 {
		t.Errorf("len(Stage(Early)) = %d, want 5", got)
	}
}

func TestWithDeps(t *testing.T) {
	m, err := Resolve(fakeSource(), []string{"virtio-blk", "ext4"}, []string{"virtio_net"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	mods, err := m.WithDeps([]string{"virtio_net", "virtio_blk", "jbd2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range mods {
		got = append(got, mod.Name)
	}
	want := []string{"crc16", "jbd2", "failover", "net_failover", "virtio_net"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDeps (-want +got):\n%s", diff)
	}
	if _, err := m.WithDeps([]string{"nowhere"}); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("WithDeps of a module not in the manifest: err = %v, want one naming it", err)
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name  string
		early []string
		want  string
	}{
		{"unknown", []string{"nosuch"}, "module nosuch: not in kernel r"},
		{"missing dep", []string{"broken"}, "module nowhere (needed by broken): not in kernel r"},
		{"cycle", []string{"cyc_a"}, "module dependency cycle: cyc_a → cyc_b → cyc_a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Resolve(fakeSource(), tt.early, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Resolve(%v) error = %v, want %q", tt.early, err, tt.want)
			}
		})
	}
}

package cmd

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kiln-os/kiln/tools/provision"
)

func TestClusterCreateOptions(t *testing.T) {
	base := func() clusterFlags {
		return clusterFlags{name: "kiln", provisioner: "qemu", inputs: "_out/cache", boot: "uefi", arch: "amd64",
			memory: 1024, cpus: 2, diskMiB: 4096, timeout: 600e9}
	}
	tests := []struct {
		name string
		edit func(*clusterFlags)
		want provision.Options
		err  string
	}{
		{
			name: "defaults",
			edit: func(*clusterFlags) {},
			want: provision.Options{Name: "kiln", InputsDir: "_out/cache", Boot: "uefi", Arch: "amd64", MemoryMiB: 1024, CPUs: 2, DiskSize: 4 << 30, Timeout: 600e9},
		},
		{
			name: "direct boot of an image",
			edit: func(f *clusterFlags) {
				f.image, f.boot, f.kernelArgs, f.diskMiB, f.name = "/img/generic-amd64.raw", "DIRECT", []string{"kiln.debug"}, 2048, "dev"
			},
			want: provision.Options{Name: "dev", Image: "/img/generic-amd64.raw", InputsDir: "_out/cache", Boot: "direct", KernelArgs: []string{"kiln.debug"},
				Arch: "amd64", MemoryMiB: 1024, CPUs: 2, DiskSize: 2 << 30, Timeout: 600e9},
		},
		{name: "other provisioner", edit: func(f *clusterFlags) { f.provisioner = "docker" }, err: "--provisioner"},
		{name: "image and board", edit: func(f *clusterFlags) { f.image, f.board = "x.raw", "generic-amd64" }, err: "exclude"},
		{name: "tiny disk", edit: func(f *clusterFlags) { f.diskMiB = 100 }, err: "--disk"},
		{name: "bad patch", edit: func(f *clusterFlags) { f.patches = []string{"@/nonexistent/patch.yaml"} }, err: "--config-patch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := base()
			tt.edit(&f)
			got, err := f.createOptions()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("createOptions() = %v, want an error mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(provision.Options{}), cmpopts.IgnoreFields(provision.Options{}, "ConfigPatches")); diff != "" {
				t.Errorf("createOptions() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClusterCreatePatches(t *testing.T) {
	f := clusterFlags{provisioner: "qemu", diskMiB: 4096, timeout: 1e9,
		patches: []string{`[{"op": "add", "path": "/machine/sysctls", "value": {"a.b": "1"}}]`}}
	o, err := f.createOptions()
	if err != nil {
		t.Fatal(err)
	}
	if len(o.ConfigPatches) != 1 {
		t.Fatalf("ConfigPatches = %d, want 1", len(o.ConfigPatches))
	}
}

func TestClusterCommands(t *testing.T) {
	isolate(t)
	state := t.TempDir()
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"cluster", "destroy", "--state-dir", state, "--name", "nope"}, "no such cluster"},
		{[]string{"cluster", "destroy", "--state-dir", state, "--name", "Bad_Name"}, "cluster name"},
		{[]string{"cluster", "create", "--state-dir", state, "--provisioner", "docker"}, "only qemu"},
		{[]string{"cluster", "create", "--state-dir", state, "--arch", "riscv64", "--image", filepath.Join(state, "x.raw")}, "--arch"},
		{[]string{"cluster", "create", "--state-dir", state, "extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, err := kctl(t, tt.args...)
			if err == nil || !strings.Contains(stderr, tt.err) {
				t.Errorf("kctl %q: err %v, stderr %q; want %q", tt.args, err, stderr, tt.err)
			}
		})
	}
	// A rejected create leaves no cluster directory behind.
	if m, _ := filepath.Glob(filepath.Join(state, "*")); len(m) != 0 {
		t.Errorf("state directory after failed creates: %q", m)
	}
}

package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/components"
	"github.com/kiln-os/kiln/images/components/componentstest"
)

// rootListing writes the root squashfs of the kernel output in dir to a file and returns
// `unsquashfs -lln` as path → "mode owner date time".
func rootListing(t *testing.T, dir string) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Skip("needs unsquashfs: apt-get install squashfs-tools")
	}
	_, root := initramfsListing(t, dir)
	p := filepath.Join(t.TempDir(), "root.squashfs")
	if err := os.WriteFile(p, root, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unsquashfs", "-lln", "-d", "", p).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") {
			continue
		}
		got[f[5]] = strings.Join([]string{f[0], f[1], f[3], f[4]}, " ")
	}
	return got
}

// TestComponentsInImage builds with a fake components directory (tiny ELF files, tiny
// OCI archives) twice: the outputs are byte-identical, the root filesystem holds every
// component at its path with fixed modes, owners and times, and the small UKI leaves
// the board's EFI size alone.
func TestComponentsInImage(t *testing.T) {
	comps := componentstest.Write(t, "amd64")
	var dirs []string
	var res *Result
	for range 2 {
		out := t.TempDir()
		o := testOptions(t, boards.GenericAMD64(), out, boards.FormatKernel, boards.FormatUKI, boards.FormatRaw)
		o.Components = comps
		r, err := Build(context.Background(), o)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		dirs, res = append(dirs, out), r
	}
	for _, f := range []boards.Format{boards.FormatKernel, boards.FormatUKI, boards.FormatRaw} {
		for _, n := range OutputName(boards.GenericAMD64(), f) {
			if a, b := sha(t, filepath.Join(dirs[0], n)), sha(t, filepath.Join(dirs[1], n)); a != b {
				t.Errorf("%s: sha256 %s then %s: build with components is not reproducible", n, a, b)
			}
		}
	}
	if res.RootImageSize <= 0 || res.UKISize <= res.RootImageSize || res.EFISize != 256*boards.MiB {
		t.Errorf("Result sizes: root %d, UKI %d, EFI %d; want root < UKI and EFI 256 MiB", res.RootImageSize, res.UKISize, res.EFISize)
	}
	got := rootListing(t, dirs[0])
	const bin, data = "-rwxr-xr-x 0/0 2025-01-01 00:00", "-rw-r--r-- 0/0 2025-01-01 00:00"
	want := map[string]string{
		"/" + components.Kube:                       bin,
		"/usr/bin/containerd":                       bin,
		"/usr/bin/containerd-shim-runc-v2":          bin,
		"/usr/bin/runc":                             bin,
		"/opt/cni/bin/bridge":                       bin,
		"/opt/cni/bin/host-local":                   bin,
		"/opt/cni/bin/loopback":                     bin,
		"/opt/cni/bin/portmap":                      bin,
		"/" + components.ImagesManifest:             data,
		"/" + components.ImagesDir + "/pause.tar":   data,
		"/" + components.ImagesDir + "/coredns.tar": data,
		"/usr/bin/kubelet":                          "lrwxrwxrwx 0/0 2025-01-01 00:00",
		"/" + MachinedPath:                          bin,
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("root filesystem %s: %q, want %q", p, got[p], w)
		}
	}
	for _, p := range []string{"/usr/bin/ctr", "/usr/share/kiln/images/bin"} {
		if _, ok := got[p]; ok {
			t.Errorf("root filesystem has %s: host-test tools and image binaries stay out", p)
		}
	}
}

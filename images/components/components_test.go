package components_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/components"
	"github.com/kiln-os/kiln/images/components/componentstest"
	"github.com/kiln-os/kiln/images/fstree"
	"github.com/kiln-os/kiln/images/squashfs"
)

const epoch = 1735689600

// squash writes the set's layout as a squashfs image and returns its path.
func squash(t *testing.T, s *components.Set, name string) string {
	t.Helper()
	tr := fstree.New()
	if err := s.AddTo(tr); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), name)
	if err := squashfs.Write(context.Background(), tr, out, squashfs.Options{Epoch: epoch, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return out
}

// listing maps each path of the image to "mode owner date time [-> target]".
func listing(t *testing.T, img string) map[string]string {
	t.Helper()
	out, err := squashfs.List(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") {
			continue
		}
		v := strings.Join([]string{f[0], f[1], f[3], f[4]}, " ")
		if len(f) == 8 && f[6] == "->" {
			v += " -> " + f[7]
		}
		got[f[5]] = v
	}
	return got
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestLayout(t *testing.T) {
	if err := squashfs.Available(); err != nil {
		t.Skipf("needs mksquashfs: %v", err)
	}
	dir := componentstest.Write(t, "amd64")
	s, err := components.Load(dir, boards.AMD64)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	img := squash(t, s, "a.sqfs")
	const bin, data, link = "-rwxr-xr-x 0/0 2025-01-01 00:00", "-rw-r--r-- 0/0 2025-01-01 00:00", "lrwxrwxrwx 0/0 2025-01-01 00:00 -> kube"
	const d = "drwxr-xr-x 0/0 2025-01-01 00:00"
	want := map[string]string{
		"/usr": d, "/usr/bin": d, "/usr/share": d, "/usr/share/kiln": d, "/usr/share/kiln/images": d,
		"/opt": d, "/opt/cni": d, "/opt/cni/bin": d,
		"/usr/bin/kube": bin, "/usr/bin/containerd": bin, "/usr/bin/containerd-shim-runc-v2": bin, "/usr/bin/runc": bin,
		"/usr/bin/etcd": link, "/usr/bin/etcdctl": link, "/usr/bin/kube-apiserver": link,
		"/usr/bin/kube-controller-manager": link, "/usr/bin/kube-scheduler": link, "/usr/bin/kubectl": link, "/usr/bin/kubelet": link,
		"/opt/cni/bin/bridge": bin, "/opt/cni/bin/host-local": bin, "/opt/cni/bin/loopback": bin, "/opt/cni/bin/portmap": bin,
		"/usr/share/kiln/images/images.json": data, "/usr/share/kiln/images/pause.tar": data, "/usr/share/kiln/images/coredns.tar": data,
	}
	got := listing(t, img)
	delete(got, "/")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("root filesystem listing mismatch (-want +got):\n%s", diff)
	}

	// The manifest lists each archive with its reference, digest and file hash.
	tr := fstree.New()
	if err := s.AddTo(tr); err != nil {
		t.Fatal(err)
	}
	e, ok := tr.Get(components.ImagesManifest)
	if !ok {
		t.Fatalf("no %s in the tree", components.ImagesManifest)
	}
	raw, _ := e.ReadAll()
	var m components.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}
	var src struct {
		Images []struct{ Name, Archive, Digest string }
	}
	b, err := os.ReadFile(filepath.Join(dir, "images", "images.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &src); err != nil {
		t.Fatal(err)
	}
	var wantM components.Manifest
	for _, im := range src.Images {
		p := filepath.Join(dir, "images", im.Archive)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		wantM.Images = append(wantM.Images, components.Image{Name: im.Name, Archive: im.Archive, Digest: im.Digest,
			SHA256: fileSHA(t, p), Size: st.Size(), Arch: "amd64"})
	}
	if len(wantM.Images) != 2 || wantM.Images[0].Name != componentstest.PauseImage || wantM.Images[1].Name != componentstest.CoreDNSImage {
		t.Fatalf("fake images.json = %+v, want pause then coredns", src)
	}
	if diff := cmp.Diff(wantM, m); diff != "" {
		t.Errorf("manifest mismatch (-want +got):\n%s", diff)
	}

	// Taken verbatim: the bytes in the image are the component's.
	x := filepath.Join(t.TempDir(), "x")
	if out, err := runUnsquash(img, x, "/usr/bin/kube"); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	if a, b := fileSHA(t, filepath.Join(x, "usr/bin/kube")), fileSHA(t, filepath.Join(dir, "kube", "kube")); a != b {
		t.Errorf("usr/bin/kube sha256 %s, component %s: not taken verbatim", a, b)
	}
}

func TestReproducible(t *testing.T) {
	if err := squashfs.Available(); err != nil {
		t.Skipf("needs mksquashfs: %v", err)
	}
	// Two directories with the same content but other modes and times on the host.
	a := componentstest.Write(t, "arm64")
	b := componentstest.Write(t, "arm64")
	if err := os.Chmod(filepath.Join(b, "runc", "runc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(b, "kube", "kube"), time0, time0); err != nil {
		t.Fatal(err)
	}
	var sums []string
	for _, dir := range []string{a, b} {
		s, err := components.Load(dir, boards.ARM64)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		sums = append(sums, fileSHA(t, squash(t, s, "r.sqfs")))
	}
	if sums[0] != sums[1] {
		t.Errorf("squashfs sha256 %s then %s: not reproducible", sums[0], sums[1])
	}
}

// elf32 is an i386 ELF header: a 32-bit build.
func elf32() []byte {
	b := make([]byte, 52)
	copy(b, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS32), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	b[16], b[18], b[20] = byte(elf.ET_EXEC), byte(elf.EM_386), 1
	b[40] = 52
	return b
}

var time0 = time.Unix(1_000_000_000, 0)

// runUnsquash extracts one file of img below dest.
func runUnsquash(img, dest, file string) ([]byte, error) {
	return exec.Command("unsquashfs", "-no-xattrs", "-d", dest, img, file).CombinedOutput()
}

func TestLoadBad(t *testing.T) {
	rm := func(rel string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, rel)); err != nil {
				t.Fatal(err)
			}
		}
	}
	put := func(rel string, data []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, rel), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// editManifest rewrites images.json through fn.
	editManifest := func(fn func(m map[string]any)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, "images", "images.json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			fn(m)
			b, _ = json.Marshal(m)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	image := func(m map[string]any, i int) map[string]any { return m["images"].([]any)[i].(map[string]any) }
	tests := []struct {
		name string
		arch boards.Arch
		edit func(t *testing.T, dir string)
		want []string
	}{
		{"no directory", boards.AMD64, func(t *testing.T, dir string) { os.RemoveAll(dir) }, []string{"no such file or directory", "controlplane/build.sh -a amd64"}},
		{"whole directory for the other arch", boards.ARM64, nil, []string{
			"every binary and image is built for amd64, the board needs arm64; build them with `controlplane/build.sh -a arm64` and pass $KILN_COMPONENTS/arm64"}},
		{"one image for the other arch", boards.AMD64, func(t *testing.T, dir string) {
			a, d := componentstest.OCIArchive(componentstest.PauseImage, "arm64", []byte("x"))
			put("images/pause.tar", a)(t, dir)
			editManifest(func(m map[string]any) { image(m, 0)["digest"] = d })(t, dir)
		}, []string{"images/pause.tar built for arm64, the board needs amd64"}},
		{"32-bit binary", boards.AMD64, put("kube/kube", elf32()), []string{"kube/kube built for 386, the board needs amd64"}},
		{"missing pieces", boards.AMD64, func(t *testing.T, dir string) {
			rm("kube/kube")(t, dir)
			rm("cni/portmap")(t, dir)
		}, []string{"missing kube/kube, cni/portmap"}},
		{"component link dangling", boards.AMD64, func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "runc-0123456789abcdef"))
		}, []string{"missing runc/runc"}},
		{"one binary for the other arch", boards.AMD64, put("runc/runc", componentstest.ELF(elf.EM_AARCH64, "x")), []string{"components DIR: runc/runc built for arm64, the board needs amd64; build them"}},
		{"not an ELF file", boards.AMD64, put("cni/bridge", []byte("#!/bin/sh\n")), []string{"cni/bridge: not an ELF executable"}},
		{"a directory instead of a binary", boards.AMD64, func(t *testing.T, dir string) {
			rm("containerd/containerd-shim-runc-v2")(t, dir)
			os.Mkdir(filepath.Join(dir, "containerd", "containerd-shim-runc-v2"), 0o755)
		}, []string{"containerd/containerd-shim-runc-v2 is not a regular file"}},
		{"no images.json", boards.AMD64, rm("images/images.json"), []string{"missing images/images.json"}},
		{"archive missing", boards.AMD64, rm("images/coredns.tar"), []string{"missing images/coredns.tar"}},
		{"images.json from another build", boards.AMD64, editManifest(func(m map[string]any) {
			image(m, 0)["digest"] = "sha256:" + strings.Repeat("0", 64)
		}), []string{"images/pause.tar: index.json does not name registry.k8s.io/pause:3.10.2 with digest sha256:000"}},
		{"archive path escapes", boards.AMD64, editManifest(func(m map[string]any) { image(m, 1)["archive"] = "../kube/kube" }),
			[]string{`archive "../kube/kube" is not a file name ending in .tar`}},
		{"no images", boards.AMD64, editManifest(func(m map[string]any) { m["images"] = []any{} }), []string{"images/images.json: lists no image"}},
		{"archive not a tar", boards.AMD64, put("images/pause.tar", bytes.Repeat([]byte("x"), 2000)), []string{"images/pause.tar: not an OCI archive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := componentstest.Write(t, "amd64")
			if tt.edit != nil {
				tt.edit(t, dir)
			}
			s, err := components.Load(dir, tt.arch)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", tt.name, s)
			}
			msg := strings.ReplaceAll(err.Error(), dir, "DIR")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Load error = %q, want containing %q", msg, w)
				}
			}
			if !strings.HasPrefix(msg, "components DIR: ") || strings.Contains(msg, "\n") {
				t.Errorf("Load error = %q: want one line starting with the directory", msg)
			}
		})
	}
}

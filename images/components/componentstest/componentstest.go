// Package componentstest writes small fake components directories for tests: the
// layout controlplane/build.sh writes (component folders as symlinks to keyed builds),
// with tiny ELF executables of a chosen machine and tiny OCI archives with a real
// index, manifest and config, so the builder's checks and layout run in milliseconds.
package componentstest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Image references of the fake images (those containerd 2.4.2 and kubeadm v1.37 use).
const (
	PauseImage   = "registry.k8s.io/pause:3.10.2"
	CoreDNSImage = "registry.k8s.io/coredns/coredns:v1.14.6"
)

// Files lists every file Write creates, relative to the components directory, through
// the component symlinks.
var Files = []string{
	"kube/kube",
	"containerd/containerd", "containerd/containerd-shim-runc-v2", "containerd/ctr",
	"runc/runc",
	"cni/bridge", "cni/host-local", "cni/loopback", "cni/portmap",
	"images/images.json", "images/pause.tar", "images/coredns.tar", "images/bin/pause", "images/bin/coredns",
}

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// ELF returns a minimal 64-bit little-endian ELF executable header for machine,
// followed by payload (so files differ).
func ELF(machine elf.Machine, payload string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), 0})
	b.Write(make([]byte, 8))
	le := binary.LittleEndian
	w16 := func(v uint16) { b.Write(le.AppendUint16(nil, v)) }
	w32 := func(v uint32) { b.Write(le.AppendUint32(nil, v)) }
	w64 := func(v uint64) { b.Write(le.AppendUint64(nil, v)) }
	w16(uint16(elf.ET_EXEC))
	w16(uint16(machine))
	w32(uint32(elf.EV_CURRENT))
	w64(0x401000) // entry
	w64(0)        // phoff
	w64(0)        // shoff
	w32(0)        // flags
	w16(64)       // ehsize
	w16(56)       // phentsize
	w16(0)        // phnum
	w16(64)       // shentsize
	w16(0)        // shnum
	w16(0)        // shstrndx
	b.WriteString(payload)
	return b.Bytes()
}

// OCIArchive returns an OCI image-layout tar for one image named name, for arch, with
// the given layer bytes, and its manifest digest.
func OCIArchive(name, arch string, layer []byte) (archive []byte, digest string) {
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		s := sha256.Sum256(b)
		d := hex.EncodeToString(s[:])
		blobs["blobs/sha256/"+d] = b
		return "sha256:" + d, len(b)
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return b
	}
	layerDigest, layerSize := put(layer)
	cfgDigest, cfgSize := put(mustJSON(map[string]any{
		"architecture": arch, "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	}))
	manDigest, manSize := put(mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	}))
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": mustJSON(map[string]any{
			"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
			"manifests": []any{map[string]any{
				"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manDigest, "size": manSize,
				"annotations": map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
			}},
		}),
	}
	for k, v := range blobs {
		files[k] = v
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			panic(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	return buf.Bytes(), manDigest
}

// Write creates a fake components directory for arch (amd64 or arm64) under a new
// temporary directory and returns it: dir/<component> symlinks to dir/<component>-<key>,
// as controlplane/build.sh leaves them.
func Write(t testing.TB, arch string) string {
	t.Helper()
	m, ok := machines[arch]
	if !ok {
		t.Fatalf("componentstest: unknown arch %q", arch)
	}
	dir := t.TempDir()
	write := func(rel string, data []byte, perm os.FileMode) {
		comp, rest, _ := strings.Cut(rel, "/")
		real := filepath.Join(dir, comp+"-0123456789abcdef")
		if _, err := os.Lstat(filepath.Join(dir, comp)); err != nil {
			if err := os.MkdirAll(real, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Base(real), filepath.Join(dir, comp)); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(real, filepath.FromSlash(rest))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
	}
	type entry struct {
		Name    string `json:"name"`
		Archive string `json:"archive"`
		Digest  string `json:"digest"`
	}
	var man struct {
		Images []entry `json:"images"`
	}
	for _, f := range Files {
		switch f {
		case "images/images.json":
		case "images/pause.tar", "images/coredns.tar":
			name := map[string]string{"images/pause.tar": PauseImage, "images/coredns.tar": CoreDNSImage}[f]
			a, d := OCIArchive(name, arch, []byte("layer of "+name))
			write(f, a, 0o644)
			man.Images = append(man.Images, entry{Name: name, Archive: filepath.Base(f), Digest: d})
		default:
			write(f, ELF(m, "fake "+f), 0o755)
		}
	}
	js, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write("images/images.json", js, 0o644)
	return dir
}

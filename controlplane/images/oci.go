// Package images builds the container images Kiln preloads on a node (the
// pod sandbox "pause" image and CoreDNS) from static binaries built from
// source, without a registry or a container engine: each image is one
// uncompressed layer written with go-containerregistry into an OCI
// image-layout tar archive that `ctr images import` and containerd's CRI
// accept. Archives are reproducible: fixed timestamps, sorted entries.
package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations containerd reads when it imports an OCI archive.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// epoch is the timestamp of every file and of the image config, so that a
// rebuild from the same binaries gives the same digest.
var epoch = time.Unix(0, 0).UTC()

// File is one file of an image's single layer.
type File struct {
	// Path inside the image, absolute (/pause).
	Path string
	// Mode is the permission bits.
	Mode int64
	// Data is the content.
	Data []byte
}

// Spec describes an image.
type Spec struct {
	// Name is the full reference, e.g. registry.k8s.io/pause:3.10.2.
	Name string
	// Arch is the GOARCH the binaries were built for.
	Arch string
	// Files make up the one layer.
	Files []File
	// Entrypoint, Cmd, User and ExposedPorts (e.g. "53/udp") go into the
	// image config.
	Entrypoint, Cmd []string
	User            string
	ExposedPorts    []string
}

// Image returns the OCI image for spec.
func Image(spec Spec) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := slices.Clone(spec.Files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(path.Clean(f.Path)); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image %s: file path %q is not absolute", spec.Name, f.Path)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Clean(f.Path)[1:], Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	// Uncompressed: the archives live in the node's squashfs, which
	// compresses them far better than gzip would first (a gzipped layer
	// cannot be compressed again), and containerd unpacks either.
	layer := static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCIUncompressedLayer, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "kiln"}})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec.Name, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = spec.Arch, "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.User = spec.Entrypoint, spec.Cmd, spec.User
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if len(spec.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.ExposedPorts {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

// WriteArchive writes img as an OCI image-layout tar archive at dst
// (atomically), its index naming the image with both the containerd and the
// OCI annotation. It returns the manifest digest.
func WriteArchive(dst, name string, img v1.Image) (v1.Hash, error) {
	dir, err := os.MkdirTemp(filepath.Dir(dst), ".oci-layout-*")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("OCI layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		AnnotationImageName: name,
		AnnotationRefName:   name,
	})); err != nil {
		return v1.Hash{}, fmt.Errorf("OCI layout: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	tmp := dst + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// tarDir writes the files under dir to a tar at dst, sorted, with fixed
// timestamps.
func tarDir(dir, dst string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(paths)
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			f.Close()
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}
		if st.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
		}
		if err := tw.WriteHeader(hdr); err != nil {
			f.Close()
			return err
		}
		if !st.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Close()
				return err
			}
			if _, err := tw.Write(data); err != nil {
				f.Close()
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ManifestEntry is one image of the manifest a node reads to import the
// preloaded images at boot.
type ManifestEntry struct {
	// Name is the full image reference.
	Name string `json:"name"`
	// Archive is the OCI archive's file name, relative to the manifest.
	Archive string `json:"archive"`
	// Digest is the image manifest digest.
	Digest string `json:"digest"`
}

// Manifest lists the preloaded images (images.json next to the archives).
type Manifest struct {
	Images []ManifestEntry `json:"images"`
}

// Marshal returns the manifest as indented JSON.
func (m Manifest) Marshal() ([]byte, error) {
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// The image references the node's containerd and kubelet expect: the
// sandbox image of containerd 2.4.2's CRI (kubelet must use the same, or it
// pulls) and kubeadm v1.37's CoreDNS.
const (
	PauseImage   = "registry.k8s.io/pause:3.10.2"
	CoreDNSImage = "registry.k8s.io/coredns/coredns:v1.14.6"
)

// PauseSpec is the pause image around the pause binary.
func PauseSpec(arch string, pause []byte) Spec {
	return Spec{
		Name: PauseImage, Arch: arch,
		Files:      []File{{Path: "/pause", Mode: 0o755, Data: pause}},
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
	}
}

// CoreDNSSpec is the CoreDNS image around the coredns binary, laid out as
// upstream's (entrypoint /coredns, non-root, port 53).
func CoreDNSSpec(name, arch string, coredns []byte) Spec {
	return Spec{
		Name: name, Arch: arch,
		Files:        []File{{Path: "/coredns", Mode: 0o755, Data: coredns}},
		Entrypoint:   []string{"/coredns"},
		User:         "65532:65532",
		ExposedPorts: []string{"53/tcp", "53/udp"},
	}
}

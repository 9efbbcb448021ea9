// Package components puts Kiln's upstream components into a node's root filesystem:
// the multi-call kube binary (Kubernetes + etcd), containerd and its runc shim, runc,
// the CNI plugins and the preloaded container images (OCI archives), read from a
// directory in the layout controlplane/build.sh writes ($KILN_COMPONENTS/<arch>:
// kube/, containerd/, runc/, cni/, images/ with images.json).
//
// Load checks the whole directory before anything is built: every piece present, every
// binary an ELF executable for the board's architecture, every image archive an OCI
// layout naming the image and digest images.json lists, for that architecture. AddTo
// then lays the files out at the fixed paths below; they are taken verbatim (the root
// squashfs is their only compression), with modes fixed here and owners and times fixed
// by the squashfs writer, so the root filesystem stays byte-identical across builds.
package components

import (
	"archive/tar"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/fstree"
)

// Paths in the root filesystem (relative, as fstree takes them).
const (
	// BinDir holds kube, its symlinks, containerd, the shim and runc: on machined's PATH,
	// and where containerd looks up containerd-shim-runc-v2 and runc.
	BinDir = "usr/bin"
	// Kube is the multi-call binary; KubeLinks name it too (it dispatches on argv[0]).
	Kube = BinDir + "/kube"
	// CNIBinDir is the CNI plugin directory (containerd's and the CNI default).
	CNIBinDir = "opt/cni/bin"
	// ImagesDir holds the OCI archives of the preloaded images and ImagesManifest.
	ImagesDir = "usr/share/kiln/images"
	// ImagesManifest lists the archives of ImagesDir (see Manifest): what a node imports
	// into containerd at boot.
	ImagesManifest = ImagesDir + "/images.json"
)

// KubeLinks are the names under BinDir that are symlinks to kube.
var KubeLinks = []string{"etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet"}

// binaries maps each executable the node gets to its place in the components directory.
// ctr (host tests only) and images/bin (the binaries inside the images) are not taken.
var binaries = []struct{ src, dst string }{
	{"kube/kube", Kube},
	{"containerd/containerd", BinDir + "/containerd"},
	{"containerd/containerd-shim-runc-v2", BinDir + "/containerd-shim-runc-v2"},
	{"runc/runc", BinDir + "/runc"},
	{"cni/bridge", CNIBinDir + "/bridge"},
	{"cni/host-local", CNIBinDir + "/host-local"},
	{"cni/loopback", CNIBinDir + "/loopback"},
	{"cni/portmap", CNIBinDir + "/portmap"},
}

// srcManifest is images.json in the components' images directory.
const srcManifest = "images/images.json"

// Image is one preloaded image of the manifest.
type Image struct {
	// Name is the full image reference containerd and the kubelet know it by.
	Name string `json:"name"`
	// Archive is the OCI archive's file name, relative to the manifest's directory.
	Archive string `json:"archive"`
	// Digest is the image manifest digest (sha256:…), as the archive's index names it.
	Digest string `json:"digest"`
	// SHA256 is the hex SHA-256 of the archive file and Size its length: a node checks
	// the archive before it imports it.
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Arch is the image's architecture (GOARCH spelling).
	Arch string `json:"arch"`
}

// Manifest is ImagesManifest. Its name, archive and digest fields are those of the
// images.json controlplane/build.sh writes; the builder adds sha256, size and arch.
type Manifest struct {
	Images []Image `json:"images"`
}

// Marshal returns the manifest as indented JSON with a final newline.
func (m Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Binary is one executable of a Set.
type Binary struct {
	Dst  string // path in the root filesystem
	Src  string // host file, symlinks resolved
	Size int64
}

// Set is a checked components directory.
type Set struct {
	Dir      string
	Arch     boards.Arch
	Binaries []Binary
	// Archives maps an image's Archive name to its host file.
	Archives map[string]string
	Manifest Manifest
}

var elfMachine = map[boards.Arch]elf.Machine{
	boards.AMD64: elf.EM_X86_64,
	boards.ARM64: elf.EM_AARCH64,
}

var archOfMachine = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
	elf.EM_386:     "386",
	elf.EM_ARM:     "arm",
	elf.EM_RISCV:   "riscv64",
}

// Load checks dir, a components directory for arch, and returns what it holds. All
// problems are reported in one error line that names dir and says how to fix it.
func Load(dir string, arch boards.Arch) (*Set, error) {
	want, ok := elfMachine[arch]
	if !ok {
		return nil, fmt.Errorf("components: no ELF machine known for arch %q", arch)
	}
	fix := fmt.Sprintf("build them with `controlplane/build.sh -a %s` and pass $KILN_COMPONENTS/%s", arch, arch)
	fail := func(problems []string) error {
		return fmt.Errorf("components %s: %s; %s", dir, strings.Join(problems, "; "), fix)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fail([]string{err.Error()})
	}
	if !st.IsDir() {
		return nil, fail([]string{"not a directory"})
	}
	s := &Set{Dir: dir, Arch: arch, Archives: map[string]string{}}
	var r report
	for _, b := range binaries {
		src, size, err := regular(dir, b.src)
		if errors.Is(err, fs.ErrNotExist) {
			r.missing = append(r.missing, b.src)
			continue
		}
		if err != nil {
			r.problems = append(r.problems, err.Error())
			continue
		}
		r.checked++
		got, err := checkELF(src, want)
		if err != nil {
			r.problems = append(r.problems, fmt.Sprintf("%s: %v", b.src, err))
			continue
		}
		if got != string(arch) {
			r.wrongArch(b.src, got)
			continue
		}
		s.Binaries = append(s.Binaries, Binary{Dst: b.dst, Src: src, Size: size})
	}
	s.Manifest = loadImages(dir, arch, s.Archives, &r)
	if p := r.summary(arch); len(p) > 0 {
		return nil, fail(p)
	}
	return s, nil
}

// report collects what is wrong with a components directory.
type report struct {
	missing, problems []string
	checked           int                 // binaries and archives found
	wrong             map[string][]string // architecture found → pieces built for it
}

func (r *report) wrongArch(piece, got string) {
	if r.wrong == nil {
		r.wrong = map[string][]string{}
	}
	r.wrong[got] = append(r.wrong[got], piece)
}

// summary is the list of problems, shortest first: a directory built wholly for
// another architecture is said in one phrase.
func (r *report) summary(arch boards.Arch) []string {
	var out []string
	if len(r.missing) > 0 {
		out = append(out, "missing "+strings.Join(r.missing, ", "))
	}
	got := make([]string, 0, len(r.wrong))
	for a := range r.wrong {
		got = append(got, a)
	}
	sort.Strings(got)
	for _, a := range got {
		if len(r.wrong[a]) == r.checked {
			out = append(out, fmt.Sprintf("every binary and image is built for %s, the board needs %s", a, arch))
			continue
		}
		out = append(out, fmt.Sprintf("%s built for %s, the board needs %s", strings.Join(r.wrong[a], ", "), a, arch))
	}
	return append(out, r.problems...)
}

// regular resolves dir/rel (the component folders are symlinks to keyed builds) and
// checks that it is a regular file. Resolving once pins the build this Set reads even
// if build.sh repoints a symlink meanwhile.
func regular(dir, rel string) (string, int64, error) {
	p, err := filepath.EvalSymlinks(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return "", 0, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", 0, err
	}
	if !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is not a regular file", rel)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", 0, err
	}
	return abs, st.Size(), nil
}

// checkELF checks that p is a 64-bit ELF executable and returns its architecture
// (GOARCH spelling; the ELF machine name when Go has none for it).
func checkELF(p string, want elf.Machine) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("not an ELF executable (%v)", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("ELF type %s, want an executable", f.Type)
	}
	got := archOfMachine[f.Machine]
	if got == "" {
		got = f.Machine.String()
	}
	if f.Machine == want && f.Class != elf.ELFCLASS64 {
		got += " (32-bit)"
	}
	return got, nil
}

// loadImages reads images/images.json and checks every archive it lists. It fills
// archives and returns the manifest with sizes and hashes, the problems and the
// missing files.
func loadImages(dir string, arch boards.Arch, archives map[string]string, r *report) (m Manifest) {
	mp, _, err := regular(dir, srcManifest)
	if errors.Is(err, fs.ErrNotExist) {
		r.missing = append(r.missing, srcManifest)
		return m
	}
	if err == nil {
		var data []byte
		if data, err = os.ReadFile(mp); err == nil {
			var src Manifest
			if err = json.Unmarshal(data, &src); err == nil && len(src.Images) == 0 {
				err = errors.New("lists no image")
			}
			if err == nil {
				return checkImages(dir, arch, src, archives, r)
			}
		}
		err = fmt.Errorf("%s: %w", srcManifest, err)
	}
	r.problems = append(r.problems, err.Error())
	return m
}

func checkImages(dir string, arch boards.Arch, src Manifest, archives map[string]string, r *report) (m Manifest) {
	var problems, missing []string
	defer func() {
		r.problems = append(r.problems, problems...)
		r.missing = append(r.missing, missing...)
	}()
	seen := map[string]bool{}
	for i, im := range src.Images {
		where := fmt.Sprintf("%s images[%d]", srcManifest, i)
		switch {
		case im.Name == "":
			problems = append(problems, where+": no name")
			continue
		case im.Archive == "" || im.Archive != path.Base(im.Archive) || strings.HasPrefix(im.Archive, ".") || !strings.HasSuffix(im.Archive, ".tar"):
			problems = append(problems, fmt.Sprintf("%s: archive %q is not a file name ending in .tar", where, im.Archive))
			continue
		case !strings.HasPrefix(im.Digest, "sha256:"):
			problems = append(problems, fmt.Sprintf("%s: digest %q is not sha256:…", where, im.Digest))
			continue
		case seen[im.Archive] || im.Archive == path.Base(srcManifest):
			problems = append(problems, fmt.Sprintf("%s: archive %s listed twice", where, im.Archive))
			continue
		}
		seen[im.Archive] = true
		rel := "images/" + im.Archive
		p, size, err := regular(dir, rel)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, rel)
			continue
		}
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		r.checked++
		sum, imgArch, err := checkArchive(p, im)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", rel, err))
			continue
		}
		if imgArch != string(arch) {
			r.wrongArch(rel, imgArch)
			continue
		}
		archives[im.Archive] = p
		m.Images = append(m.Images, Image{Name: im.Name, Archive: im.Archive, Digest: im.Digest, SHA256: sum, Size: size, Arch: imgArch})
	}
	return m
}

// maxMeta bounds the size of an archive member read as metadata (index, manifest,
// config); layers are only hashed.
const maxMeta = 1 << 20

// checkArchive reads an OCI image-layout tar in one pass: it hashes the file, checks
// that index.json names im (reference and manifest digest) and returns the architecture
// of the image's config.
func checkArchive(p string, im Image) (sum, arch string, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	h := sha256.New()
	small := map[string][]byte{}
	tr := tar.NewReader(io.TeeReader(f, h))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", "", fmt.Errorf("not an OCI archive (tar: %v)", err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size <= maxMeta {
			b, err := io.ReadAll(tr)
			if err != nil {
				return "", "", fmt.Errorf("tar: %w", err)
			}
			small[path.Clean(hdr.Name)] = b
		}
	}
	// The tar reader stops at the end-of-archive marker; hash the padding after it too.
	if _, err := io.Copy(h, f); err != nil {
		return "", "", err
	}
	sum = hex.EncodeToString(h.Sum(nil))

	blob := func(digest string) ([]byte, error) {
		alg, hexd, ok := strings.Cut(digest, ":")
		b, found := small[path.Join("blobs", alg, hexd)]
		if !ok || !found {
			return nil, fmt.Errorf("blob %s not in the archive", digest)
		}
		return b, nil
	}
	idx, ok := small["index.json"]
	if !ok {
		return "", "", fmt.Errorf("not an OCI archive (no index.json)")
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(idx, &index); err != nil {
		return "", "", fmt.Errorf("index.json: %w", err)
	}
	found := false
	for _, d := range index.Manifests {
		a := d.Annotations
		if d.Digest == im.Digest && (a["io.containerd.image.name"] == im.Name || a["org.opencontainers.image.ref.name"] == im.Name) {
			found = true
		}
	}
	if !found {
		return "", "", fmt.Errorf("index.json does not name %s with digest %s (archive and images.json are from different builds)", im.Name, im.Digest)
	}
	mb, err := blob(im.Digest)
	if err != nil {
		return "", "", err
	}
	var manifest struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
	}
	if err := json.Unmarshal(mb, &manifest); err != nil {
		return "", "", fmt.Errorf("image manifest %s: %w", im.Digest, err)
	}
	cb, err := blob(manifest.Config.Digest)
	if err != nil {
		return "", "", err
	}
	var config struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
	if err := json.Unmarshal(cb, &config); err != nil {
		return "", "", fmt.Errorf("image config %s: %w", manifest.Config.Digest, err)
	}
	if config.OS != "linux" {
		return "", "", fmt.Errorf("image %s is for OS %q, want linux", im.Name, config.OS)
	}
	return sum, config.Architecture, nil
}

// AddTo lays the set out in the root filesystem tree t.
func (s *Set) AddTo(t *fstree.Tree) error {
	for _, b := range s.Binaries {
		if err := t.AddFile(b.Dst, 0o755, b.Src); err != nil {
			return err
		}
	}
	for _, l := range KubeLinks {
		if err := t.AddSymlink(BinDir+"/"+l, path.Base(Kube)); err != nil {
			return err
		}
	}
	for _, im := range s.Manifest.Images {
		if err := t.AddFile(ImagesDir+"/"+im.Archive, 0o644, s.Archives[im.Archive]); err != nil {
			return err
		}
	}
	js, err := s.Manifest.Marshal()
	if err != nil {
		return err
	}
	return t.AddData(ImagesManifest, 0o644, js)
}

// Size is the total size of the files the set adds.
func (s *Set) Size() int64 {
	var n int64
	for _, b := range s.Binaries {
		n += b.Size
	}
	for _, im := range s.Manifest.Images {
		n += im.Size
	}
	return n
}

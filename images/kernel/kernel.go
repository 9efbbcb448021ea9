// Package kernel takes a board's kernel out of its Debian package: the kernel image, its
// config, and the requested modules with their dependencies, plus the module manifest
// init loads them from. Reading the package in pure Go is slow (an xz stream of ~100 MB),
// so the result is kept in a cache directory keyed by the package's sha256 and the module
// sets; later builds reuse it.
package kernel

import (
	"archive/tar"

	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/deb"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kmod"
)

// cacheVersion changes whenever the cache's layout or content rules change.
const cacheVersion = "kiln-kernel-2"

// Extracted is a kernel taken out of its package, in a cache directory.
type Extracted struct {
	Dir      string
	Release  string
	Manifest *kmod.Manifest
}

// Image is the path of the kernel image (bzImage or arm64 Image).
func (e *Extracted) Image() string { return filepath.Join(e.Dir, "vmlinuz") }

// Config is the path of the kernel's build configuration.
func (e *Extracted) Config() string { return filepath.Join(e.Dir, "config") }

// ModulePath is the path of a manifest module's file in the cache.
func (e *Extracted) ModulePath(m kmod.Module) string {
	return filepath.Join(e.Dir, "root", filepath.FromSlash(m.Path))
}

// CacheKey identifies the extraction of b's kernel from the package with sha256 sum.
func CacheKey(b boards.Board, sum string) string {
	h := sha256.New()
	m := b.Modules()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n", cacheVersion, sum, b.Kernel().Release,
		strings.Join(m.Early, ","), strings.Join(m.Late, ","))
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// Extract returns b's kernel from cacheDir, extracting it from the package in st first
// if the cache lacks it.
func Extract(st *inputs.Store, b boards.Board, cacheDir string, log *slog.Logger) (*Extracted, error) {
	k := b.Kernel()
	debPath, err := st.Path(k.Package)
	if err != nil {
		return nil, err
	}
	entry, err := st.Lock.Find(k.Package)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, "kernel", CacheKey(b, entry.SHA256))
	if e, err := load(dir); err == nil {
		log.Debug("kernel cache hit", "dir", dir)
		return e, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		log.Warn("kernel cache unreadable, extracting again", "dir", dir, "err", err)
	}
	log.Info("extracting kernel", "package", k.Package.String(), "release", k.Release)
	tmp, err := tempBeside(dir, ".extract-")
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := extract(debPath, b, tmp); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Package, err)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) {
		// Another build may have filled the cache meanwhile: use its copy.
		if e, lerr := load(dir); lerr == nil {
			return e, nil
		}
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	return load(dir)
}

// tempBeside makes a temporary directory next to dir (creating dir's parent), so that
// renaming it to dir stays on one filesystem.
func tempBeside(dir, prefix string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(filepath.Dir(dir), prefix)
}

func load(dir string) (*Extracted, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m kmod.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	e := &Extracted{Dir: dir, Release: m.Kernel, Manifest: &m}
	for _, p := range []string{e.Image(), e.Config()} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func extract(debPath string, b boards.Board, dir string) error {
	rel := b.Kernel().Release
	modDir := "lib/modules/" + rel + "/"
	image, config := "boot/vmlinuz-"+rel, "boot/config-"+rel
	var builtin []byte
	kos := map[string][]byte{} // module name → uncompressed file
	paths := map[string]string{}
	err := deb.Walk(debPath, func(h *tar.Header, r io.Reader) error {
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		switch {
		case h.Name == image:
			return writeFile(filepath.Join(dir, "vmlinuz"), r)
		case h.Name == config:
			return writeFile(filepath.Join(dir, "config"), r)
		case h.Name == modDir+"modules.builtin":
			var err error
			builtin, err = io.ReadAll(r)
			return err
		case strings.HasPrefix(h.Name, modDir):
			n := kmod.NameFromPath(h.Name)
			if n == "" {
				return nil
			}
			data, err := io.ReadAll(r)
			if err != nil {
				return fmt.Errorf("read %s: %w", h.Name, err)
			}
			// Kept uncompressed (kmod.Decompress says why); the manifest names the .ko.
			name, raw, err := kmod.Decompress(h.Name, data)
			if err != nil {
				return err
			}
			kos[n], paths[n] = raw, name
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range []string{"vmlinuz", "config"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return fmt.Errorf("package has no %s for release %s", map[string]string{"vmlinuz": image, "config": config}[p], rel)
		}
	}
	if builtin == nil {
		return fmt.Errorf("package has no %smodules.builtin", modDir)
	}
	src := kmod.Source{
		Release: rel,
		Paths:   paths,
		Builtin: kmod.ParseBuiltin(builtin),
		Info: func(name string) (kmod.Info, error) {
			return kmod.ReadInfo(paths[name], kos[name])
		},
	}
	m, err := kmod.Resolve(src, b.Modules().Early, b.Modules().Late)
	if err != nil {
		return err
	}
	for _, mod := range m.Modules {
		p := filepath.Join(dir, "root", filepath.FromSlash(mod.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, kos[mod.Name], 0o644); err != nil {
			return err
		}
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), append(js, '\n'), 0o644)
}

func writeFile(p string, r io.Reader) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	return f.Close()
}

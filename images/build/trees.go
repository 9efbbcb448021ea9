package build

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/components"
	"github.com/kiln-os/kiln/images/deb"
	"github.com/kiln-os/kiln/images/fstree"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kernel"
	"github.com/kiln-os/kiln/images/kmod"
)

// Paths the node's init and machined rely on.
const (
	// RootImage is the root squashfs inside the initramfs (init's default kiln.root).
	RootImage = "rootfs.sqsh"
	// MachinedPath is machined's path inside the root filesystem (init's default
	// kiln.machined). The root holds an empty file there, over which init binds
	// InitramfsMachined before the switch of root.
	MachinedPath = "sbin/machined"
	// InitramfsMachined is machined inside the initramfs: init starts it before it
	// mounts the root, so that machined's start overlaps the mount.
	InitramfsMachined = "machined"
	// CABundle is the CA certificate bundle inside the root filesystem.
	CABundle = "etc/ssl/certs/ca-certificates.crt"
	// StateConfig is the machine config on the STATE partition.
	StateConfig = "config.yaml"
	// UKIName is slot A's UKI on the EFI partition, named for systemd-boot's boot
	// counting (3 tries left, 0 used).
	UKIName = "EFI/Linux/kiln-a+3-0.efi"
	// ISOUKIName is the UKI on read-only media, where systemd-boot cannot count boots.
	ISOUKIName = "EFI/Linux/kiln-a.efi"
)

// LoaderConf is systemd-boot's configuration: boot slot A at once, no editor.
const LoaderConf = "timeout 0\ndefault kiln-a*\neditor no\nconsole-mode keep\n"

func osRelease(b boards.Board, version string) string {
	return fmt.Sprintf("NAME=\"Kiln\"\nID=kiln\nVERSION_ID=%s\nPRETTY_NAME=\"Kiln %s\"\nVARIANT_ID=%s\n",
		version, version, b.Name())
}

// caBundle concatenates the Mozilla CA certificates of the ca-certificates package in
// name order, as update-ca-certificates would.
func caBundle(st *inputs.Store) ([]byte, error) {
	p, err := st.Path(boards.CACertificates)
	if err != nil {
		return nil, err
	}
	files, err := deb.ReadFiles(p, func(n string) bool {
		return strings.HasPrefix(n, "usr/share/ca-certificates/mozilla/") && strings.HasSuffix(n, ".crt")
	})
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("CA certificates: package has no usr/share/ca-certificates/mozilla/*.crt")
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, n := range names {
		buf.Write(bytes.TrimRight(files[n], "\n"))
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// packageFile reads one file out of a pinned package.
func packageFile(st *inputs.Store, f boards.FileFromPackage) ([]byte, error) {
	p, err := st.Path(f.Package)
	if err != nil {
		return nil, err
	}
	var out []byte
	found := false
	err = deb.Walk(p, func(h *tar.Header, r io.Reader) error {
		if h.Name != f.Src {
			return nil
		}
		found = true
		out, err = io.ReadAll(r)
		if err != nil {
			return err
		}
		return deb.ErrStop
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("package %s has no %s", f.Package, f.Src)
	}
	return out, nil
}

// addModules puts the module files of the given stages and the manifest into t.
func addModules(t *fstree.Tree, k *kernel.Extracted, mods []kmod.Module) error {
	for _, m := range mods {
		if err := t.AddFile(m.Path, 0o644, k.ModulePath(m)); err != nil {
			return err
		}
	}
	text, err := k.Manifest.Text()
	if err != nil {
		return err
	}
	return t.AddData(kmod.ManifestPath(k.Release), 0o644, text)
}

// rootTree is the content of the root squashfs.
func rootTree(o *Options, st *inputs.Store, k *kernel.Extracted, comps *components.Set) (*fstree.Tree, error) {
	t := fstree.New()
	// system/state is where machined mounts STATE on a node.
	for _, d := range []string{"dev", "proc", "sys", "run", "var", "etc", "usr/bin", "usr/lib", "mnt", "boot", "system/state"} {
		if err := t.AddDir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := t.AddDir("tmp", 0o1777); err != nil {
		return nil, err
	}
	// The mount point of machined's binding (one copy of machined, in the initramfs).
	if err := t.AddData(MachinedPath, 0o755, nil); err != nil {
		return nil, err
	}
	osr := []byte(osRelease(o.Board, o.Version))
	if err := t.AddData("usr/lib/os-release", 0o644, osr); err != nil {
		return nil, err
	}
	if err := t.AddSymlink("etc/os-release", "../usr/lib/os-release"); err != nil {
		return nil, err
	}
	ca, err := caBundle(st)
	if err != nil {
		return nil, err
	}
	if err := t.AddData(CABundle, 0o644, ca); err != nil {
		return nil, err
	}
	// The root holds every module of the manifest, early ones too: after the switch to
	// the root, init's coldplug may load any manifest module by its path.
	if err := addModules(t, k, k.Manifest.Modules); err != nil {
		return nil, err
	}
	if comps != nil {
		if err := comps.AddTo(t); err != nil {
			return nil, fmt.Errorf("components: %w", err)
		}
	}
	for _, x := range o.Extras {
		dst := strings.TrimPrefix(path.Clean("/"+x.Dst), "/")
		if err := t.AddHost(dst, x.Src); err != nil {
			return nil, fmt.Errorf("extra %s: %w", x.Src, err)
		}
	}
	return t, nil
}

// initramfsTree is the content of the initramfs.
func initramfsTree(o *Options, k *kernel.Extracted, initBin, machined, rootImage string) (*fstree.Tree, error) {
	t := fstree.New()
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "sysroot", "etc"} {
		if err := t.AddDir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := t.Add(fstree.Entry{Path: "dev/console", Kind: fstree.CharDev, Perm: 0o600, Major: 5, Minor: 1}); err != nil {
		return nil, err
	}
	if err := t.AddFile("init", 0o755, initBin); err != nil {
		return nil, err
	}
	if err := t.AddFile(InitramfsMachined, 0o755, machined); err != nil {
		return nil, err
	}
	if err := t.AddData("etc/os-release", 0o644, []byte(osRelease(o.Board, o.Version))); err != nil {
		return nil, err
	}
	// Only what mounting the root needs: every other module loads from the root, and a
	// smaller initramfs is less for the kernel to unpack at every boot.
	mods, err := k.Manifest.WithDeps(o.Board.Modules().Initramfs)
	if err != nil {
		return nil, err
	}
	if err := addModules(t, k, mods); err != nil {
		return nil, err
	}
	if err := t.AddFile(RootImage, 0o644, rootImage); err != nil {
		return nil, err
	}
	return t, nil
}

// efiTree is the content of the EFI system partition (and the ISO's El Torito image).
func efiTree(b boards.Board, bootloader []byte, ukiPath, ukiName string) (*fstree.Tree, error) {
	t := fstree.New()
	boot := b.Boot()
	if err := t.AddData(boot.Bootloader.Dst, 0o644, bootloader); err != nil {
		return nil, err
	}
	if err := t.AddData("loader/loader.conf", 0o644, []byte(LoaderConf)); err != nil {
		return nil, err
	}
	if err := t.AddFile(ukiName, 0o644, ukiPath); err != nil {
		return nil, err
	}
	return t, nil
}

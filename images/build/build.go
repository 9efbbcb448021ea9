package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/components"
	"github.com/kiln-os/kiln/images/disk"
	"github.com/kiln-os/kiln/images/fstree"
	"github.com/kiln-os/kiln/images/initramfs"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/iso"
	"github.com/kiln-os/kiln/images/kernel"
	"github.com/kiln-os/kiln/images/qcow2"
	"github.com/kiln-os/kiln/images/squashfs"
	"github.com/kiln-os/kiln/images/uki"
)

// Result lists what a build wrote.
type Result struct {
	Files         []string // absolute paths in OutputDir
	KernelRelease string
	// RootImageSize is the compressed root squashfs, UKISize the UKI (0 when no output
	// needs one), EFISize the EFI partition of raw and qcow2 outputs (0 without them).
	RootImageSize, UKISize, EFISize int64
}

func (o *Options) wants(f boards.Format) bool {
	for _, x := range o.Formats {
		if x == f {
			return true
		}
	}
	return false
}

// Build assembles the images o asks for. On error nothing is left in OutputDir.
func Build(ctx context.Context, o Options) (res *Result, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	b := o.Board
	needUKI := o.wants(boards.FormatUKI) || o.wants(boards.FormatRaw) || o.wants(boards.FormatQCOW2) || o.wants(boards.FormatISO)
	steps := []string{"check inputs", "node binaries", "kernel", "root squashfs", "initramfs"}
	if needUKI {
		steps = append(steps, "uki")
	}
	for _, f := range boards.AllFormats {
		if o.wants(f) && f != boards.FormatUKI {
			steps = append(steps, string(f))
		}
	}
	steps = append(steps, "move into place")
	n := 0
	step := func() {
		if o.Progress != nil {
			o.Progress(steps[n], n, len(steps))
		}
		o.Log.Info("build step", "step", steps[n])
		n++
	}

	// Everything that can be wrong with the request is checked before any output exists.
	step()
	if o.Config != nil {
		if o.ValidateConfig == nil {
			return nil, fmt.Errorf("--config given but no validator")
		}
		if err := o.ValidateConfig(o.Config); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	st := inputs.NewStore(o.InputsDir, nil)
	if err := st.Verify(b); err != nil {
		return nil, err
	}
	var comps *components.Set
	if o.Components != "" {
		if comps, err = components.Load(o.Components, b.Arch()); err != nil {
			return nil, err
		}
	}
	if err := squashfs.Available(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(o.OutputDir); errors.Is(err, fs.ErrNotExist) {
		// Created here, so removed again if the build fails: no trace of a failed build.
		defer func() {
			if res == nil {
				os.Remove(o.OutputDir)
			}
		}()
	}
	if err := os.MkdirAll(o.OutputDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	// The temporary directory sits beside the outputs so the final rename stays on one
	// filesystem (and fails early if the output directory is not writable).
	tmp, err := os.MkdirTemp(o.OutputDir, ".kiln-build-")
	if err != nil {
		return nil, fmt.Errorf("output directory %s not writable: %w", o.OutputDir, err)
	}
	defer os.RemoveAll(tmp)
	outDir := filepath.Join(tmp, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		return nil, err
	}

	step()
	initBin, err := binary(ctx, o.Init, "init", initPackages, b.Arch(), o.Version, tmp)
	if err != nil {
		return nil, err
	}
	machined, err := binary(ctx, o.Machined, "machined", machinedPackages, b.Arch(), o.Version, tmp)
	if err != nil {
		return nil, err
	}

	step()
	// A kernel built from source is made beforehand (make kernel, kctl image kernel):
	// an image build stays a matter of a minute.
	k, err := kernel.For(st, b, o.CacheDir, o.Log)
	if err != nil {
		return nil, err
	}

	step()
	root, err := rootTree(&o, st, k, comps)
	if err != nil {
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	rootImg := filepath.Join(tmp, RootImage)
	comp, err := squashfsCompression(k)
	if err != nil {
		return nil, err
	}
	if err := squashfs.Write(ctx, root, rootImg, squashfs.Options{Epoch: o.Epoch, TempDir: tmp, Compression: comp}); err != nil {
		return nil, err
	}
	done := &Result{KernelRelease: k.Release}
	if done.RootImageSize, err = fileSize(rootImg); err != nil {
		return nil, err
	}

	step()
	irTree, err := initramfsTree(&o, k, initBin, machined, rootImg)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	irPath := filepath.Join(tmp, "initramfs.zst")
	if err := writeWith(irPath, func(f *os.File) error { return initramfs.Write(f, irTree, o.Epoch) }); err != nil {
		return nil, err
	}

	cmdline := boards.Cmdline(b)
	ukiPath := filepath.Join(tmp, "kiln.efi")
	if needUKI {
		step()
		if err := writeUKI(&o, st, k, irPath, cmdline, ukiPath); err != nil {
			return nil, err
		}
		if done.UKISize, err = fileSize(ukiPath); err != nil {
			return nil, err
		}
	}

	var efi, isoEFI *fstree.Tree
	layout := b.Layout()
	if o.wants(boards.FormatRaw) || o.wants(boards.FormatQCOW2) || o.wants(boards.FormatISO) {
		loader, err := packageFile(st, *b.Boot().Bootloader)
		if err != nil {
			return nil, err
		}
		layout = sizedLayout(layout, done.UKISize, int64(len(loader)+len(LoaderConf)))
		if o.wants(boards.FormatRaw) || o.wants(boards.FormatQCOW2) {
			done.EFISize = layout.PartitionSize(boards.LabelEFI)
		}
		if efi, err = efiTree(b, loader, ukiPath, UKIName); err != nil {
			return nil, err
		}
		if isoEFI, err = efiTree(b, loader, ukiPath, ISOUKIName); err != nil {
			return nil, err
		}
	}
	out := func(f boards.Format) []string {
		names := OutputName(b, f)
		for i := range names {
			names[i] = filepath.Join(outDir, names[i])
		}
		return names
	}
	rawPath := filepath.Join(tmp, "disk.raw")
	for _, f := range boards.AllFormats {
		if !o.wants(f) || f == boards.FormatUKI {
			continue
		}
		step()
		switch f {
		case boards.FormatKernel:
			p := out(f)
			if err := copyFile(k.Image(), p[0]); err != nil {
				return nil, err
			}
			if err := copyFile(irPath, p[1]); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p[2], []byte(cmdline+"\n"), 0o644); err != nil {
				return nil, err
			}
		case boards.FormatRaw, boards.FormatQCOW2:
			if _, err := os.Stat(rawPath); errors.Is(err, fs.ErrNotExist) {
				if err := writeRaw(&o, layout, efi, rawPath); err != nil {
					return nil, err
				}
			}
			if f == boards.FormatRaw {
				if err := os.Link(rawPath, out(f)[0]); err != nil {
					return nil, err
				}
				continue
			}
			if err := writeWith(out(f)[0], func(w *os.File) error { return qcow2.Convert(w, rawPath) }); err != nil {
				return nil, err
			}
		case boards.FormatISO:
			if err := iso.Write(out(f)[0], iso.Options{
				EFI: isoEFI, Epoch: o.Epoch, VolumeID: "KILN", TempDir: tmp, WriteFAT: disk.WriteFAT,
			}); err != nil {
				return nil, err
			}
		}
	}
	if o.wants(boards.FormatUKI) {
		if err := os.Link(ukiPath, out(boards.FormatUKI)[0]); err != nil {
			return nil, err
		}
	}

	step()
	for _, f := range boards.AllFormats {
		if !o.wants(f) {
			continue
		}
		for _, p := range out(f) {
			dst := filepath.Join(o.OutputDir, filepath.Base(p))
			if err := os.Rename(p, dst); err != nil {
				return nil, fmt.Errorf("move output into place: %w", err)
			}
			done.Files = append(done.Files, dst)
		}
	}
	return done, nil
}

// squashfsCompression picks zstd, or xz when the kernel cannot read zstd squashfs.
func squashfsCompression(k *kernel.Extracted) (string, error) {
	cfg, err := os.ReadFile(k.Config())
	if err != nil {
		return "", fmt.Errorf("kernel config: %w", err)
	}
	switch {
	case bytes.Contains(cfg, []byte("\nCONFIG_SQUASHFS_ZSTD=y\n")):
		return "zstd", nil
	case bytes.Contains(cfg, []byte("\nCONFIG_SQUASHFS_XZ=y\n")):
		return "xz", nil
	}
	return "", fmt.Errorf("kernel %s reads neither zstd nor xz squashfs (CONFIG_SQUASHFS_ZSTD, CONFIG_SQUASHFS_XZ)", k.Release)
}

func writeUKI(o *Options, st *inputs.Store, k *kernel.Extracted, irPath, cmdline, out string) error {
	stub, err := packageFile(st, *o.Board.Boot().Stub)
	if err != nil {
		return err
	}
	linux, err := os.ReadFile(k.Image())
	if err != nil {
		return err
	}
	ir, err := os.ReadFile(irPath)
	if err != nil {
		return err
	}
	secs := uki.Sections(osRelease(o.Board, o.Version), cmdline, k.Release, ir, linux)
	return writeWith(out, func(f *os.File) error { return uki.Write(f, stub, secs) })
}

// sizedLayout is the board's layout with the EFI partition grown, when needed, to hold
// two UKIs of ukiSize bytes with headroom besides other bytes of files (boards.EFISize).
func sizedLayout(l boards.Layout, ukiSize, other int64) boards.Layout {
	min := l.PartitionSize(boards.LabelEFI)
	if min == 0 {
		return l
	}
	if size := boards.EFISize(min, ukiSize, other); size != min {
		return l.WithEFISize(size)
	}
	return l
}

func writeRaw(o *Options, layout boards.Layout, efi *fstree.Tree, path string) error {
	state := fstree.New()
	if o.Config != nil {
		if err := state.AddData(StateConfig, 0o600, o.Config); err != nil {
			return err
		}
	}
	return disk.WriteGPT(path, layout, disk.Options{
		Seed:  o.Seed,
		Epoch: o.Epoch,
		Contents: map[string]*fstree.Tree{
			boards.LabelEFI:   efi,
			boards.LabelState: state,
		},
	})
}

func fileSize(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func writeWith(path string, fn func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFile(src, dst string) error {
	return writeWith(dst, func(w *os.File) error {
		r, err := os.Open(src)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = w.ReadFrom(r)
		return err
	})
}

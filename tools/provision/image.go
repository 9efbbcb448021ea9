package provision

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/build"
	"github.com/kiln-os/kiln/machined/version"
)

// buildImage builds o.Board into dir (raw disk, and the kernel outputs for direct boot)
// from the inputs, with init and machined built from the Kiln module in the working
// directory, and returns the disk image's path.
func buildImage(ctx context.Context, o *Options, dir string) (string, error) {
	b, err := boards.Lookup(o.Board)
	if err != nil {
		return "", err
	}
	if string(b.Arch()) != o.Arch {
		return "", fmt.Errorf("board %s is %s, but --arch is %s", b.Name(), b.Arch(), o.Arch)
	}
	formats := []boards.Format{boards.FormatRaw}
	if o.Boot == BootDirect {
		formats = append(formats, boards.FormatKernel)
	}
	epoch, err := build.EpochFromEnv()
	if err != nil {
		return "", err
	}
	if _, err := build.Build(ctx, build.Options{
		Board: b, Formats: formats, OutputDir: dir, InputsDir: o.InputsDir, Epoch: epoch, Log: o.Log,
		// The node reports the version of the kctl that built it.
		Version: version.Tag,
	}); err != nil {
		return "", fmt.Errorf("build image %s: %w", b.Name(), err)
	}
	return filepath.Join(dir, build.OutputName(b, boards.FormatRaw)[0]), nil
}

package build

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/kiln-os/kiln/boards"
)

// DefaultEpoch is the timestamp of every file when SOURCE_DATE_EPOCH is not set
// (2025-01-01T00:00:00Z): images are reproducible by default.
const DefaultEpoch int64 = 1735689600

// Extra is a host file or directory the root filesystem takes: the extension point for
// Kubernetes, containerd, runc, CNI plugins and image archives.
type Extra struct {
	Src string // host path
	Dst string // path in the root filesystem
}

// Options of one build.
type Options struct {
	Board   boards.Board
	Formats []boards.Format
	// OutputDir receives the outputs; it is created if missing. Outputs are named
	// <board>.<ext> and replace files of the same name.
	OutputDir string
	// InputsDir holds the pinned .deb files (default _out/cache).
	InputsDir string
	// CacheDir keeps the extracted kernel between builds.
	CacheDir string
	// Init and Machined are the binaries for the board's arch; empty: built with go build
	// from the module in the working directory.
	Init, Machined string
	// Config is a machine config for the STATE partition (nil: none), checked first by
	// ValidateConfig.
	Config         []byte
	ValidateConfig func([]byte) error
	// Extras go into the root filesystem.
	Extras []Extra
	// Components is a directory of upstream components for the board's arch in the
	// layout controlplane/build.sh writes ($KILN_COMPONENTS/<arch>); empty: none. They
	// go into the root filesystem at the paths of package images/components.
	Components string
	// Epoch fixes every timestamp; Seed fixes the GUIDs (default: board name).
	Epoch int64
	Seed  string
	// Version is written into os-release and stamped into init and machined when the
	// builder builds them (given binaries keep their own).
	Version string
	// Progress, if set, is told each step as it starts.
	Progress func(step string, n, total int)
	Log      *slog.Logger
}

// EpochFromEnv returns SOURCE_DATE_EPOCH, or DefaultEpoch when it is unset.
func EpochFromEnv() (int64, error) {
	s, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok || s == "" {
		return DefaultEpoch, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 315532800 { // FAT cannot store times before 1980
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970, at least 315532800 (1980)", s)
	}
	return v, nil
}

// OutputName is the file name of a format's output for board b.
func OutputName(b boards.Board, f boards.Format) []string {
	n := b.Name()
	switch f {
	case boards.FormatKernel:
		return []string{n + "-vmlinuz", n + "-initramfs.zst", n + "-cmdline.txt"}
	case boards.FormatUKI:
		return []string{n + ".efi"}
	case boards.FormatRaw:
		return []string{n + ".raw"}
	case boards.FormatQCOW2:
		return []string{n + ".qcow2"}
	case boards.FormatISO:
		return []string{n + ".iso"}
	}
	return nil
}

func (o *Options) defaults() error {
	if o.Board == nil {
		return fmt.Errorf("no board given")
	}
	if len(o.Formats) == 0 {
		return fmt.Errorf("no output format given")
	}
	for _, f := range o.Formats {
		if !boards.Supports(o.Board, f) {
			return fmt.Errorf("board %s does not support format %s", o.Board.Name(), f)
		}
	}
	if o.OutputDir == "" {
		return fmt.Errorf("no output directory given")
	}
	if o.InputsDir == "" {
		o.InputsDir = "_out/cache"
	}
	if o.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no cache directory: %w", err)
		}
		o.CacheDir = d + "/kiln"
	}
	if o.Seed == "" {
		o.Seed = o.Board.Name()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Epoch == 0 {
		o.Epoch = DefaultEpoch
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

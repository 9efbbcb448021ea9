// Package squashfs writes the node's read-only root filesystem image with mksquashfs
// (squashfs-tools). go-diskfs has a squashfs writer, but it stamps the superblock and
// every inode with time.Now() and offers no override, so its images are not
// reproducible; mksquashfs with -all-root, -mkfs-time/-all-time and -reproducible is.
package squashfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-os/kiln/images/fstree"
)

// Options for Write.
type Options struct {
	// Epoch is the timestamp of every inode and of the superblock (SOURCE_DATE_EPOCH).
	Epoch int64
	// Compression is zstd (default) or xz.
	Compression string
	// Level is the zstd compression level (default 15, mksquashfs's default).
	Level int
	// TempDir holds the staging copy of the tree.
	TempDir string
}

// Available reports whether mksquashfs is installed.
func Available() error {
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		return fmt.Errorf("mksquashfs not found: install squashfs-tools")
	}
	return nil
}

// Write makes a squashfs image of t at out.
func Write(ctx context.Context, t *fstree.Tree, out string, o Options) error {
	if err := Available(); err != nil {
		return err
	}
	stage, err := os.MkdirTemp(o.TempDir, "squashfs-stage-")
	if err != nil {
		return fmt.Errorf("squashfs: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := t.Stage(stage); err != nil {
		return fmt.Errorf("squashfs: %w", err)
	}
	// mksquashfs takes the root directory's mode from the staging directory itself.
	if err := os.Chmod(stage, 0o755); err != nil {
		return fmt.Errorf("squashfs: %w", err)
	}
	comp := o.Compression
	if comp == "" {
		comp = "zstd"
	}
	epoch := strconv.FormatInt(o.Epoch, 10)
	args := []string{stage, out, "-noappend", "-quiet", "-no-progress", "-comp", comp,
		"-b", "1M", "-all-root", "-no-xattrs", "-reproducible",
		"-mkfs-time", epoch, "-all-time", epoch}
	if comp == "zstd" {
		lvl := o.Level
		if lvl == 0 {
			lvl = 15
		}
		args = append(args, "-Xcompression-level", strconv.Itoa(lvl))
	}
	cmd := exec.CommandContext(ctx, "mksquashfs", args...)
	// mksquashfs refuses -mkfs-time/-all-time when SOURCE_DATE_EPOCH is set; the epoch
	// is passed explicitly instead.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mksquashfs %s: %w: %s", filepath.Base(out), err, strings.TrimSpace(string(b)))
	}
	return nil
}

// List returns the paths and modes in a squashfs image as `unsquashfs -lln` prints them
// (for tests and inspect).
func List(ctx context.Context, image string) (string, error) {
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		return "", fmt.Errorf("unsquashfs not found: install squashfs-tools")
	}
	b, err := exec.CommandContext(ctx, "unsquashfs", "-lln", "-d", "", image).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("unsquashfs -lln %s: %w: %s", image, err, b)
	}
	return string(b), nil
}

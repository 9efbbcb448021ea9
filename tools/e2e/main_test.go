package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/build"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kernel"
	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

var (
	run             = flag.Bool("e2e", false, "run the QEMU end-to-end tests (make e2e); without it they skip, so go test ./... stays fast")
	powerLossRounds = flag.Int("e2e.power-loss-rounds", 20, "how many times TestPowerLoss kills QEMU during an apply-config")
	settle          = flag.Duration("e2e.power-loss-settle", 0, "TestPowerLoss: wait this long after the first (maintenance) apply before cutting the power (diagnosis of write-back)")
)

// env is what TestMain prepared for every test.
var env struct {
	skip string // why every test skips; "" when the environment is complete

	dir  string // temporary directory of the run
	kctl string // the kctl binary

	board   boards.Board
	raw     string // the disk image (UEFI boot; STATE/EPHEMERAL for direct boot)
	kernel  string
	initrd  string
	cmdline string // the board's kernel command line (from the image's cmdline.txt)
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if !*run {
		env.skip = "QEMU end-to-end tests take minutes: run them with -e2e (make e2e)"
		return m.Run()
	}
	root, err := qemutest.RepoRoot()
	if err != nil {
		env.skip = fmt.Sprintf("needs the Kiln source tree: %v", err)
		return m.Run()
	}
	env.board = boards.GenericAMD64()
	if env.skip = missing(root); env.skip != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "kiln-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.dir = dir
	start := time.Now()
	if err := buildAll(root, dir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build the node image: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: built kctl, init, machined and the %s image in %s\n", env.board.Name(), time.Since(start).Round(100*time.Millisecond))
	return m.Run()
}

// missing says which tool or input the tests lack, or "".
func missing(root string) string {
	for _, tool := range []struct{ bin, pkg string }{
		{qemu.Binary(qemu.AMD64), "qemu-system-x86 (bookworm-backports)"},
		{"qemu-img", "qemu-utils"},
		{"mksquashfs", "squashfs-tools"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			return fmt.Sprintf("needs %s: install %s (make setup)", tool.bin, tool.pkg)
		}
	}
	if _, _, err := qemu.Firmware(qemu.AMD64); err != nil {
		return fmt.Sprintf("needs UEFI firmware: %v", err)
	}
	st := inputs.NewStore(filepath.Join(root, "_out", "cache"), nil)
	if err := st.Verify(env.board); err != nil {
		return fmt.Sprintf("needs the pinned inputs in _out/cache (run make inputs): %v", err)
	}
	if err := kernel.Ready(st, env.board); err != nil {
		return fmt.Sprintf("needs the built kernel: %v", err)
	}
	return ""
}

// buildAll builds kctl for the host and init and machined for the node (static, as the
// Makefile does), then the image with raw and kernel outputs.
func buildAll(root, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env.kctl = filepath.Join(dir, "kctl")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", env.kctl, "./tools/kctl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./tools/kctl: %w\n%s", err, out)
	}
	arch := env.board.Arch()
	initBin, machined := filepath.Join(dir, "init"), filepath.Join(dir, "machined")
	if err := build.GoBuild(ctx, root, "./init", arch, initBin); err != nil {
		return err
	}
	if err := build.GoBuild(ctx, root, "./machined/cmd/machined", arch, machined); err != nil {
		return err
	}
	out := filepath.Join(dir, "image")
	if _, err := build.Build(ctx, build.Options{
		Board:     env.board,
		Formats:   []boards.Format{boards.FormatRaw, boards.FormatKernel},
		OutputDir: out,
		InputsDir: filepath.Join(root, "_out", "cache"),
		Init:      initBin,
		Machined:  machined,
		Version:   "e2e",
	}); err != nil {
		return err
	}
	name := env.board.Name()
	env.raw = filepath.Join(out, name+".raw")
	env.kernel = filepath.Join(out, name+"-vmlinuz")
	env.initrd = filepath.Join(out, name+"-initramfs.zst")
	b, err := os.ReadFile(filepath.Join(out, name+"-cmdline.txt"))
	if err != nil {
		return err
	}
	env.cmdline = strings.TrimSpace(string(b))
	return nil
}

// need skips the test when the environment lacks something.
func need(t *testing.T) {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
}

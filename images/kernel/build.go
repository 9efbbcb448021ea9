package kernel

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kmod"
)

// buildScript unpacks Debian's source, applies the configuration and builds the image;
// its bytes are part of every build's key.
//
//go:embed build-kernel.sh
var buildScript []byte

// buildVersion changes whenever the layout of a build directory changes.
const buildVersion = "kiln-kernel-build-1"

// ErrNotBuilt says that a board's kernel is built from source and its build is not in
// the store yet.
var ErrNotBuilt = errors.New("kernel not built")

// toolchain returns what identifies the compiler and pahole a build runs with: their
// version lines. A build made with another toolchain is another build.
var toolchain = func() (string, error) {
	var parts []string
	for _, c := range [][]string{{"gcc", "--version"}, {"pahole", "--version"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w (the kernel build needs it; tools/setup/debian.sh installs it)", c[0], err)
		}
		first, _, _ := strings.Cut(string(out), "\n")
		parts = append(parts, strings.TrimSpace(first))
	}
	return strings.Join(parts, "\n"), nil
}

// BuildKey identifies the build of b's kernel: the source and configuration packages
// (their pinned sha256), the board's fragment, the build script and the toolchain.
func BuildKey(st *inputs.Store, b boards.Board) (string, error) {
	kb := b.Kernel().Build
	if kb == nil {
		return "", fmt.Errorf("board %s takes Debian's kernel package; it builds no kernel", b.Name())
	}
	tc, err := toolchain()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", buildVersion, b.Arch(), b.Kernel().Release)
	for _, ref := range []boards.PackageRef{kb.Source, kb.Config} {
		e, err := st.Lock.Find(ref)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %s\n", ref, e.SHA256)
	}
	fmt.Fprintf(h, "%s\n%d\n%s\n%d\n%s\n%s\n", kb.ConfigName, len(kb.Fragment), kb.Fragment,
		len(buildScript), buildScript, tc)
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}

// BuildDir is where the build of b's kernel is kept: <inputs>/kernels/<board>-<key>.
// `.ci/run` links <inputs>/kernels to a directory kept between runs.
func BuildDir(st *inputs.Store, b boards.Board) (string, error) {
	key, err := BuildKey(st, b)
	if err != nil {
		return "", err
	}
	return filepath.Join(st.Dir, "kernels", b.Name()+"-"+key), nil
}

// Built returns b's kernel as built earlier by Build; the error wraps ErrNotBuilt when
// there is no build for the current inputs.
func Built(st *inputs.Store, b boards.Board) (*Extracted, error) {
	dir, err := BuildDir(st, b)
	if err != nil {
		return nil, err
	}
	return builtIn(dir, b)
}

// builtIn is Built for b's build directory dir.
func builtIn(dir string, b boards.Board) (*Extracted, error) {
	e, err := loadBuilt(dir, b)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: board %s builds its kernel from Debian's source and %s does not exist: run make kernel (about 40 min on two cores)",
			ErrNotBuilt, b.Name(), dir)
	}
	return e, err
}

// Build returns b's built kernel, building it first when the store has no build for
// the current inputs. The build's output goes to w. A failed build leaves nothing in
// the store.
func Build(ctx context.Context, st *inputs.Store, b boards.Board, w io.Writer, log *slog.Logger) (*Extracted, error) {
	dir, err := BuildDir(st, b)
	if err != nil {
		return nil, err
	}
	if e, err := builtIn(dir, b); !errors.Is(err, ErrNotBuilt) {
		return e, err
	}
	kb := b.Kernel().Build
	if b.Arch() != boards.AMD64 {
		return nil, fmt.Errorf("board %s: building the kernel is done for amd64 only so far", b.Name())
	}
	src, err := st.Path(kb.Source)
	if err != nil {
		return nil, err
	}
	cfg, err := st.Path(kb.Config)
	if err != nil {
		return nil, err
	}
	// One build at a time in a store (each takes every CPU): a second make kernel
	// waits and then finds the first one's build. The lock is on the kernels
	// directory itself, so it leaves no file behind. Holding it, nothing else writes
	// there, so what a build killed outright (SIGKILL, power loss) left beside its
	// output can go.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("kernel builds: %w", err)
	}
	unlock, err := lockBuild(ctx, filepath.Dir(dir))
	if err != nil {
		return nil, fmt.Errorf("kernel builds: %w", err)
	}
	defer unlock()
	if e, err := builtIn(dir, b); !errors.Is(err, ErrNotBuilt) {
		return e, err
	}
	stale, _ := filepath.Glob(dir + ".work.*")
	inputsLeft, _ := filepath.Glob(dir + ".inputs-*")
	for _, p := range append(stale, inputsLeft...) {
		log.Info("removing what an interrupted kernel build left", "path", p)
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("kernel builds: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".inputs-")
	if err != nil {
		return nil, fmt.Errorf("kernel builds: %w", err)
	}
	defer os.RemoveAll(tmp)
	script, frag := filepath.Join(tmp, "build-kernel.sh"), filepath.Join(tmp, b.Name()+".config")
	if err := os.WriteFile(script, buildScript, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(frag, []byte(kb.Fragment), 0o644); err != nil {
		return nil, err
	}
	// The script maps its work directory, which it makes beside its output, out of the
	// debug information; the compiler names the directory it runs in by its absolute
	// path without symbolic links, so the script is given the output by that path too
	// (a relative one, or one through _out/cache/kernels → /var/cache/kiln/kernels,
	// would match nothing, and the image would carry the directory in its build IDs).
	out, err := physicalPath(dir)
	if err != nil {
		return nil, fmt.Errorf("kernel builds: %w", err)
	}
	log.Info("building kernel from Debian's source", "board", b.Name(), "release", b.Kernel().Release, "dir", dir)
	var tail tailBuffer
	cmd := exec.CommandContext(ctx, "bash", script, src, cfg, kb.ConfigName, frag, out)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(w, &tail), io.MultiWriter(w, &tail)
	inGroup(cmd)
	if err := cmd.Run(); err != nil {
		// The script renames its output into place last: a failed build left nothing.
		return nil, fmt.Errorf("building the kernel of %s: %w\n%s", b.Name(), err, tail.String())
	}
	return loadBuilt(dir, b)
}

// physicalPath returns path as an absolute path without symbolic links; its parent
// must exist.
func physicalPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// For returns b's kernel for an image: taken out of its Debian package (Extract), or
// the build make kernel made (Built; an ErrNotBuilt error when there is none).
func For(st *inputs.Store, b boards.Board, cacheDir string, log *slog.Logger) (*Extracted, error) {
	if b.Kernel().Build == nil {
		return Extract(st, b, cacheDir, log)
	}
	return Built(st, b)
}

// Ready says whether b's kernel can go into an image without a build first: always
// for a kernel taken from its package; for one built from source once make kernel has
// built it (the error wraps ErrNotBuilt otherwise). Tests that build images skip on it.
func Ready(st *inputs.Store, b boards.Board) error {
	if b.Kernel().Build == nil {
		return nil
	}
	_, err := Built(st, b)
	return err
}

// loadBuilt reads a build directory: vmlinuz, config and release, as build-kernel.sh
// leaves them. The kernel has no modules, so its manifest is empty.
func loadBuilt(dir string, b boards.Board) (*Extracted, error) {
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return nil, err
	}
	release := strings.TrimSpace(string(rel))
	if want := b.Kernel().Release; release != want {
		return nil, fmt.Errorf("kernel build %s is release %s, board %s wants %s", dir, release, b.Name(), want)
	}
	e := &Extracted{Dir: dir, Release: release, Manifest: &kmod.Manifest{Kernel: release}}
	for _, p := range []string{e.Image(), e.Config()} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kernel build %s is incomplete (delete it and run make kernel): %v", dir, err)
		}
	}
	return e, nil
}

// tailBuffer keeps the end of what is written to it, for an error message.
type tailBuffer struct{ b []byte }

const tailKeep = 4096

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailKeep {
		t.b = t.b[len(t.b)-tailKeep:]
	}
	return len(p), nil
}

// String is the kept end from its first whole line on.
func (t *tailBuffer) String() string {
	s := string(t.b)
	if len(t.b) == tailKeep {
		if _, rest, ok := strings.Cut(s, "\n"); ok {
			s = rest
		}
	}
	return strings.TrimSpace(s)
}

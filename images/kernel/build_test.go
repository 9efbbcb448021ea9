package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/inputs"
)

// fragmentBoard is generic-amd64 with another configuration fragment.
type fragmentBoard struct {
	boards.Board
	fragment string
}

func (f fragmentBoard) Kernel() boards.Kernel {
	k := f.Board.Kernel()
	kb := *k.Build
	kb.Fragment = f.fragment
	k.Build = &kb
	return k
}

func TestBuildKey(t *testing.T) {
	st := inputs.NewStore(t.TempDir(), nil)
	b := boards.GenericAMD64()
	base, err := BuildKey(st, b)
	if err != nil {
		t.Skipf("needs the kernel's toolchain: %v", err)
	}
	if again, _ := BuildKey(st, b); again != base {
		t.Fatalf("BuildKey is not stable: %s, then %s", base, again)
	}
	other := func(name string, key func() (string, error)) {
		t.Helper()
		k, err := key()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if k == base {
			t.Errorf("%s: key unchanged (%s); a build of other inputs would be taken for this one", name, k)
		}
	}
	other("fragment", func() (string, error) {
		return BuildKey(st, fragmentBoard{b, b.Kernel().Build.Fragment + "CONFIG_E1000=n\n"})
	})
	other("source pin", func() (string, error) {
		lock := *inputs.DefaultLock()
		lock.Entries = append([]inputs.Entry(nil), lock.Entries...)
		for i, e := range lock.Entries {
			if e.Ref() == b.Kernel().Build.Source {
				lock.Entries[i].SHA256 = strings.Repeat("0", 64)
			}
		}
		return BuildKey(inputs.NewStore(st.Dir, &lock), b)
	})
	other("toolchain", func() (string, error) {
		saved := toolchain
		defer func() { toolchain = saved }()
		toolchain = func() (string, error) { return "gcc (other) 13.0\nv1.25", nil }
		return BuildKey(st, b)
	})
	other("script", func() (string, error) {
		saved := buildScript
		defer func() { buildScript = saved }()
		buildScript = append(bytes.Clone(saved), "\n# changed\n"...)
		return BuildKey(st, b)
	})

	if _, err := BuildKey(st, boards.GenericARM64()); err == nil {
		t.Errorf("BuildKey(generic-arm64) succeeded; that board takes Debian's package")
	}
}

func TestBuiltMissing(t *testing.T) {
	st := inputs.NewStore(t.TempDir(), nil)
	_, err := Built(st, boards.GenericAMD64())
	if errors.Is(err, exec.ErrNotFound) {
		t.Skipf("needs the kernel's toolchain: %v", err)
	}
	if !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "run make kernel") {
		t.Errorf("Built() in an empty store = %v, want ErrNotBuilt telling to run make kernel", err)
	}
}

// realStore returns the inputs with Debian's kernel source, or skips the test.
func realStore(t *testing.T) *inputs.Store {
	t.Helper()
	st := inputs.NewStore(inputsDir(), nil)
	kb := boards.GenericAMD64().Kernel().Build
	for _, ref := range []boards.PackageRef{kb.Source, kb.Config} {
		if _, err := st.Path(ref); err != nil {
			t.Skipf("needs inputs: run make inputs (%v)", err)
		}
	}
	if _, err := toolchain(); err != nil {
		t.Skipf("needs the kernel's toolchain: %v", err)
	}
	return st
}

// linkedStore returns a store in dir that links to real's kernel source and
// configuration packages and has no builds.
func linkedStore(t *testing.T, real *inputs.Store, dir string) *inputs.Store {
	t.Helper()
	st := inputs.NewStore(dir, nil)
	for _, ref := range []boards.PackageRef{boards.GenericAMD64().Kernel().Build.Source, boards.GenericAMD64().Kernel().Build.Config} {
		p, err := real.Path(ref)
		if err == nil {
			p, err = filepath.Abs(p) // the link is read from another directory
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(st.Dir, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestBuildReproducible builds generic-amd64's kernel a second time, in another
// directory, and compares it byte for byte with the build make kernel made. It takes
// as long as make kernel (~40 min on two cores), so it runs only when asked:
// make kernel-repro. A build that differs is kept for a look (its path is logged).
func TestBuildReproducible(t *testing.T) {
	if os.Getenv("KILN_KERNEL_REPRO") == "" {
		t.Skip("a second kernel build takes ~40 min; make kernel-repro runs it (KILN_KERNEL_REPRO=1)")
	}
	real, first := builtKernel(t)
	b := boards.GenericAMD64()
	dir, err := os.MkdirTemp("", "kiln-kernel-repro-")
	if err != nil {
		t.Fatal(err)
	}
	// The second build's store is named as make kernel names its own: by a relative
	// path, through a symbolic link (_out/cache/kernels → /var/cache/kiln/kernels).
	linkedDir(t, dir)
	linkedStore(t, real, filepath.Join(dir, "link"))
	firstDir, err := filepath.Abs(first.Dir) // read after the change of directory
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	st := inputs.NewStore("link", nil)
	second, err := Build(context.Background(), st, b, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	same := true
	for _, name := range []string{"vmlinuz", "config", "release"} {
		one, err := os.ReadFile(filepath.Join(firstDir, name))
		if err != nil {
			t.Fatal(err)
		}
		two, err := os.ReadFile(filepath.Join(second.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(one, two) {
			same = false
			t.Errorf("%s differs: sha256 %x in %s, %x in %s", name, sha256.Sum256(one), firstDir, sha256.Sum256(two), filepath.Join(dir, "real", filepath.Base(second.Dir)))
		}
	}
	if same {
		os.RemoveAll(dir)
		return
	}
	t.Logf("the second build is kept in %s", filepath.Join(dir, "real", filepath.Base(second.Dir)))
}

// linkedDir makes dir/real and dir/link, a relative symbolic link to it.
func linkedDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

// TestPhysicalPath: the build script gets its output by the path the compiler will see
// as its working directory.
func TestPhysicalPath(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	linkedDir(t, dir)
	t.Chdir(dir)
	got, err := physicalPath(filepath.Join("link", "generic-amd64-key"))
	if want := filepath.Join(dir, "real", "generic-amd64-key"); err != nil || got != want {
		t.Errorf("physicalPath = %q, %v; want %q", got, err, want)
	}
}

// builtKernel returns the inputs and generic-amd64's kernel as make kernel built it,
// or skips the test.
func builtKernel(t *testing.T) (*inputs.Store, *Extracted) {
	t.Helper()
	st := realStore(t)
	e, err := Built(st, boards.GenericAMD64())
	if errors.Is(err, ErrNotBuilt) {
		t.Skipf("needs the built kernel: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st, e
}

// TestBuildRejectsFragment: a line the configuration cannot take fails the build with
// one message naming it, before anything is compiled, and leaves no build behind.
func TestBuildRejectsFragment(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks Debian's kernel source (~30 s); skipped in -short mode")
	}
	st := linkedStore(t, realStore(t), t.TempDir())
	b := fragmentBoard{boards.GenericAMD64(), "# CONFIG_MODULES is not set\n# CONFIG_PCI is not set\nCONFIG_E1000E=y\n"}
	_, err := Build(context.Background(), st, b, io.Discard, slog.New(slog.DiscardHandler))
	want := `"CONFIG_E1000E=y" does not hold after olddefconfig`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Build() = %v, want an error containing %s", err, want)
	}
	left, _ := os.ReadDir(filepath.Join(st.Dir, "kernels"))
	for _, e := range left {
		t.Errorf("the failed build left %s in the store", e.Name())
	}
}

// TestBuiltKernel checks the build make kernel made: Kiln's release, every fragment line
// in its configuration, a bzImage.
func TestBuiltKernel(t *testing.T) {
	_, e := builtKernel(t)
	b := boards.GenericAMD64()
	cfg, err := os.ReadFile(e.Config())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(cfg), "\n") {
		have[l] = true
	}
	for _, l := range strings.Split(b.Kernel().Build.Fragment, "\n") {
		if strings.HasPrefix(l, "CONFIG_") || strings.HasSuffix(l, " is not set") {
			if !have[l] {
				t.Errorf("built configuration lacks %q", l)
			}
		}
	}
	for _, l := range []string{"CONFIG_DEBUG_INFO_BTF=y", "CONFIG_SQUASHFS_ZSTD=y", "CONFIG_EFI_STUB=y"} {
		if !have[l] {
			t.Errorf("built configuration lacks %q (Debian's, which the fragment keeps)", l)
		}
	}
	img, err := os.ReadFile(e.Image())
	if err != nil {
		t.Fatal(err)
	}
	// The x86 boot protocol: "HdrS" at 0x202, and the version string's offset at 0x20e.
	if len(img) < 0x210 || string(img[0x202:0x206]) != "HdrS" {
		t.Fatalf("%s is not a bzImage", e.Image())
	}
	off := 0x200 + (int(img[0x20e]) | int(img[0x20f])<<8)
	if v := string(img[off : off+len(b.Kernel().Release)]); v != b.Kernel().Release {
		t.Errorf("bzImage says release %q, want %q", v, b.Kernel().Release)
	}
}

// fakeDeb writes a .deb holding files (path → content) with dpkg-deb and returns its
// path and sha256.
func fakeDeb(t *testing.T, dir, name string, files map[string][]byte) (string, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	control := "Package: " + name + "\nVersion: 1\nArchitecture: all\nMaintainer: kiln\nDescription: test\n"
	files["DEBIAN/control"] = []byte(control)
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(dir, name+".deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	return deb, fmt.Sprintf("%x", sha256.Sum256(data))
}

// TestBuildWhole runs the build script from start to end on a stand-in source tree
// whose Makefile writes a fake bzImage: unpacking, configuration, the output's
// layout and its move into the store, and the second call finding it.
func TestBuildWhole(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "xz", "make", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	b := boards.GenericAMD64()
	kb := b.Kernel().Build
	dir := t.TempDir()

	// The source package holds the tarball of a tree whose Makefile stands in for
	// Kbuild's targets.
	tree := filepath.Join(t.TempDir(), "linux-source-6.12")
	makefile := "olddefconfig:\n\t@true\nbzImage:\n\t@mkdir -p arch/x86/boot && printf 'HdrS fake' > arch/x86/boot/bzImage\n" +
		"kernelrelease:\n\t@echo " + b.Kernel().Release + "\n"
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "Makefile"), []byte(makefile), 0o644); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "linux-source-6.12.tar.xz")
	if out, err := exec.Command("tar", "-cJf", tarball, "-C", filepath.Dir(tree), "linux-source-6.12").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tb, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	srcDeb, srcSum := fakeDeb(t, dir, "linux-source", map[string][]byte{"usr/src/linux-source-6.12.tar.xz": tb})
	cfgXZ, err := exec.Command("sh", "-c", "printf 'CONFIG_DEBIAN=y\\nCONFIG_DRIVER=m\\n' | xz").Output()
	if err != nil {
		t.Fatal(err)
	}
	cfgDeb, cfgSum := fakeDeb(t, dir, "linux-config", map[string][]byte{"usr/src/linux-config-6.12/" + kb.ConfigName: cfgXZ})

	lock := &inputs.Lock{Entries: []inputs.Entry{
		{Package: kb.Source.Name, Arch: kb.Source.Arch, Version: "1", SHA256: srcSum, File: filepath.Base(srcDeb)},
		{Package: kb.Config.Name, Arch: kb.Config.Arch, Version: "1", SHA256: cfgSum, File: filepath.Base(cfgDeb)},
	}}
	st := inputs.NewStore(dir, lock)
	// What killed builds left: of this key (removed) and of another (kept).
	key, err := BuildDir(st, b)
	if errors.Is(err, exec.ErrNotFound) {
		t.Skipf("needs the kernel's toolchain: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(filepath.Dir(key), b.Name()+"-0123456789abcdef01234567.work.AbCdEf")
	for _, d := range []string{key + ".work.XyZ123/linux-source-6.12", key + ".inputs-123", other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log bytes.Buffer
	e, err := Build(context.Background(), st, b, &log, slog.New(slog.DiscardHandler))
	if errors.Is(err, exec.ErrNotFound) {
		t.Skipf("needs the kernel's toolchain: %v", err)
	}
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	if e.Release != b.Kernel().Release {
		t.Errorf("Release = %q, want %q", e.Release, b.Kernel().Release)
	}
	if got, _ := os.ReadFile(e.Image()); string(got) != "HdrS fake" {
		t.Errorf("vmlinuz = %q, want the tree's bzImage", got)
	}
	cfg, _ := os.ReadFile(e.Config())
	if !strings.HasPrefix(string(cfg), "CONFIG_DEBIAN=y\n# CONFIG_DRIVER is not set\n") || !strings.Contains(string(cfg), "# CONFIG_MODULES is not set\n") {
		t.Errorf("config: Debian's modules not turned off or the fragment not applied:\n%.200s", cfg)
	}
	want, _ := BuildDir(st, b)
	if e.Dir != want {
		t.Errorf("build in %s, want %s", e.Dir, want)
	}
	var left []string
	ents, _ := os.ReadDir(filepath.Dir(e.Dir))
	for _, ent := range ents {
		left = append(left, ent.Name())
	}
	wantLeft := []string{filepath.Base(other), filepath.Base(want)}
	slices.Sort(wantLeft)
	if diff := cmp.Diff(wantLeft, left); diff != "" {
		t.Errorf("the store's kernels holds (-want +got):\n%s", diff)
	}
	// The second call finds the build and runs nothing.
	log.Reset()
	again, err := Build(context.Background(), st, b, &log, slog.New(slog.DiscardHandler))
	if err != nil || again.Dir != e.Dir || log.Len() != 0 {
		t.Errorf("second Build = %v, %v, output %q; want the same build, nothing run", again, err, log.String())
	}

	// Two builds of one key at once: one runs the script, the other waits and takes
	// its build.
	if err := os.RemoveAll(e.Dir); err != nil {
		t.Fatal(err)
	}
	var outs [2]bytes.Buffer
	errs := make(chan error, 2)
	for i := range outs {
		go func() {
			_, err := Build(context.Background(), st, b, &outs[i], slog.New(slog.DiscardHandler))
			errs <- err
		}()
	}
	for range outs {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent Build: %v", err)
		}
	}
	if ran := min(outs[0].Len(), 1) + min(outs[1].Len(), 1); ran != 1 {
		t.Errorf("%d of two concurrent builds ran the script, want 1", ran)
	}
}

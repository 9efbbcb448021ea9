// Package vmtest runs a Go test binary (`go test -c` output) inside a QEMU guest,
// for tests that need kernel features the build host lacks (VLANs, bonding, …),
// that must hold in the kernel a node runs, or that must not touch the host at all.
// The guest boots the pinned Debian kernel, or with Options.NodeKernel the kernel and
// command line of a node of the guest's architecture. The guest's initramfs holds a
// small PID 1 (internal/vminit), the test binary and the requested kernel modules
// with their dependencies (none for a kernel without module support); PID 1 mounts
// proc, sysfs, devtmpfs, tmpfs (/tmp, /run) and cgroup2, loads the modules in
// dependency order, runs the binary with the given -test.* arguments as root,
// streams its output to the serial console, prints a result line with the exit code
// and powers off.
//
// On the host, Boot returns the guest test's exit code and output (Result), and the VM
// is killed on a kernel panic or at the deadline, its serial log kept as a
// test artifact on failure. Tests skip with a reason when QEMU or the kernel (make
// inputs; make kernel for a node kernel built from source) is missing. Inside the
// guest the environment variable KILN_VMTEST is "1".
package vmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kernel"
	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// InitPackage is the import path of the guest's PID 1.
const InitPackage = "github.com/kiln-os/kiln/tools/qemu/vmtest/internal/vminit"

// GuestEnv is set to "1" in the environment of the test binary in the guest.
const GuestEnv = "KILN_VMTEST"

// Lines and paths shared with internal/vminit.
const (
	testPath    = "vmtest/test"
	argsPath    = "vmtest/args.json"
	modulesPath = "vmtest/modules"
	startLine   = "KILN-VMTEST-START"
)

// rngModule drives the virtio-rng device package qemu gives every VM. Debian builds
// it as a module; without it the guest's CRNG is seeded by jitter entropy alone,
// which under TCG blocks getrandom (crypto/rand) for seconds to over a minute.
const rngModule = "virtio_rng"

var resultRe = regexp.MustCompile(`KILN-VMTEST-RESULT exit=(-?\d+)`)

// Options says how to run a test binary in a guest.
type Options struct {
	Arch qemu.Arch // default qemu.HostArch()
	// Modules are kernel modules to load before the test runs; their dependencies
	// are added and everything is loaded in dependency order. Built-in ones are
	// skipped. virtio_rng is always loaded, so crypto/rand does not block.
	Modules []string
	// Args are the test binary's arguments (-test.run, -test.v, …).
	Args []string
	// Timeout bounds the VM's whole life (hang protection, not an assertion);
	// default 10 minutes. The guest test gets -test.timeout a little below it, so
	// a hung test prints its goroutines before QEMU is killed.
	Timeout   time.Duration
	MemoryMiB int // default 1024
	CPUs      int // default 2
	// NodeKernel boots the kernel a node of arch's generic board boots, with that
	// board's kernel command line, instead of the pinned Debian kernel: for tests
	// that must hold in the kernel nodes run. generic-amd64's is built from Debian's
	// source by make kernel (the test skips until then) and has no module support,
	// so what Modules names must be built in there (the board's kernel fragment); a
	// feature that is not shows as the guest's tests failing or skipping
	// (RequirePassed). generic-arm64's is the Debian package's, with modules.
	NodeKernel bool
}

// Result is what the guest's test binary did.
type Result struct {
	// ExitCode of the test binary: 0 passed, 1 failed, 128+n killed by signal n,
	// -1 when PID 1 could not run it.
	ExitCode int
	// Output is the console between PID 1's start line and its result line: the
	// test's output (kernel messages at loglevel ≤ 3 may be mixed in).
	Output string
	// Elapsed is QEMU start → result line.
	Elapsed time.Duration
}

// RequirePassed fails t for each of names (top-level tests of the guest's binary)
// that did not print "--- PASS" in the guest, or that skipped there: a test run in a
// guest is there because the guest's kernel must run it.
func (r *Result) RequirePassed(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		switch {
		case regexp.MustCompile(`(?m)^--- SKIP: ` + regexp.QuoteMeta(name) + ` `).MatchString(r.Output):
			t.Errorf("%s skipped in the guest; the guest's kernel must run it", name)
		case !regexp.MustCompile(`(?m)^--- PASS: ` + regexp.QuoteMeta(name) + ` `).MatchString(r.Output):
			t.Errorf("%s did not pass in the guest", name)
		}
	}
}

// Boot runs testBinary in a guest as Options say and returns its result whatever the
// exit code. It fails the test only when the guest did not get the binary to the end
// (kernel panic, timeout, QEMU exited early), and skips it when QEMU or the kernel
// input is missing.
func Boot(t testing.TB, o Options, testBinary []byte) *Result {
	t.Helper()
	if o.Arch == "" {
		o.Arch = qemu.HostArch()
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	qemutest.NeedQEMU(t, o.Arch)
	image, cmdline, modular := "", "quiet loglevel=3 panic=-1", true
	if o.NodeKernel {
		image, cmdline, modular = nodeKernel(t, o.Arch)
	} else {
		image = qemutest.Kernel(t, o.Arch)
	}

	guestTimeout := o.Timeout - o.Timeout/10
	args := append([]string{"-test.timeout=" + guestTimeout.String()}, o.Args...)
	argsJSON, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	files := []qemu.File{
		{Name: "init", Data: qemutest.BuildGo(t, o.Arch, InitPackage)},
		{Name: testPath, Data: testBinary},
		{Name: argsPath, Data: argsJSON, Mode: 0o644},
	}
	if modular {
		mods, list := moduleFiles(t, o.Arch, append([]string{rngModule}, o.Modules...))
		files = append(files, mods...)
		files = append(files, qemu.File{Name: modulesPath, Data: []byte(list), Mode: 0o644})
	}
	initrd := filepath.Join(t.TempDir(), "vmtest-initramfs.cpio")
	if err := qemu.WriteInitramfs(initrd, files...); err != nil {
		t.Fatal(err)
	}

	cfg := qemu.Config{
		Arch:      o.Arch,
		Kernel:    image,
		Initrd:    initrd,
		Append:    cmdline,
		GuestPort: -1,
		NoReboot:  true,
		MemoryMiB: o.MemoryMiB,
		CPUs:      o.CPUs,
		Timeout:   o.Timeout,
	}
	vm := qemutest.Start(t, cfg)
	deadline := vm.Started().Add(o.Timeout)
	err = vm.ExpectString(startLine, time.Until(deadline))
	if errors.Is(err, qemu.ErrExited) {
		// QEMU ended on its own before the guest ran anything of the test's: an
		// emulator failure (QEMU 7.2's TCG has aborted on an assertion here), not
		// a result. One more boot; a guest that fails by itself fails again.
		t.Logf("QEMU exited before the guest started the test binary; booting once more: %v", err)
		vm = qemutest.Start(t, cfg)
		deadline = vm.Started().Add(o.Timeout)
		err = vm.ExpectString(startLine, time.Until(deadline))
	}
	if err != nil {
		t.Fatalf("the guest did not start the test binary: %v", err)
	}
	m, err := vm.Expect(resultRe, time.Until(deadline))
	if err != nil {
		out, _ := guestOutput(vm.SerialLog())
		t.Fatalf("the guest did not finish the test binary: %v\nguest output:\n%s", err, out)
	}
	r := &Result{Elapsed: time.Since(vm.Started())}
	r.ExitCode, _ = strconv.Atoi(m[1])
	if r.Output, err = guestOutput(vm.SerialLog()); err != nil {
		t.Fatal(err)
	}
	// PID 1 powers off after the result line; -no-reboot makes QEMU exit then.
	wait := min(2*time.Minute, time.Until(deadline))
	select {
	case <-vm.Done():
	case <-time.After(wait):
		t.Errorf("QEMU did not exit within %s after the guest's result line: PID 1 did not power off", wait.Round(time.Second))
	}
	t.Logf("guest %s (kernel %s): exit code %d, QEMU start → result %s", o.Arch, image, r.ExitCode, r.Elapsed.Round(time.Millisecond))
	return r
}

// NodeArches are the architectures of Kiln's nodes, whose kernels
// RequirePassInNodeKernels boots.
var NodeArches = []qemu.Arch{qemu.AMD64, qemu.ARM64}

// RequirePassInNodeKernels runs, for each of NodeArches in a subtest of its own,
// the top-level tests named in tests of package pkg in a guest booting that
// architecture's node kernel (Options.NodeKernel), with o's Modules and Timeout, and
// with o.Args after -test.run (the names) and -test.v. It fails the subtest when the
// test binary fails and for each test that did not pass or skipped there
// (RequirePassed), and skips it, before building anything, when QEMU or the kernel
// is missing.
func RequirePassInNodeKernels(t *testing.T, pkg string, tests []string, o Options) {
	t.Helper()
	for _, arch := range NodeArches {
		t.Run(string(arch), func(t *testing.T) {
			qemutest.NeedQEMU(t, arch)
			nodeKernel(t, arch)
			bin := BuildTest(t, arch, pkg)
			o := o
			o.Arch, o.NodeKernel = arch, true
			o.Args = append([]string{"-test.run", "^(" + strings.Join(tests, "|") + ")$", "-test.v"}, o.Args...)
			r := Boot(t, o, bin)
			t.Logf("guest output:\n%s", r.Output)
			if r.ExitCode != 0 {
				t.Errorf("the test binary failed in the guest (exit code %d); its output is above", r.ExitCode)
			}
			r.RequirePassed(t, tests...)
		})
	}
}

// nodeKernel returns the kernel image of arch's generic board as images take it
// (images/kernel.For: built by make kernel, or out of the pinned package), the
// board's command line with the console quieter still, and whether the kernel has
// modules. It skips the test when the kernel is not there yet.
func nodeKernel(t testing.TB, arch qemu.Arch) (image, cmdline string, modular bool) {
	t.Helper()
	b, err := boards.Lookup("generic-" + string(arch))
	if err != nil {
		t.Fatalf("vmtest: the node kernel of %s: %v", arch, err)
	}
	root, err := qemutest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	st := inputs.NewStore(filepath.Join(root, "_out", "cache"), nil)
	k, err := kernel.For(st, b, filepath.Join(cache, "kiln-test-kernels", "node"), slog.New(slog.DiscardHandler))
	if errors.Is(err, kernel.ErrNotBuilt) {
		t.Skipf("needs the kernel %s nodes boot: %v", b.Name(), err)
	}
	if err != nil {
		t.Skipf("needs the kernel %s nodes boot (run make inputs): %v", b.Name(), err)
	}
	return k.Image(), boards.Cmdline(b) + " loglevel=3", b.Kernel().Build == nil
}

// guestOutput returns the console lines after the start line and before the result
// line (all the rest when there is no result line) of the serial log at path.
func guestOutput(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("vmtest: serial log: %w", err)
	}
	return parseOutput(string(b)), nil
}

func parseOutput(log string) string {
	var out []string
	started := false
	for _, l := range strings.Split(log, "\n") {
		l = strings.TrimRight(l, "\r")
		if !started {
			started = strings.Contains(l, startLine)
			continue
		}
		if loc := resultRe.FindStringIndex(l); loc != nil {
			// Whatever the test wrote without a final newline comes first.
			if s := l[:loc[0]]; s != "" {
				out = append(out, s)
			}
			break
		}
		out = append(out, l)
	}
	// PID 1 starts the result line on a fresh line, which leaves one empty line.
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	if len(out) == 0 {
		return ""
	}
	return strings.Join(out, "\n") + "\n"
}

// moduleFiles resolves modules and their dependencies in the kernel package for
// arch and returns them as initramfs files plus the load list PID 1 reads (paths, in
// load order). The module tree is extracted from the .deb once into the user cache.
func moduleFiles(t testing.TB, arch qemu.Arch, modules []string) ([]qemu.File, string) {
	t.Helper()
	tree := qemutest.KernelTree(t, arch, "./lib/modules/*/modules.builtin", "./lib/modules/*/kernel/*")
	src, paths := qemutest.ModuleSource(t, tree)
	manifest := qemutest.ResolveModules(t, src, modules, nil)
	var files []qemu.File
	var list strings.Builder
	for _, m := range manifest.Modules {
		b, err := os.ReadFile(paths[m.Path])
		if err != nil {
			t.Fatalf("module %s: %v", m.Name, err)
		}
		files = append(files, qemu.File{Name: m.Path, Data: b, Mode: 0o644})
		fmt.Fprintf(&list, "/%s\n", m.Path)
	}
	return files, list.String()
}

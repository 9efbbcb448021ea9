package build

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kiln-os/kiln/boards"
)

// Candidate packages for the node's binaries, first existing wins.
var (
	initPackages     = []string{"./init/cmd/init", "./init"}
	machinedPackages = []string{"./machined/cmd/machined"}
)

// versionVar is the variable a node binary reports as its version (machined/version.Tag).
const versionVar = "github.com/kiln-os/kiln/machined/version.Tag"

// NodeBuildTags are the build tags of the node's binaries. grpcnotrace leaves gRPC's
// request tracing (golang.org/x/net/trace, html/template) out of machined: nothing
// serves its pages, and under emulation package initialisation is most of machined's
// start (3.6 MB smaller, 5 fewer package inits).
const NodeBuildTags = "grpcnotrace"

// GoBuild builds the main package pkg for a Linux node of arch into out, statically and
// reproducibly (CGO_ENABLED=0, -trimpath, no build ID).
func GoBuild(ctx context.Context, dir, pkg string, arch boards.Arch, out string) error {
	return GoBuildVersion(ctx, dir, pkg, arch, out, "")
}

// GoBuildVersion is GoBuild with the binary's version (machined/version.Tag) stamped
// as version; empty leaves the default ("dev").
func GoBuildVersion(ctx context.Context, dir, pkg string, arch boards.Arch, out, version string) error {
	ldflags := "-ldflags=-s -w -buildid="
	if version != "" {
		if strings.ContainsAny(version, " \t'\"") {
			return fmt.Errorf("version %q: no spaces or quotes allowed", version)
		}
		ldflags += " -X " + versionVar + "=" + version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags="+NodeBuildTags, ldflags, "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+string(arch))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// nodeMachine is the ELF machine of each board architecture.
var nodeMachine = map[boards.Arch]elf.Machine{boards.AMD64: elf.EM_X86_64, boards.ARM64: elf.EM_AARCH64}

// checkNodeBinary checks that p can run as init or machined on a node of arch: an
// ELF executable for arch, statically linked (a node has no dynamic loader; a
// dynamically linked machined would only ever fail to start).
func checkNodeBinary(p string, arch boards.Arch) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("not an ELF executable (%v)", err)
	}
	defer f.Close()
	if want, ok := nodeMachine[arch]; ok && f.Machine != want {
		return fmt.Errorf("built for ELF machine %s, the board needs %s (%s)", f.Machine, want, arch)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked, and a node has no dynamic loader: build it with CGO_ENABLED=0")
		}
	}
	return nil
}

// binary returns the path of a node binary: given, or built from the first of the
// candidate packages found in the module of the working directory, stamped with version.
func binary(ctx context.Context, given, what string, candidates []string, arch boards.Arch, version, tmp string) (string, error) {
	if given != "" {
		st, err := os.Stat(given)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", what, err)
		}
		if !st.Mode().IsRegular() {
			return "", fmt.Errorf("--%s %s: not a regular file", what, given)
		}
		if err := checkNodeBinary(given, arch); err != nil {
			return "", fmt.Errorf("--%s %s: %w", what, given, err)
		}
		return given, nil
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("no --%s given and no Go module here to build it from", what)
	}
	for _, pkg := range candidates {
		if _, err := os.Stat(filepath.Join(root, pkg, "main.go")); err != nil {
			continue
		}
		out := filepath.Join(tmp, what)
		if err := GoBuildVersion(ctx, root, pkg, arch, out, version); err != nil {
			return "", fmt.Errorf("build %s: %w", what, err)
		}
		return out, nil
	}
	return "", fmt.Errorf("no --%s given and none of %s exists in %s", what, strings.Join(candidates, ", "), root)
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot is the directory of go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Skipf("needs the go command: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// forbidden reports why a dependency must not reach kctl, or "".
func forbidden(pkg string) string {
	switch {
	case strings.Contains(pkg, "netlink"):
		return "netlink is Linux-only"
	case strings.Contains(pkg, "ebpf"):
		return "eBPF is Linux-only"
	case strings.Contains(pkg, "containerd"):
		return "containerd belongs on the node"
	}
	return ""
}

// mayImportUnix reports whether importer may use golang.org/x/sys/unix.
// Third-party packages may (grpc-go, golang.org/x/term and the disk-image
// libraries of `kctl image` do, behind build tags that keep them portable,
// which TestBuildsOnDarwin checks); Kiln's own packages kctl uses must not.
func mayImportUnix(importer string) bool {
	return !strings.HasPrefix(importer, "github.com/kiln-os/kiln/")
}

// TestPureDependencies keeps kctl and the client buildable anywhere: none of
// their dependencies, on Linux, macOS or Windows, may be node code, and no
// Kiln package among them may import golang.org/x/sys/unix.
func TestPureDependencies(t *testing.T) {
	root := moduleRoot(t)
	for _, goos := range []string{"linux", "darwin", "windows"} {
		t.Run(goos, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`,
				"./machined/client/...", "./tools/kctl/...")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
			out, err := cmd.Output()
			if err != nil {
				msg := ""
				if ee, ok := err.(*exec.ExitError); ok {
					msg = string(ee.Stderr)
				}
				t.Fatalf("GOOS=%s go list -deps: %v\n%s", goos, err, msg)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) < 10 {
				t.Fatalf("go list -deps listed only %d packages:\n%s", len(lines), out)
			}
			for _, l := range lines {
				f := strings.Fields(l)
				pkg, imports := f[0], f[1:]
				// On Windows grpc-go needs no x/sys/unix either, so there
				// its absence proves no Kiln package pulls it in.
				if goos == "windows" && pkg == "golang.org/x/sys/unix" {
					t.Errorf("GOOS=windows: kctl depends on golang.org/x/sys/unix")
				}
				if why := forbidden(pkg); why != "" {
					t.Errorf("GOOS=%s: kctl depends on %s (%s)", goos, pkg, why)
				}
				for _, imp := range imports {
					if imp == "golang.org/x/sys/unix" && !mayImportUnix(pkg) {
						t.Errorf("GOOS=%s: %s imports golang.org/x/sys/unix", goos, pkg)
					}
				}
			}
		})
	}
}

func TestForbidden(t *testing.T) {
	for _, pkg := range []string{"github.com/vishvananda/netlink", "github.com/cilium/ebpf/link", "github.com/containerd/containerd/v2/client"} {
		if forbidden(pkg) == "" {
			t.Errorf("forbidden(%q) = \"\", want a reason", pkg)
		}
	}
	for _, pkg := range []string{"golang.org/x/sys/cpu", "google.golang.org/grpc", "github.com/kiln-os/kiln/machined/client"} {
		if why := forbidden(pkg); why != "" {
			t.Errorf("forbidden(%q) = %q, want \"\"", pkg, why)
		}
	}
	if mayImportUnix("github.com/kiln-os/kiln/machined/client") {
		t.Errorf("mayImportUnix(machined/client) = true, want false")
	}
	if !mayImportUnix("google.golang.org/grpc/internal/syscall") {
		t.Errorf("mayImportUnix(grpc) = false, want true")
	}
}

// TestBuildsOnDarwin cross-compiles kctl for macOS.
func TestBuildsOnDarwin(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: cross-compiles kctl and its dependencies")
	}
	root := moduleRoot(t)
	cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "kctl"), "./tools/kctl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=darwin", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=darwin go build ./tools/kctl: %v\n%s", err, out)
	}
}

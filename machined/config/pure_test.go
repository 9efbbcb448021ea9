package config

import (
	"os/exec"
	"strings"
	"testing"
)

// The config packages are shared with kctl, which must build on every
// platform: no Linux-only dependencies.
func TestPureImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool: lists the package dependencies")
	}
	out, err := exec.Command(gobin, "list", "-deps", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for dep := range strings.SplitSeq(string(out), "\n") {
		for _, banned := range []string{"golang.org/x/sys/unix", "github.com/vishvananda/netlink", "github.com/cilium/ebpf", "github.com/containerd/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("machined/config depends on %s", dep)
			}
		}
	}
}

package hosttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// containerdConfig keeps all of containerd's state under dir (config
// version 4: server addresses are plugin settings). The CRI
// plugin loads too (the node uses it); restrict_oom_score_adj because the
// build host lacks CAP_SYS_RESOURCE (a node does not).
func containerdConfig(dir string) string {
	return fmt.Sprintf(`version = 4
root = %[1]q
state = %[2]q

[plugins.'io.containerd.server.v1.grpc']
  address = %[3]q

[plugins.'io.containerd.server.v1.ttrpc']
  address = %[4]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "containerd.sock"), filepath.Join(dir, "containerd.sock.ttrpc"))
}

// TestContainerdRunsPause starts containerd with runc from the build, state
// under a temporary directory, imports the pause and CoreDNS archives and
// runs a container from the pause image; then it removes the container,
// stops containerd and checks that nothing is left running or mounted.
func TestContainerdRunsPause(t *testing.T) {
	needRoot(t, "runc creates namespaces and cgroups (acceptance test of issue 6)")
	containerd := component(t, "containerd", "containerd")
	ctr := component(t, "containerd", "ctr")
	runc := component(t, "runc", "runc")
	pauseTar := component(t, "images", "pause.tar")
	corednsTar := component(t, "images", "coredns.tar")

	removeHardcodedDirs(t)
	dir, err := os.MkdirTemp("", "kiln-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	// The shim is found next to containerd and on PATH.
	path := "PATH=" + filepath.Dir(containerd) + ":" + os.Getenv("PATH")
	cd := start(t, dir, "containerd", containerd, []string{"--config", cfg}, path)

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(ctr, append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
		cmd.Env = append(os.Environ(), path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	waitFor(t, "containerd socket", hangGuard, func() (bool, error) {
		if !cd.running() {
			t.Fatalf("containerd exited: %v", cd.err)
		}
		_, err := os.Stat(sock)
		if err != nil {
			return false, err
		}
		out, err := exec.Command(ctr, "--address", sock, "version").CombinedOutput()
		return err == nil, fmt.Errorf("%v: %s", err, out)
	})
	t.Logf("versions:\n%s", run("version"))

	run("images", "import", "--all-platforms", pauseTar)
	run("images", "import", "--all-platforms", corednsTar)
	images := run("images", "list", "-q")
	for _, want := range []string{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/coredns/coredns:v1.14.6"} {
		if !strings.Contains(images, want) {
			t.Errorf("images after import:\n%s\nwant %s", images, want)
		}
	}

	run("run", "--detach", "--runc-binary", runc, "registry.k8s.io/pause:3.10.2", "kiln-pause")
	waitFor(t, "pause task RUNNING", hangGuard, func() (bool, error) {
		out := run("tasks", "list")
		return strings.Contains(out, "kiln-pause") && strings.Contains(out, "RUNNING"), fmt.Errorf("tasks:\n%s", out)
	})
	run("tasks", "kill", "--signal", "SIGTERM", "kiln-pause")
	waitFor(t, "pause task STOPPED after SIGTERM", time.Minute, func() (bool, error) {
		out := run("tasks", "list")
		return !strings.Contains(out, "RUNNING"), fmt.Errorf("tasks:\n%s", out)
	})
	run("tasks", "delete", "kiln-pause")
	run("containers", "delete", "kiln-pause")

	if err := cd.stop(time.Minute); err != nil {
		t.Error(err)
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", dir, m)
	}
	if out, err := exec.Command("pgrep", "-f", "containerd-shim-runc-v2 .*"+dir).Output(); err == nil {
		t.Errorf("shim processes left: %s", out)
	}
}

// removeHardcodedDirs removes, at cleanup, the empty directories the shim
// and ctr create under their hard-coded /run/containerd when it did not exist
// before the test (PLATFORM.md). Only empty directories go: anything with
// content belongs to someone else.
func removeHardcodedDirs(t *testing.T) {
	const base = "/run/containerd"
	if _, err := os.Stat(base); err == nil {
		return
	}
	t.Cleanup(func() {
		var dirs []string
		filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i]) // fails, as it should, when not empty
		}
		if _, err := os.Stat(base); err == nil {
			t.Errorf("%s is left behind and not empty", base)
		}
	})
}

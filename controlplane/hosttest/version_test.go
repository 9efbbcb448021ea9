package hosttest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestVersions checks that every built binary reports its pinned version
// (the stamping in controlplane/build.sh).
func TestVersions(t *testing.T) {
	tests := []struct {
		component, bin string
		args           []string
		want           string
	}{
		{"kube", "kube", []string{"apiserver", "--version"}, "Kubernetes v1.37.2"},
		{"kube", "kube", []string{"controller-manager", "--version"}, "Kubernetes v1.37.2"},
		{"kube", "kube", []string{"scheduler", "--version"}, "Kubernetes v1.37.2"},
		{"kube", "kube", []string{"kubelet", "--version"}, "Kubernetes v1.37.2"},
		{"kube", "kube", []string{"kubectl", "version", "--client"}, "Client Version: v1.37.2"},
		{"kube", "kube", []string{"etcd", "--version"}, "etcd Version: 3.7.0"},
		{"kube", "kube", []string{"etcdctl", "version"}, "etcdctl version: 3.7.0"},
		{"containerd", "containerd", []string{"--version"}, "v2.4.2"},
		{"containerd", "containerd-shim-runc-v2", []string{"-v"}, "v2.4.2"},
		{"runc", "runc", []string{"--version"}, "runc version 1.5.3"},
		{"cni", "bridge", nil, "v1.10.0"},
		{"cni", "host-local", nil, "v1.10.0"},
		{"cni", "loopback", nil, "v1.10.0"},
		{"cni", "portmap", nil, "v1.10.0"},
	}
	for _, tt := range tests {
		t.Run(tt.bin+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			bin := component(t, tt.component, tt.bin)
			out, _ := exec.Command(bin, tt.args...).CombinedOutput()
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("%s %v = %q, want it to contain %q", tt.bin, tt.args, out, tt.want)
			}
		})
	}
}

// TestMultiCallByArgv0 checks that a symlink named like an upstream binary
// selects the component.
func TestMultiCallByArgv0(t *testing.T) {
	kube := component(t, "kube", "kube")
	dir := t.TempDir()
	for _, name := range []string{"kube-apiserver", "kubectl", "etcd"} {
		link := dir + "/" + name
		if err := os.Symlink(kube, link); err != nil {
			t.Fatal(err)
		}
		args := []string{"--version"}
		if name == "kubectl" {
			args = []string{"version", "--client"}
		}
		out, _ := exec.Command(link, args...).CombinedOutput()
		if !strings.Contains(string(out), "v1.37.2") && !strings.Contains(string(out), "3.7.0") {
			t.Errorf("%s %v = %q, want a pinned version", name, args, out)
		}
	}
	out, err := exec.Command(kube, "nonsense").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown component") {
		t.Errorf("kube nonsense = %q, %v; want an unknown-component error", out, err)
	}
}

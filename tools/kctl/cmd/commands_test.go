package cmd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// unreachable is a loopback address nothing listens on.
const unreachable = "127.0.0.1:1"

func TestVersion(t *testing.T) {
	isolate(t)
	node := startNode(t, "node-a")
	stdout, stderr, err := kctl(t, "--insecure", "-n", node, "version")
	if err != nil {
		t.Fatalf("kctl version: %v\n%s", err, stderr)
	}
	for _, want := range []string{"Client:", "Server:", "\tNODE:        " + node + "\n", "\tTag:         v1.2.3\n", "\tHostname:    node-a\n", "\tMaintenance: yes\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("kctl version output lacks %q:\n%s", want, stdout)
		}
	}

	stdout, _, err = kctl(t, "version", "--client", "-o", "json")
	if err != nil {
		t.Fatalf("kctl version --client: %v", err)
	}
	var got versionOutput
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("kctl version --client -o json: %v\n%s", err, stdout)
	}
	if got.Client.Tag == "" || len(got.Servers) != 0 {
		t.Errorf("kctl version --client -o json = %+v, want a client and no servers", got)
	}
}

func TestServicesSeveralNodes(t *testing.T) {
	isolate(t)
	a, b := startNode(t, "a"), startNode(t, "b")
	stdout, stderr, err := kctl(t, "--insecure", "-n", a+","+b, "-n", unreachable, "services")
	if err == nil {
		t.Fatalf("kctl services with an unreachable node succeeded")
	}
	wantErr := "kctl: " + unreachable + ": could not reach the node: connection refused\n"
	if stderr != wantErr {
		t.Errorf("stderr = %q, want %q", stderr, wantErr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var rows [][]string
	for _, l := range lines {
		f := strings.Fields(l)
		rows = append(rows, f[:len(f)-1]) // SINCE depends on the clock
	}
	want := [][]string{
		{"NODE", "SERVICE", "STATE", "HEALTH", "RESTARTS"},
		{a, "containerd", "Running", "OK", "0"},
		{a, "kubelet", "Backoff", "Fail", "3"},
		{b, "containerd", "Running", "OK", "0"},
		{b, "kubelet", "Backoff", "Fail", "3"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("kctl services table (-want +got):\n%s\n%s", diff, stdout)
	}

	stdout, _, err = kctl(t, "--insecure", "-n", a, "services", "-o", "json")
	if err != nil {
		t.Fatalf("kctl services -o json: %v", err)
	}
	var got []serviceRow
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("kctl services -o json: %v\n%s", err, stdout)
	}
	if len(got) != 2 || got[1].ID != "kubelet" || got[1].Message != "connection refused" || got[1].Node != a {
		t.Errorf("kctl services -o json = %+v", got)
	}
}

func TestNodeCalls(t *testing.T) {
	isolate(t)
	node := startNode(t, "a")
	other := startNode(t, "b")
	cfg := t.TempDir() + "/c.yaml"
	writeFile(t, cfg, "whatever: 1\n")
	tests := []struct {
		name       string
		args       []string
		wantOut    string
		wantStderr string
	}{
		{
			name:       "permission denied",
			args:       []string{"reboot"},
			wantStderr: "kctl: " + node + ": permission denied: os:reader may not call Reboot (allowed: os:admin, os:operator)\n",
		},
		{
			name:    "logs",
			args:    []string{"logs", "kubelet"},
			wantOut: "line one\nline two\n",
		},
		{
			name:       "logs of a missing service",
			args:       []string{"logs", "etcd"},
			wantStderr: "kctl: " + node + `: not found: no service "etcd"` + "\n",
		},
		{
			name:    "disks",
			args:    []string{"get", "disks"},
			wantOut: "NODE" + strings.Repeat(" ", len(node)-1) + "DISK   SIZE     MODEL   SERIAL   TYPE   READ-ONLY   SYSTEM\n" + node + "   vda    10 GiB   QEMU    -        SSD    no          yes\n",
		},
		{
			name:    "processes",
			args:    []string{"get", "processes"},
			wantOut: "NODE" + strings.Repeat(" ", len(node)-1) + "PID   PPID   STATE   RSS     CPU     NAME             COMMAND\n" + node + "   1     0      S       3 MiB   5.79s   kiln-init:supe   kiln-init:supervise\n",
		},
		{
			name:    "apply",
			args:    []string{"apply-config", "-f", cfg, "--mode", "no-reboot"},
			wantOut: "Applied the configuration without a reboot.\n",
		},
		{
			name:       "dry run",
			args:       []string{"apply-config", "-f", cfg, "--dry-run"},
			wantOut:    "Dry run: nothing was changed.\nMode: no-reboot\nReboot required: no\n-a: 1\n+a: 2\n",
			wantStderr: "warning: " + node + ": something odd\n",
		},
		{
			name:       "a service missing on one node",
			args:       []string{"service", "nope"},
			wantStderr: "kctl: " + node + `: not found: no service "nope"` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--insecure", "-n", node}, tt.args...)
			stdout, stderr, err := kctl(t, args...)
			if (err != nil) != strings.HasPrefix(tt.wantStderr, "kctl: ") {
				t.Errorf("kctl %v error = %v", args, err)
			}
			if diff := cmp.Diff(tt.wantOut, stdout); diff != "" {
				t.Errorf("kctl %v stdout (-want +got):\n%s", args, diff)
			}
			if diff := cmp.Diff(tt.wantStderr, stderr); diff != "" {
				t.Errorf("kctl %v stderr (-want +got):\n%s", args, diff)
			}
		})
	}

	t.Run("a node without services", func(t *testing.T) {
		empty := startNode(t, "empty")
		stdout, stderr, err := kctl(t, "--insecure", "-n", empty, "service", "kubelet")
		want := "kctl: " + empty + `: not found: no service "kubelet"` + "\n"
		if err == nil || stderr != want || stdout != "" {
			t.Errorf("kctl service kubelet on a node without services = %q, %q, %v; want stderr %q", stdout, stderr, err, want)
		}
	})

	t.Run("logs from several nodes are prefixed", func(t *testing.T) {
		stdout, _, err := kctl(t, "--insecure", "-n", node, "-n", other, "logs", "kubelet")
		if err != nil {
			t.Fatal(err)
		}
		var a, b []string
		for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
			switch {
			case strings.HasPrefix(l, node+": "):
				a = append(a, strings.TrimPrefix(l, node+": "))
			case strings.HasPrefix(l, other+": "):
				b = append(b, strings.TrimPrefix(l, other+": "))
			default:
				t.Errorf("unprefixed line %q", l)
			}
		}
		want := []string{"line one", "line two"}
		if !cmp.Equal(want, a) || !cmp.Equal(want, b) {
			t.Errorf("kctl logs from two nodes =\n%s", stdout)
		}
	})
}

package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/build"
	"github.com/kiln-os/kiln/images/components/componentstest"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kernel"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := NewCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func TestBuildFlagErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown board", []string{"--board", "rpi9"}, `unknown board "rpi9" (known: generic-amd64, generic-arm64)`},
		{"no board", nil, "--board is required"},
		{"bad format", []string{"--board", "generic-amd64", "--format", "raw,floppy"}, `--format: unknown format "floppy"`},
		{"bad extra", []string{"--board", "generic-amd64", "--extra", "nocolon"}, `--extra "nocolon": want HOSTPATH:ROOTPATH`},
		{"missing config", []string{"--board", "generic-amd64", "--config", "/nonexistent/kiln.yaml"}, "--config: open /nonexistent/kiln.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "--output", out}, tt.args...)
			_, _, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("image %v: error = %v, want containing %q", args, err, tt.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("output directory created by a failed build")
			}
		})
	}
}

func TestKernelCommand(t *testing.T) {
	in := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		want    string // in the error; empty: success
		wantOut string
	}{
		{"no board", nil, "--board is required", ""},
		{"unknown board", []string{"--board", "rpi9"}, `unknown board "rpi9"`, ""},
		// generic-arm64 takes Debian's kernel package: nothing to build, no error.
		{"package kernel", []string{"--board", "generic-arm64"}, "", ""},
		// No pinned source in an empty inputs directory: the input is named, nothing built.
		{"no source", []string{"--board", "generic-amd64"}, "input linux-source-6.12:all 6.12.95-1~bpo12+1 missing", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := run(t, append([]string{"kernel", "--inputs", in}, tt.args...)...)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("error = %v, want none", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				if errors.Is(err, exec.ErrNotFound) {
					t.Skipf("needs the kernel's toolchain: %v", err)
				}
				t.Fatalf("error = %v, want containing %q", err, tt.want)
			}
			if out != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if ents, _ := os.ReadDir(in); len(ents) != 0 {
				t.Errorf("the command left %s in the inputs", ents[0].Name())
			}
		})
	}
}

func TestSourceDateEpochChecked(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	_, _, err := run(t, "build", "--board", "generic-amd64", "--output", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `SOURCE_DATE_EPOCH="yesterday"`) {
		t.Errorf("error = %v, want a SOURCE_DATE_EPOCH error", err)
	}
}

// inputs returns the inputs cache or skips.
func inputsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KILN_INPUTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "_out", "cache")
	}
	if _, err := os.Stat(filepath.Join(dir, "ca-certificates_20250419~deb12u2_all.deb")); err != nil {
		t.Skip("needs inputs: run make inputs (images/fetch-inputs.sh)")
	}
	if err := kernel.Ready(inputs.NewStore(dir, nil), boards.GenericAMD64()); err != nil {
		t.Skipf("needs the built kernel: %v", err)
	}
	return dir
}

func TestBuildAndInspect(t *testing.T) {
	in := inputsDir(t)
	tmp := t.TempDir()
	init := filepath.Join(tmp, "init")
	if err := build.GoBuild(context.Background(), ".", "../internal/testinit", boards.AMD64, init); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "out")
	common := []string{"build", "--board", "generic-amd64", "--format", "raw", "--output", out,
		"--inputs", in, "--cache", filepath.Join(tmp, "cache"), "--init", init, "--machined", init}

	bad := filepath.Join(tmp, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: kiln.dev/v1alpha1\nkind: Nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, append(common, "--config", bad)...); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
		t.Fatalf("build with an invalid config: error = %v, want config: …", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) > 0 {
		t.Fatalf("failed build left %d entries in the output directory", len(ents))
	}

	stdout, stderr, err := run(t, common...)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, stderr)
	}
	raw := filepath.Join(out, "generic-amd64.raw")
	if strings.TrimSpace(stdout) != raw {
		t.Errorf("build printed %q, want the output path %q", stdout, raw)
	}
	if !strings.Contains(stderr, "] check inputs\n") {
		t.Errorf("no plain progress lines without a terminal:\n%s", stderr)
	}
	stdout, _, err = run(t, "inspect", raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: raw", "partition 1 EFI", "EFI/Linux/kiln-a+3-0.efi", "partition 3 STATE",
		"kernel: 6.12.95+kiln-amd64", "machine config: none"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestBuildComponentsChecked(t *testing.T) {
	in := inputsDir(t)
	arm := componentstest.Write(t, "arm64")
	tests := []struct {
		name, dir, want string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file or directory"},
		{"other arch", arm, "every binary and image is built for arm64, the board needs amd64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			_, _, err := run(t, "build", "--board", "generic-amd64", "--inputs", in, "--output", out, "--components", tt.dir)
			if err == nil || !strings.HasPrefix(err.Error(), "components "+tt.dir+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("build --components %s: error = %v, want components %s: …%s…", tt.dir, err, tt.dir, tt.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("output directory created by a failed build")
			}
		})
	}
}

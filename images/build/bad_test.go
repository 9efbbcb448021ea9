package build

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/components/componentstest"
)

// inputsCopy makes an inputs directory of symlinks to the real inputs, with edit applied.
func inputsCopy(t *testing.T, edit func(dir string)) string {
	t.Helper()
	src := inputsDir(t)
	dir := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".deb") || e.Name() == "kernels" {
			if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	edit(dir)
	return dir
}

func TestBadInput(t *testing.T) {
	const sdboot = "systemd-boot-efi_254.26-1~bpo12+1_amd64.deb"
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		modify func(o *Options)
		want   string
	}{
		{"missing input", func(o *Options) {
			o.InputsDir = inputsCopy(t, func(d string) { os.Remove(filepath.Join(d, sdboot)) })
		}, "input systemd-boot-efi:amd64 254.26-1~bpo12+1 missing"},
		{"wrong sha256", func(o *Options) {
			o.InputsDir = inputsCopy(t, func(d string) {
				p := filepath.Join(d, sdboot)
				os.Remove(p)
				os.WriteFile(p, []byte("not the package"), 0o644)
			})
		}, "input systemd-boot-efi:amd64 254.26-1~bpo12+1: " /* … has sha256 … */},
		{"kernel not built", func(o *Options) {
			o.InputsDir = inputsCopy(t, func(d string) { os.Remove(filepath.Join(d, "kernels")) })
		}, "board generic-amd64 builds its kernel from Debian's source and "},
		{"unwritable output", func(o *Options) { o.OutputDir = filepath.Join(notDir, "out") }, "output directory"},
		{"invalid config", func(o *Options) {
			o.Config = []byte("kind: Nope\n")
			o.ValidateConfig = func([]byte) error { return errors.New(`kind: "Nope" is not MachineConfig`) }
		}, `config: kind: "Nope" is not MachineConfig`},
		{"init not a file", func(o *Options) { o.Init = t.TempDir() }, "--init"},
		{"init not an executable", func(o *Options) { o.Init = filepath.Join(o.InputsDir, sdboot) }, "--init " + filepath.Join(inputsDir(t), sdboot) + ": not an ELF executable"},
		{"machined dynamically linked", func(o *Options) { o.Machined = dynamicBinary(t) }, "dynamically linked, and a node has no dynamic loader"},
		{"unsupported format", func(o *Options) { o.Formats = []boards.Format{"floppy"} }, "does not support format floppy"},
		{"components for the other arch", func(o *Options) { o.Components = componentstest.Write(t, "arm64") },
			"every binary and image is built for arm64, the board needs amd64"},
		{"components incomplete", func(o *Options) {
			o.Components = componentstest.Write(t, "amd64")
			os.Remove(filepath.Join(o.Components, "runc", "runc"))
		}, "missing runc/runc"},
		{"components not a directory", func(o *Options) { o.Components = notDir }, "components " + notDir + ": not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			o := testOptions(t, boards.GenericAMD64(), out, boards.FormatRaw, boards.FormatISO)
			tt.modify(&o)
			_, err := Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build error = %v, want containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has several lines: %q", err)
			}
			if _, err := os.Stat(out); err == nil {
				ents, _ := os.ReadDir(out)
				t.Errorf("output directory exists (%d entries) after a failed build", len(ents))
			}
		})
	}
}

// dynamicBinary returns a dynamically linked amd64 executable of the build host
// (Debian's /bin/true), or skips.
func dynamicBinary(t *testing.T) string {
	t.Helper()
	f, err := elf.Open("/bin/true")
	if err != nil {
		t.Skipf("needs /bin/true as an ELF executable: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		t.Skipf("needs an x86-64 build host (/bin/true is %s)", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "/bin/true"
		}
	}
	t.Skip("needs a dynamically linked /bin/true")
	return ""
}

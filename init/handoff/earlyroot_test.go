package handoff

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// enterRootHelper, set in a re-executed test binary, makes it run enterRoot on
// descriptors 3 (the directory standing for /proc/1) and 4 (the ready pipe) and
// print the content of /marker from its new root, or the error.
const enterRootHelper = "KILN_TEST_ENTER_ROOT"

func TestMain(m *testing.M) {
	if os.Getenv(enterRootHelper) == "1" {
		err := enterRoot(os.NewFile(3, "proc"), os.NewFile(4, "ready"))
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error())
			os.Exit(0)
		}
		b, err := os.ReadFile("/marker")
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error())
			os.Exit(0)
		}
		os.Stdout.Write(b)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A machined started before the switch of root waits for init's byte and then
// lives in init's root, found through proc/root (a symlink here, /proc/1/root's
// magic link on a node); without the byte it fails and stays where it was.
func TestEnterRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: enterRoot calls chroot(2)")
	}
	for _, tt := range []struct {
		name  string
		write string
		want  string
	}{
		{"switched", "1", "the new root"},
		{"closed without switching", "", "error: wait for the root filesystem: init closed the handoff without switching root"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "newroot")
			proc := filepath.Join(dir, "proc1")
			for _, d := range []string{root, proc} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(root, "marker"), []byte("the new root"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(root, filepath.Join(proc, "root")); err != nil {
				t.Fatal(err)
			}
			procDir, err := os.Open(proc)
			if err != nil {
				t.Fatal(err)
			}
			defer procDir.Close()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), enterRootHelper+"=1")
			cmd.ExtraFiles = []*os.File{procDir, r}
			var out strings.Builder
			cmd.Stdout = &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			if tt.write != "" {
				if _, err := w.WriteString(tt.write); err != nil {
					t.Fatal(err)
				}
			}
			w.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("helper: %v\n%s", err, out.String())
			}
			if got := out.String(); got != tt.want {
				t.Errorf("helper printed %q, want %q", got, tt.want)
			}
		})
	}
}

package squashfs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/images/fstree"
)

func TestWriteList(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs mksquashfs: %v", err)
	}
	tr := fstree.New()
	for _, err := range []error{
		tr.AddData("usr/bin/machined", 0o755, []byte("binary")),
		tr.AddDir("tmp", 0o1777),
		tr.AddSymlink("etc/os-release", "../usr/lib/os-release"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Builds run with SOURCE_DATE_EPOCH set; mksquashfs must not see it next to -all-time.
	t.Setenv("SOURCE_DATE_EPOCH", "1")
	dir := t.TempDir()
	write := func(name string) []byte {
		p := filepath.Join(dir, name)
		if err := Write(context.Background(), tr, p, Options{Epoch: 1735689600, TempDir: dir}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := write("a.sqfs"), write("b.sqfs")
	if !bytes.Equal(a, b) {
		t.Errorf("two squashfs writes of the same tree differ")
	}
	list, err := List(context.Background(), filepath.Join(dir, "a.sqfs"))
	if err != nil {
		t.Fatal(err)
	}
	// Compare with runs of spaces collapsed: unsquashfs pads the size column.
	list = strings.Join(strings.Fields(strings.ReplaceAll(list, "\n", " \x00 ")), " ")
	for _, want := range []string{
		"-rwxr-xr-x 0/0 6 2025-01-01 00:00 /usr/bin/machined",
		"drwxrwxrwt 0/0",
		"/etc/os-release -> ../usr/lib/os-release",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, list)
		}
	}
}

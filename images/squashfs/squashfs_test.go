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

func TestUncompressed(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs mksquashfs: %v", err)
	}
	data := bytes.Repeat([]byte("compressible "), 1<<16) // 832 KiB
	tr := fstree.New()
	for _, err := range []error{
		tr.AddData("sbin/machined", 0o755, data),
		tr.AddData("usr/bin/other", 0o755, data[:1<<19]),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	size := func(name string, o Options) int64 {
		t.Helper()
		o.Epoch, o.TempDir = 1735689600, dir
		p := filepath.Join(dir, name)
		if err := Write(context.Background(), tr, p, o); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	packed := size("packed.sqfs", Options{})
	raw := size("raw.sqfs", Options{Uncompressed: []string{"sbin/machined"}})
	if raw < int64(len(data)) || packed >= int64(len(data))/4 {
		t.Errorf("image sizes: %d with sbin/machined uncompressed, %d without; want the first to hold its %d bytes as they are and the second far smaller",
			raw, packed, len(data))
	}
	if raw > int64(len(data))+int64(len(data))/8 {
		t.Errorf("image with only sbin/machined uncompressed is %d bytes: usr/bin/other was not compressed", raw)
	}
	if err := Write(context.Background(), tr, filepath.Join(dir, "bad.sqfs"), Options{TempDir: dir, Uncompressed: []string{"a b"}}); err == nil {
		t.Error("a path with a space: no error")
	}
}

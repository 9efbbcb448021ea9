package deb

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// makeDeb writes a .deb with the given data files, its data.tar compressed as comp.
func makeDeb(t *testing.T, comp string, files map[string]string) string {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, name := range []string{"./boot/vmlinuz", "./lib/modules/x/a.ko.xz"} {
		if c, ok := files[strings.TrimPrefix(name, "./")]; ok {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(c))})
			tw.Write([]byte(c))
		}
	}
	tw.Close()
	var data bytes.Buffer
	switch comp {
	case "xz":
		w, _ := xz.NewWriter(&data)
		w.Write(tarBuf.Bytes())
		w.Close()
	case "zst":
		w, _ := zstd.NewWriter(&data)
		w.Write(tarBuf.Bytes())
		w.Close()
	}
	var ar bytes.Buffer
	ar.WriteString(arMagic)
	member := func(name string, b []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(b))
		ar.Write(b)
		if len(b)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.xz", []byte("x")) // odd length: tests padding
	member("data.tar."+comp, data.Bytes())
	p := filepath.Join(t.TempDir(), "p.deb")
	if err := os.WriteFile(p, ar.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadFiles(t *testing.T) {
	want := map[string][]byte{"boot/vmlinuz": []byte("kernel"), "lib/modules/x/a.ko.xz": []byte("module")}
	for _, comp := range []string{"xz", "zst"} {
		t.Run(comp, func(t *testing.T) {
			p := makeDeb(t, comp, map[string]string{"boot/vmlinuz": "kernel", "lib/modules/x/a.ko.xz": "module"})
			got, err := ReadFiles(p, func(string) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ReadFiles mismatch (-want +got):\n%s", diff)
			}
			if _, err := ReadFile(p, "boot/missing"); err == nil || !strings.Contains(err.Error(), "no file boot/missing") {
				t.Errorf("ReadFile(missing) error = %v", err)
			}
		})
	}
}

func TestNotADeb(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.deb")
	os.WriteFile(p, []byte("hello"), 0o644)
	if err := Walk(p, nil); err == nil || !strings.Contains(err.Error(), "not a Debian package") {
		t.Errorf("Walk(not a deb) error = %v", err)
	}
}

package initramfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/images/fstree"
)

func tree(t *testing.T) *fstree.Tree {
	t.Helper()
	host := filepath.Join(t.TempDir(), "root.squashfs")
	if err := os.WriteFile(host, []byte("hsqs…"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := fstree.New()
	for _, err := range []error{
		tr.AddData("init", 0o755, []byte("#!init")),
		tr.Add(fstree.Entry{Path: "dev/console", Kind: fstree.CharDev, Perm: 0o600, Major: 5, Minor: 1}),
		tr.AddFile("root.squashfs", 0o644, host),
		tr.AddSymlink("sbin", "usr/sbin"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func TestListing(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, tree(t), 1735689600); err != nil {
		t.Fatal(err)
	}
	raw, err := Decompress(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := List(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		Name         string
		Mode         uint64
		Size         uint64
		MTime        uint64
		Rmajor, Rmin uint64
	}
	var got []rec
	for _, r := range recs {
		got = append(got, rec{r.Name, r.Mode, r.FileSize, r.MTime, r.Rmajor, r.Rminor})
	}
	const e = 1735689600
	want := []rec{
		{"dev", 0o040755, 0, e, 0, 0},
		{"dev/console", 0o020600, 0, e, 5, 1},
		{"init", 0o100755, 6, e, 0, 0},
		{"root.squashfs", 0o100644, uint64(len("hsqs…")), e, 0, 0},
		{"sbin", 0o120777, 8, e, 0, 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listing mismatch (-want +got):\n%s", diff)
	}
	var again bytes.Buffer
	if err := Write(&again, tree(t), 1735689600); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Errorf("two initramfs writes of the same tree differ")
	}
}

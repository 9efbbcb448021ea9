package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rawImage writes a 5 MiB raw image with data in a few clusters.
func rawImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	b := make([]byte, 5<<20+512) // not a multiple of the cluster size
	copy(b[0:], "first cluster")
	copy(b[3*clusterSize+17:], "fourth cluster")
	copy(b[len(b)-5:], "tail!")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func convert(t *testing.T, raw string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Convert(&buf, raw); err != nil {
		t.Fatalf("Convert: %v", err)
	}
	return buf.Bytes()
}

func TestHeader(t *testing.T) {
	out := convert(t, rawImage(t))
	h, err := ReadHeader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := Header{Magic: magic, Version: 3, ClusterBits: 16, Size: 5<<20 + 512, L1Size: 1,
		L1Offset: clusterSize, RefcountOffset: 2 * clusterSize, RefcountCls: 1, RefcountOrder: 4, HeaderLength: 104}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("header mismatch (-want +got):\n%s", diff)
	}
	// header, L1, refcount table, one refcount block, one L2, three data clusters.
	if got, want := len(out), 8*clusterSize; got != want {
		t.Errorf("len = %d, want %d (only non-zero clusters allocated)", got, want)
	}
	if !bytes.Equal(out, convert(t, rawImage(t))) {
		t.Errorf("two conversions of the same raw image differ")
	}
}

func TestQemuImgAgrees(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("needs qemu-img: apt-get install qemu-utils")
	}
	raw := rawImage(t)
	q := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := os.WriteFile(q, convert(t, raw), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "check", q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
}

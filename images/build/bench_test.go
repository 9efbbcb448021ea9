package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kiln-os/kiln/boards"
)

// BenchmarkAssembleRaw assembles the generic-amd64 raw image from a warm cache (inputs
// present, kernel extracted, init and machined built). It reports the raw size and the
// size compressed with zstd.
func BenchmarkAssembleRaw(b *testing.B) {
	o := testOptions(b, boards.GenericAMD64(), b.TempDir(), boards.FormatRaw)
	if _, err := Build(context.Background(), o); err != nil { // warm the kernel cache
		b.Fatal(err)
	}
	raw := filepath.Join(o.OutputDir, "generic-amd64.raw")
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(context.Background(), o); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st, err := os.Stat(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size()), "raw-bytes")
	data, err := os.ReadFile(raw)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(enc.EncodeAll(data, nil))), "zstd-bytes")
}

// BenchmarkCopyFloor writes the same number of bytes as the raw image with cp: the floor
// for assembling it.
func BenchmarkCopyFloor(b *testing.B) {
	if _, err := exec.LookPath("cp"); err != nil {
		b.Skip("needs cp")
	}
	o := testOptions(b, boards.GenericAMD64(), b.TempDir(), boards.FormatRaw)
	if _, err := Build(context.Background(), o); err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(o.OutputDir, "generic-amd64.raw")
	dst := filepath.Join(b.TempDir(), "copy.raw")
	b.ResetTimer()
	for b.Loop() {
		os.Remove(dst)
		if out, err := exec.Command("cp", "--sparse=never", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
	}
}

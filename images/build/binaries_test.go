package build

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-os/kiln/boards"
)

func TestGoBuildVersionStamps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds machined; skipped in -short mode")
	}
	out := filepath.Join(t.TempDir(), "machined")
	const tag = "v9.8.7-stamp-test"
	if err := GoBuildVersion(context.Background(), "../..", "./machined/cmd/machined", boards.AMD64, out, tag); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(tag)) {
		t.Errorf("machined built with version %q does not carry it", tag)
	}
	if err := GoBuildVersion(context.Background(), "../..", "./machined/cmd/machined", boards.AMD64, out, "v1 'x"); err == nil {
		t.Error("a version with a space and a quote: no error")
	}
}

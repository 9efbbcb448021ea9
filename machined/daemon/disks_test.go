package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/machined/server"
)

func writeSys(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadDisks(t *testing.T) {
	sys := t.TempDir()
	writeSys(t, sys, map[string]string{
		"vda/size":             "41943040\n",
		"vda/queue/rotational": "0\n",
		"vda/ro":               "0\n",
		"vda/serial":           "VIRTIO-1\n",
		"sda/size":             "1953525168\n",
		"sda/queue/rotational": "1\n",
		"sda/ro":               "0\n",
		"sda/device/model":     "WDC WD10EZEX   \n",
		"sda/device/serial":    "WD-123\n",
		"sr0/size":             "2048\n",
		"sr0/ro":               "1\n",
		"loop0/size":           "100\n",
		"ram0/size":            "100\n",
		"zram0/size":           "100\n",
	})
	got, err := readDisks(sys)
	if err != nil {
		t.Fatal(err)
	}
	want := []server.Disk{
		{Name: "sda", SizeBytes: 1953525168 * 512, Model: "WDC WD10EZEX", Serial: "WD-123", Rotational: true},
		{Name: "sr0", SizeBytes: 2048 * 512, ReadOnly: true},
		{Name: "vda", SizeBytes: 41943040 * 512, Serial: "VIRTIO-1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("readDisks (-want +got):\n%s", diff)
	}
	if _, err := readDisks(filepath.Join(sys, "missing")); err == nil {
		t.Error("readDisks of a missing directory succeeded")
	}
}

// TestReadDisksHost lists the real block devices, if this system has any.
func TestReadDisksHost(t *testing.T) {
	if _, err := os.Stat("/sys/block"); err != nil {
		t.Skipf("needs /sys/block: %v", err)
	}
	if _, err := readDisks("/sys/block"); err != nil {
		t.Errorf("readDisks(/sys/block): %v", err)
	}
}

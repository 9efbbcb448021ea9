package resolv

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRender(t *testing.T) {
	for _, tt := range []struct {
		name    string
		servers []string
		search  []string
		want    string
	}{
		{"none", nil, nil, "# Written by machined (Kiln); changes are overwritten.\n"},
		{"two", []string{"10.0.2.3", "fd00::3"}, []string{"example.org"},
			"# Written by machined (Kiln); changes are overwritten.\nnameserver 10.0.2.3\nnameserver fd00::3\nsearch example.org\n"},
		{"at most three", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"}, nil,
			"# Written by machined (Kiln); changes are overwritten.\nnameserver 1.1.1.1\nnameserver 2.2.2.2\nnameserver 3.3.3.3\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var servers []netip.Addr
			for _, s := range tt.servers {
				servers = append(servers, netip.MustParseAddr(s))
			}
			if diff := cmp.Diff(tt.want, string(Render(servers, tt.search))); diff != "" {
				t.Errorf("Render(%q, %q) (-want +got):\n%s", tt.servers, tt.search, diff)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	servers := []netip.Addr{netip.MustParseAddr("10.0.2.3")}
	wrote, err := Write(path, servers, nil)
	if err != nil || !wrote {
		t.Fatalf("Write = %v, %v; want a write", wrote, err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(Render(servers, nil)), string(got)); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
	if wrote, err := Write(path, servers, nil); err != nil || wrote {
		t.Errorf("second Write = %v, %v; want no write", wrote, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("directory holds %d files, want only resolv.conf (no temporary files left)", len(ents))
	}
	if _, err := Write(filepath.Join(dir, "missing", "resolv.conf"), servers, nil); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
}

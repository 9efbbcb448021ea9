package boards_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/boards/boardtest"
)

func TestConformance(t *testing.T) {
	for _, b := range boards.All() {
		t.Run(b.Name(), func(t *testing.T) { boardtest.Run(t, b) })
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"generic-amd64", ""},
		{"generic-arm64", ""},
		{"rpi9", `unknown board "rpi9" (known: generic-amd64, generic-arm64)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := boards.Lookup(tt.name)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Lookup(%q) error = %v, want %q", tt.name, err, tt.wantErr)
				}
				return
			}
			if err != nil || b.Name() != tt.name {
				t.Fatalf("Lookup(%q) = %v, %v", tt.name, b, err)
			}
		})
	}
}

func TestCmdlineAndPackages(t *testing.T) {
	b := boards.GenericAMD64()
	if got := boards.Cmdline(b); !strings.HasPrefix(got, "console=ttyS0,115200 ") {
		t.Errorf("Cmdline() = %q, want console first", got)
	}
	want := []boards.PackageRef{
		{Name: "linux-image-6.12.95+deb12-amd64", Arch: "amd64"},
		{Name: "systemd-boot-efi", Arch: "amd64"},
		{Name: "ca-certificates", Arch: "all"},
	}
	if diff := cmp.Diff(want, boards.Packages(b)); diff != "" {
		t.Errorf("Packages() mismatch (-want +got):\n%s", diff)
	}
}

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
		{Name: "linux-source-6.12", Arch: "all"},
		{Name: "linux-config-6.12", Arch: "amd64"},
		{Name: "systemd-boot-efi", Arch: "amd64"},
		{Name: "ca-certificates", Arch: "all"},
	}
	if diff := cmp.Diff(want, boards.Packages(b)); diff != "" {
		t.Errorf("Packages() mismatch (-want +got):\n%s", diff)
	}
}

func TestEFISize(t *testing.T) {
	const mb = 1000 * 1000
	tests := []struct {
		name       string
		uki, other int64
		want       int64
	}{
		{"bare image keeps the board's size", 17 * mb, 160 * 1024, 256 * boards.MiB},
		{"components image that fits keeps it", 100 * mb, 160 * 1024, 256 * boards.MiB},
		{"bigger UKI grows to a 16 MiB step", 110 * mb, 160 * 1024, 272 * boards.MiB},
		{"much bigger", 300 * mb, 0, 720 * boards.MiB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := boards.EFISize(256*boards.MiB, tt.uki, tt.other)
			if got != tt.want {
				t.Errorf("EFISize(256 MiB, %d, %d) = %d MiB, want %d MiB", tt.uki, tt.other, got/boards.MiB, tt.want/boards.MiB)
			}
			if need := 2*tt.uki + tt.other; got < need {
				t.Errorf("EFISize(256 MiB, %d, %d) = %d: two UKIs (%d) do not fit", tt.uki, tt.other, got, need)
			}
			if got%boards.MiB != 0 {
				t.Errorf("EFISize = %d, not a multiple of 1 MiB", got)
			}
		})
	}
}

func TestWithEFISize(t *testing.T) {
	l := boards.GenericAMD64().Layout()
	g := l.WithEFISize(512 * boards.MiB)
	if got := g.PartitionSize(boards.LabelEFI); got != 512*boards.MiB {
		t.Errorf("WithEFISize: EFI = %d, want 512 MiB", got)
	}
	if got := l.PartitionSize(boards.LabelEFI); got != 256*boards.MiB {
		t.Errorf("WithEFISize changed the board's layout: EFI = %d", got)
	}
	if diff := cmp.Diff(l.Partitions[1:], g.Partitions[1:]); diff != "" {
		t.Errorf("other partitions changed (-board +sized):\n%s", diff)
	}
}

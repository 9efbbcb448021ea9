package platform

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const netTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:C350 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 222 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:C350 0202000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1
`

const netTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:C350 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
`

func TestListening(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tcp"), []byte(netTCP), 0o644)
	os.WriteFile(filepath.Join(dir, "tcp6"), []byte(netTCP6), 0o644)
	got, err := Listening(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{Addr: netip.MustParseAddrPort("0.0.0.0:50000"), Inode: 12345},
		{Addr: netip.MustParseAddrPort("127.0.0.1:3306"), Inode: 222, UID: 101},
		{Addr: netip.MustParseAddrPort("[::]:50000"), Inode: 444},
		{Addr: netip.MustParseAddrPort("[::1]:8080"), Inode: 555},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("Listening (-want +got):\n%s", diff)
	}
	// The host's own tables parse too.
	if _, err := Listening("/proc/net"); err != nil {
		t.Errorf("Listening(/proc/net): %v", err)
	}
}

func TestParseMounts(t *testing.T) {
	in := "/dev/loop0 / squashfs ro,relatime 0 0\n/dev/vda4 /var ext4 rw,nosuid,nodev 0 0\ntmpfs /mnt/a\\040b tmpfs rw 0 0\n"
	got, err := ParseMounts(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got[0].ReadOnly() || got[1].ReadOnly() || got[2].Target != "/mnt/a b" {
		t.Errorf("ParseMounts = %+v", got)
	}
	if _, err := Mounts("/proc/mounts"); err != nil {
		t.Errorf("Mounts(/proc/mounts): %v", err)
	}
}

func TestValidHostname(t *testing.T) {
	for name, ok := range map[string]bool{
		"node-1": true, "cp1.example.org": true, "": false, "-bad": false, "bad-": false,
		"a..b": false, "under_score": false, strings.Repeat("a", 65): false, strings.Repeat("a", 64): true,
	} {
		if err := ValidHostname(name); (err == nil) != ok {
			t.Errorf("ValidHostname(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

// makeDisk writes a sparse image with Kiln's partition layout using sfdisk (no root).
func makeDisk(t *testing.T, size int64) string {
	t.Helper()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skipf("needs sfdisk (util-linux): %v", err)
	}
	img := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	script := `label: gpt
size=8MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"
size=1MiB, name="META"
size=8MiB, name="STATE"
name="EPHEMERAL"
`
	cmd := exec.Command("sfdisk", "--quiet", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return img
}

func TestGPTResize(t *testing.T) {
	img := makeDisk(t, 64<<20)
	// The user gives the node a bigger disk.
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := ReadGPT(f, 512)
	if err != nil {
		t.Fatalf("ReadGPT: %v", err)
	}
	var names []string
	for _, p := range g.Partitions() {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"EFI", "META", "STATE", "EPHEMERAL"}, names); diff != "" {
		t.Errorf("partitions (-want +got):\n%s", diff)
	}
	if _, err := g.Resize(256<<20/512, LabelState); err == nil {
		t.Error("Resize(STATE) succeeded; STATE is not the last partition")
	}
	changed, err := g.Resize(256<<20/512, LabelEphemeral)
	if err != nil || !changed {
		t.Fatalf("Resize = %v, %v; want changed", changed, err)
	}
	if err := g.Write(f); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second pass finds nothing to do.
	g2, err := ReadGPT(f, 512)
	if err != nil {
		t.Fatalf("ReadGPT after write: %v", err)
	}
	if changed, err := g2.Resize(256<<20/512, LabelEphemeral); err != nil || changed {
		t.Errorf("second Resize = %v, %v; want unchanged", changed, err)
	}
	// util-linux checks primary and backup headers, CRCs and overlaps.
	out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") || strings.Contains(string(out), "mismatch") {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
	dump, err := exec.Command("sfdisk", "--dump", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v\n%s", err, dump)
	}
	// 256 MiB disk: last usable LBA = 524288 - 34 = 524254.
	if !strings.Contains(string(dump), "last-lba: 524254") {
		t.Errorf("dump lacks last-lba 524254:\n%s", dump)
	}
	p, _ := g2.ByName(LabelEphemeral)
	if p.LastLBA != 524254 {
		t.Errorf("EPHEMERAL ends at %d, want 524254", p.LastLBA)
	}
}

package platform

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Process
	}{
		{"1 (kiln-init:supe) S 0 1 1 0 -1 4194560 ...", Process{Name: "kiln-init:supe", State: "S", PPID: 0}},
		{"42 (a (b) c) R 7 42 42 0", Process{Name: "a (b) c", State: "R", PPID: 7}},
	} {
		got, err := ParseStat([]byte(tt.in))
		if err != nil {
			t.Fatalf("ParseStat(%q): %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseStat(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
	if _, err := ParseStat([]byte("garbage")); err == nil {
		t.Errorf("ParseStat(garbage) succeeded")
	}
}

func TestProcessesFindsSelf(t *testing.T) {
	ps, err := Processes("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.PID == os.Getpid() {
			if p.PPID != os.Getppid() || p.RSSBytes == 0 || p.CommandLine == "" {
				t.Errorf("own entry = %+v, want ppid %d, a resident size and a command line", p, os.Getppid())
			}
			return
		}
	}
	t.Fatalf("Processes(/proc) does not list the test process %d", os.Getpid())
}

package platform

import (
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Process
	}{
		{"1 (kiln-init:supe) S 0 1 1 0 -1 4194560 ...", Process{Name: "kiln-init:supe", State: "S", PPID: 0}},
		{"42 (a (b) c) R 7 42 42 0", Process{Name: "a (b) c", State: "R", PPID: 7}},
		// A whole line of machined on a node: utime 86 and stime 84 ticks.
		{"138 (machined) S 1 1 1 0 -1 4194560 934 0 0 0 86 84 0 0 20 0 9 0 31 1270829056 4373 18446744073709551615",
			Process{Name: "machined", State: "S", PPID: 1, UserCPU: 860 * time.Millisecond, SystemCPU: 840 * time.Millisecond}},
	} {
		got, err := ParseStat([]byte(tt.in))
		if err != nil {
			t.Fatalf("ParseStat(%q): %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseStat(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
	for _, bad := range []string{"garbage", "7 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 0 0", "7 (x) S 1 1 1 0 -1 0 0 0 0 0 1 -2 0"} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) succeeded", bad)
		}
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

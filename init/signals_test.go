package main

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// A reboot or power-off asked for during the boot phase reaches the supervising
// phase through the environment of the re-exec.
func TestPendingSignalsSurviveTheReexec(t *testing.T) {
	sigs := make(chan os.Signal, 4)
	sigs <- unix.SIGTERM
	sigs <- unix.SIGUSR2
	v := drainSignals(sigs)
	if v != "15,12" {
		t.Errorf("drainSignals = %q, want \"15,12\"", v)
	}
	if len(sigs) != 0 {
		t.Errorf("%d signals left in the channel", len(sigs))
	}
	if diff := cmp.Diff([]os.Signal{unix.SIGTERM, unix.SIGUSR2}, pendingSignals(v)); diff != "" {
		t.Errorf("pendingSignals (-want +got):\n%s", diff)
	}
	if got := pendingSignals(""); len(got) != 0 {
		t.Errorf("pendingSignals(\"\") = %v, want none", got)
	}
	if got := pendingSignals("x,-1,0,2"); !cmp.Equal(got, []os.Signal{unix.SIGINT}) {
		t.Errorf("pendingSignals(\"x,-1,0,2\") = %v, want [interrupt]", got)
	}
}

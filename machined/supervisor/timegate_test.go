package supervisor

import "testing"

// TestNeedsTimeWaitsForTimeReady: a service with NeedsTime waits (and says
// so) until TimeReady is closed; others start at once.
func TestNeedsTimeWaitsForTimeReady(t *testing.T) {
	ready := make(chan struct{})
	opts := testOptions(t)
	opts.TimeReady = ready
	s := newSupervisor(t, opts)
	clock := sleeper("needs-clock")
	clock.NeedsTime = true
	reconcile(t, s, clock, sleeper("free"))
	waitState(t, s, "free", Running)
	waitFor(t, "needs-clock waiting for time sync", func() bool {
		st := status(t, s, "needs-clock")
		return st.State == Waiting && len(st.Events) > 0 && st.Events[len(st.Events)-1].Message == "waiting for time sync"
	})
	close(ready)
	waitState(t, s, "needs-clock", Running)
}

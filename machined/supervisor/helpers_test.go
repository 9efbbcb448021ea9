package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hang protection only: every wait polls until its condition holds.
const deadline = 60 * time.Second

func testOptions(t *testing.T) Options {
	return Options{
		LogDir:     t.TempDir(),
		BackoffMin: 10 * time.Millisecond,
		BackoffMax: 80 * time.Millisecond,
		StopGrace:  20 * time.Second,
	}
}

// newSupervisor returns a Supervisor that is shut down when the test ends.
func newSupervisor(t *testing.T, opts Options) *Supervisor {
	t.Helper()
	s := New(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

func reconcile(t *testing.T, s *Supervisor, specs ...Spec) {
	t.Helper()
	if err := s.Reconcile(context.Background(), specs); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
}

func sleeper(id string, deps ...string) Spec {
	return Spec{ID: id, Command: "/bin/sleep", Args: []string{"1000"}, DependsOn: deps}
}

func shell(id, script string) Spec {
	return Spec{ID: id, Command: "/bin/sh", Args: []string{"-c", script}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(t *testing.T, s *Supervisor, id string) Status {
	t.Helper()
	for _, st := range s.List() {
		if st.ID == id {
			return st
		}
	}
	t.Fatalf("service %q not in List()", id)
	return Status{}
}

func waitState(t *testing.T, s *Supervisor, id string, want State) Status {
	t.Helper()
	var st Status
	waitFor(t, fmt.Sprintf("%s to be %s", id, want), func() bool {
		st = status(t, s, id)
		return st.State == want
	})
	return st
}

// waitRunnerDone waits until id has no active runner: its state is final.
func waitRunnerDone(t *testing.T, s *Supervisor, id string) Status {
	t.Helper()
	svc, err := s.get(id)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, id+"'s runner to end", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return svc.run == nil || !svc.run.active()
	})
	return status(t, s, id)
}

// firstEvent returns the time of the first event of id in state.
func firstEvent(t *testing.T, st Status, state State) time.Time {
	t.Helper()
	for _, ev := range st.Events {
		if ev.State == state {
			return ev.Time
		}
	}
	t.Fatalf("%s has no %s event: %+v", st.ID, state, st.Events)
	return time.Time{}
}

func hasEvent(st Status, state State) bool {
	for _, ev := range st.Events {
		if ev.State == state {
			return true
		}
	}
	return false
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...; comm may hold spaces, so cut at the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	return data[i+2] != 'Z'
}

func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		waitFor(t, fmt.Sprintf("pid %d to be gone", pid), func() bool { return !alive(pid) })
	}
}

// readPID waits for a shell script to write a pid into path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, "pid file "+filepath.Base(path), func() bool {
		data, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(data), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	return pid
}

// checkNoGoroutineLeak polls until the goroutine count is back to base.
func checkNoGoroutineLeak(t *testing.T, base int) {
	t.Helper()
	end := time.Now().Add(deadline)
	for runtime.NumGoroutine() > base {
		if time.Now().After(end) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

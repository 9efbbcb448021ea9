package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDependencyOrder(t *testing.T) {
	var mu sync.Mutex
	var running []string
	opts := testOptions(t)
	opts.OnEvent = func(st Status, ev Event) {
		if ev.State == Running {
			mu.Lock()
			running = append(running, st.ID)
			mu.Unlock()
		}
	}
	s := New(opts)
	// Given in reverse so that list order cannot explain the start order.
	reconcile(t, s, sleeper("c", "b"), sleeper("b", "a"), sleeper("a"))
	for _, id := range []string{"a", "b", "c"} {
		waitState(t, s, id, Running)
	}
	a, b, c := status(t, s, "a"), status(t, s, "b"), status(t, s, "c")
	if got := firstEvent(t, b, Starting); got.Before(firstEvent(t, a, Running)) {
		t.Errorf("b started before a was running")
	}
	if got := firstEvent(t, c, Starting); got.Before(firstEvent(t, b, Running)) {
		t.Errorf("c started before b was running")
	}
	if diff := cmp.Diff([]string{"b"}, c.DependsOn); diff != "" {
		t.Errorf("c.DependsOn (-want +got):\n%s", diff)
	}

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	a, b, c = status(t, s, "a"), status(t, s, "b"), status(t, s, "c")
	for _, st := range []Status{a, b, c} {
		if st.State != Stopped || st.PID != 0 {
			t.Errorf("%s after Shutdown: state %s pid %d, want Stopped pid 0", st.ID, st.State, st.PID)
		}
	}
	if firstEvent(t, b, Stopping).Before(firstEvent(t, c, Stopped)) {
		t.Errorf("b was stopped before its dependent c had stopped")
	}
	if firstEvent(t, a, Stopping).Before(firstEvent(t, b, Stopped)) {
		t.Errorf("a was stopped before its dependent b had stopped")
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"a", "b", "c"}, running); diff != "" {
		t.Errorf("OnEvent Running order (-want +got):\n%s", diff)
	}
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy      RestartPolicy
		command     string
		wantRestart bool
		wantFinal   State // when not restarted
	}{
		{RestartNever, "/bin/false", false, Failed},
		{RestartNever, "/bin/true", false, Finished},
		{RestartOnFailure, "/bin/false", true, ""},
		{RestartOnFailure, "/bin/true", false, Finished},
		{RestartAlways, "/bin/true", true, ""},
		{RestartAlways, "/bin/false", true, ""},
		{RestartOnFailure, "/nonexistent/command", true, ""},
		{RestartNever, "/nonexistent/command", false, Failed},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s", tt.policy, filepath.Base(tt.command)), func(t *testing.T) {
			s := newSupervisor(t, testOptions(t))
			reconcile(t, s, Spec{ID: "svc", Command: tt.command, Restart: tt.policy})
			if tt.wantRestart {
				waitFor(t, "two restarts", func() bool { return status(t, s, "svc").Restarts >= 2 })
				return
			}
			st := waitRunnerDone(t, s, "svc")
			if st.State != tt.wantFinal || st.Restarts != 0 || hasEvent(st, Backoff) {
				t.Errorf("final state %s, %d restarts, events %+v; want %s without restart", st.State, st.Restarts, st.Events, tt.wantFinal)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name        string
		stableAfter time.Duration
		want        []string
	}{
		{"grows to max", 0, []string{"10ms", "20ms", "40ms", "80ms", "80ms"}},
		{"reset after stable run", time.Nanosecond, []string{"10ms", "10ms", "10ms", "10ms", "10ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var delays []string
			opts := testOptions(t)
			opts.StableAfter = tt.stableAfter
			opts.OnEvent = func(_ Status, ev Event) {
				if d, ok := strings.CutPrefix(ev.Message, "restarting in "); ok && ev.State == Backoff {
					mu.Lock()
					delays = append(delays, d)
					mu.Unlock()
				}
			}
			s := newSupervisor(t, opts)
			reconcile(t, s, Spec{ID: "crash", Command: "/bin/false"})
			waitFor(t, "5 restarts", func() bool { return status(t, s, "crash").Restarts >= len(tt.want) })
			s.Stop("crash")
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(tt.want, delays[:len(tt.want)]); diff != "" {
				t.Errorf("backoff delays (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStopStartRestart(t *testing.T) {
	s := newSupervisor(t, testOptions(t))
	reconcile(t, s, sleeper("svc"))
	pid1 := waitState(t, s, "svc", Running).PID
	if err := s.Stop("svc"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := waitRunnerDone(t, s, "svc")
	if st.State != Stopped || st.PID != 0 {
		t.Errorf("after Stop: state %s pid %d, want Stopped 0", st.State, st.PID)
	}
	waitGone(t, pid1)
	// A manual stop survives a Reconcile that does not change the service.
	reconcile(t, s, sleeper("svc"))
	if st := status(t, s, "svc"); st.State != Stopped {
		t.Errorf("after Reconcile: state %s, want Stopped", st.State)
	}
	if err := s.Start("svc"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid2 := waitState(t, s, "svc", Running).PID
	if err := s.Start("svc"); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if err := s.Restart("svc"); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	pid3 := waitState(t, s, "svc", Running).PID
	if pid2 == pid1 || pid3 == pid2 {
		t.Errorf("pids %d, %d, %d: want a new process after Start and Restart", pid1, pid2, pid3)
	}
	waitGone(t, pid2)

	for name, op := range map[string]func(string) error{"Start": s.Start, "Stop": s.Stop, "Restart": s.Restart} {
		if err := op("nope"); !isNotFound(err) || !strings.Contains(err.Error(), "nope") {
			t.Errorf("%s(\"nope\") = %v, want ErrNotFound naming the id", name, err)
		}
	}
	if _, err := s.Log("nope"); !isNotFound(err) {
		t.Errorf("Log(\"nope\") = %v, want ErrNotFound", err)
	}
}

func TestHealthTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	s := newSupervisor(t, testOptions(t))
	sp := sleeper("web")
	sp.Health = &HealthCheck{TCP: ln.Addr().String(), Interval: 20 * time.Millisecond}
	reconcile(t, s, sp, sleeper("plain"))
	waitFor(t, "web healthy", func() bool {
		h := status(t, s, "web").Healthy
		return h != nil && *h
	})
	if h := waitState(t, s, "plain", Running).Healthy; h != nil {
		t.Errorf("service without a check: Healthy = %v, want nil", *h)
	}
	ln.Close()
	st := status(t, s, "web")
	waitFor(t, "web unhealthy", func() bool {
		st = status(t, s, "web")
		return st.Healthy != nil && !*st.Healthy
	})
	if !strings.Contains(st.HealthMessage, "tcp") || st.HealthChanged.IsZero() {
		t.Errorf("unhealthy status: message %q, changed %v", st.HealthMessage, st.HealthChanged)
	}
	if st.State != Running {
		t.Errorf("an unhealthy service changed state to %s", st.State)
	}
}

func TestHealthExecGatesDependents(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	s := newSupervisor(t, testOptions(t))
	db := sleeper("db")
	db.Health = &HealthCheck{
		Exec:     []string{"/bin/sh", "-c", `test -f "$READY" || { echo "no $READY"; exit 1; }`},
		Interval: 20 * time.Millisecond,
	}
	db.Env = []string{"READY=" + ready}
	reconcile(t, s, db, sleeper("app", "db"))

	var st Status
	waitFor(t, "db's first failed check", func() bool {
		st = status(t, s, "db")
		return st.State == Running && strings.Contains(st.HealthMessage, "no "+ready)
	})
	if *st.Healthy {
		t.Fatalf("db healthy before %s exists", ready)
	}
	if app := status(t, s, "app"); app.State != Waiting || !strings.Contains(app.Events[len(app.Events)-1].Message, "db") {
		t.Errorf("app while db is unhealthy: %s %+v, want Waiting for db", app.State, app.Events)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "app", Running)
	if st := status(t, s, "db"); !*st.Healthy || st.HealthMessage != "ok" {
		t.Errorf("db after ready: healthy %v message %q", *st.Healthy, st.HealthMessage)
	}
}

func TestHealthExecTimeout(t *testing.T) {
	s := newSupervisor(t, testOptions(t))
	sp := sleeper("slow")
	sp.Health = &HealthCheck{Exec: []string{"/bin/sleep", "1000"}, Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond}
	reconcile(t, s, sp)
	waitFor(t, "a timed-out check", func() bool {
		return strings.Contains(status(t, s, "slow").HealthMessage, "timed out")
	})
}

func TestLogs(t *testing.T) {
	opts := testOptions(t)
	s := newSupervisor(t, opts)
	reconcile(t, s, shell("talker", `echo "hello $GREETING"; echo oops >&2; echo "path=$PATH"; exec /bin/sleep 1000`))
	l, err := s.Log("talker")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"hello \n", "oops\n", "path=" + strings.TrimPrefix(DefaultBaseEnv[0], "PATH=") + "\n"}
	var got []string
	waitFor(t, "3 log lines", func() bool {
		got = got[:0]
		for _, line := range l.Tail(-1) {
			got = append(got, string(line))
		}
		return len(got) >= 3
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Tail(-1) (-want +got):\n%s", diff)
	}
	data, err := os.ReadFile(filepath.Join(opts.LogDir, "talker.log"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Join(want, ""), string(data)); diff != "" {
		t.Errorf("log file (-want +got):\n%s", diff)
	}
}

func TestEnvAndPrepare(t *testing.T) {
	opts := testOptions(t)
	opts.Prepare = func(cmd *exec.Cmd, sp Spec) error {
		if sp.ID == "broken" {
			return errors.New("no cgroup for you")
		}
		cmd.Env = append(cmd.Env, "PREPARED=yes")
		return nil
	}
	s := newSupervisor(t, opts)
	env := shell("env", `echo "$FOO $PREPARED $(pwd)"; exec /bin/sleep 1000`)
	env.Env = []string{"FOO=bar"}
	env.Dir = t.TempDir()
	broken := sleeper("broken")
	broken.Restart = RestartNever
	reconcile(t, s, env, broken)
	l, _ := s.Log("env")
	waitFor(t, "env output", func() bool { return len(l.Tail(-1)) > 0 })
	if got, want := string(l.Tail(1)[0]), "bar yes "+env.Dir+"\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	st := waitRunnerDone(t, s, "broken")
	if last := st.Events[len(st.Events)-1]; st.State != Failed || !strings.Contains(last.Message, "no cgroup for you") {
		t.Errorf("broken: %s %+v, want Failed with the Prepare error", st.State, last)
	}
}

func TestReconcile(t *testing.T) {
	s := newSupervisor(t, testOptions(t))
	reconcile(t, s, sleeper("a"), sleeper("b", "a"), sleeper("c", "b"))
	pids := map[string]int{}
	for _, id := range []string{"a", "b", "c"} {
		pids[id] = waitState(t, s, id, Running).PID
	}

	t.Run("invalid changes nothing", func(t *testing.T) {
		for name, specs := range map[string][]Spec{
			"unknown dependency": {sleeper("a"), sleeper("b", "zzz")},
			"cycle":              {sleeper("a", "b"), sleeper("b", "a")},
			"duplicate":          {sleeper("a"), sleeper("a")},
		} {
			if err := s.Reconcile(context.Background(), specs); err == nil {
				t.Errorf("Reconcile(%s) succeeded", name)
			}
		}
		for id, pid := range pids {
			if st := status(t, s, id); st.State != Running || st.PID != pid {
				t.Errorf("%s after rejected Reconcile: %s pid %d, want Running pid %d", id, st.State, st.PID, pid)
			}
		}
	})

	// Remove b and c (dependents first), change a, add d, keep nothing else.
	changed := sleeper("a")
	changed.Args = []string{"1001"}
	reconcile(t, s, changed, sleeper("d", "a"))
	var ids []string
	for _, st := range s.List() {
		ids = append(ids, st.ID)
	}
	if diff := cmp.Diff([]string{"a", "d"}, ids); diff != "" {
		t.Errorf("List() ids (-want +got):\n%s", diff)
	}
	waitGone(t, pids["b"], pids["c"], pids["a"])
	if st := waitState(t, s, "a", Running); st.PID == pids["a"] {
		t.Errorf("a was not restarted after its spec changed")
	}
	waitState(t, s, "d", Running)
	if _, err := s.Log("b"); !isNotFound(err) {
		t.Errorf("Log of a removed service: %v, want ErrNotFound", err)
	}

	// Unchanged specs leave processes alone (nil and empty slices are equal).
	pidA, pidD := status(t, s, "a").PID, status(t, s, "d").PID
	same := sleeper("d", "a")
	same.Env = []string{}
	reconcile(t, s, changed, same)
	if a, d := status(t, s, "a"), status(t, s, "d"); a.PID != pidA || d.PID != pidD {
		t.Errorf("unchanged Reconcile restarted services: a %d->%d, d %d->%d", pidA, a.PID, pidD, d.PID)
	}
}

func TestProcessGroupKilled(t *testing.T) {
	tests := []struct {
		name   string
		script string
		stop   bool // Stop the service; otherwise the leader exits by itself
	}{
		{"stop", `/bin/sleep 1000 & echo $! > "$PIDFILE"; wait`, true},
		{"stop ignoring SIGTERM", `trap "" TERM; /bin/sleep 1000 & echo $! > "$PIDFILE"; while :; do wait; done`, true},
		{"leader exits", `/bin/sleep 1000 & echo $! > "$PIDFILE"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			opts.StopGrace = 200 * time.Millisecond
			s := newSupervisor(t, opts)
			pidfile := filepath.Join(t.TempDir(), "pid")
			sp := shell("tree", tt.script)
			sp.Env = []string{"PIDFILE=" + pidfile}
			sp.Restart = RestartNever
			reconcile(t, s, sp)
			grandchild := readPID(t, pidfile)
			leader := status(t, s, "tree").PID
			if tt.stop {
				if leader == 0 {
					t.Fatal("tree is not running")
				}
				if err := s.Stop("tree"); err != nil {
					t.Fatal(err)
				}
			} else {
				waitRunnerDone(t, s, "tree")
			}
			waitGone(t, grandchild)
			if leader != 0 {
				waitGone(t, leader)
			}
		})
	}
}

func TestShutdownLeavesNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	dir := t.TempDir()
	opts := testOptions(t)
	opts.StopGrace = 200 * time.Millisecond
	s := New(opts)
	stubborn := shell("stubborn", `trap "" TERM; /bin/sleep 1000 & echo $! > "$DIR/stubborn"; while :; do wait; done`)
	stubborn.Env = []string{"DIR=" + dir}
	web := sleeper("web", "stubborn")
	web.Health = &HealthCheck{Exec: []string{"/bin/true"}, Interval: 10 * time.Millisecond}
	crash := Spec{ID: "crash", Command: "/bin/false"}
	waiter := sleeper("waiter", "crash")
	reconcile(t, s, stubborn, web, sleeper("api", "web"), crash, waiter)
	var pids []int
	for _, id := range []string{"stubborn", "web", "api"} {
		pids = append(pids, waitState(t, s, id, Running).PID)
	}
	pids = append(pids, readPID(t, filepath.Join(dir, "stubborn")))
	waitFor(t, "crash restarting", func() bool { return status(t, s, "crash").Restarts > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, st := range s.List() {
		if st.State != Stopped {
			t.Errorf("%s after Shutdown: %s, want Stopped", st.ID, st.State)
		}
	}
	// SIGKILL is delivered asynchronously: poll for the group to be gone.
	waitGone(t, pids...)
	if err := s.Start("api"); !errors.Is(err, ErrShutdown) {
		t.Errorf("Start after Shutdown = %v, want ErrShutdown", err)
	}
	if err := s.Reconcile(ctx, nil); !errors.Is(err, ErrShutdown) {
		t.Errorf("Reconcile after Shutdown = %v, want ErrShutdown", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
	checkNoGoroutineLeak(t, base)
}

func TestShutdownContextKills(t *testing.T) {
	opts := testOptions(t)
	opts.StopGrace = time.Hour
	s := New(opts)
	pidfile := filepath.Join(t.TempDir(), "pid")
	sp := shell("stubborn", `trap "" TERM; echo $$ > "$PIDFILE"; while :; do /bin/sleep 1; done`)
	sp.Env = []string{"PIDFILE=" + pidfile}
	reconcile(t, s, sp)
	pid := readPID(t, pidfile) // written once SIGTERM is ignored
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		for end := time.Now().Add(deadline); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if st := s.List(); len(st) == 1 && st[0].State == Stopping {
				return
			}
		}
	}()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	waitGone(t, pid)
}

func TestEventsCapped(t *testing.T) {
	s := newSupervisor(t, testOptions(t))
	reconcile(t, s, Spec{ID: "crash", Command: "/bin/false"})
	waitFor(t, "many restarts", func() bool { return status(t, s, "crash").Restarts >= maxEvents })
	if got := len(status(t, s, "crash").Events); got != maxEvents {
		t.Errorf("len(Events) = %d, want %d", got, maxEvents)
	}
}

package supervise

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain doubles as the supervised program: with KILN_SUPERVISE_HELPER set, the test
// binary acts out one behaviour instead of running tests.
func TestMain(m *testing.M) {
	switch os.Getenv("KILN_SUPERVISE_HELPER") {
	case "":
		os.Exit(m.Run())
	case "orphan-crash":
		// Leave an orphan behind (PID 1 — here the subreaper test — must reap it) and crash.
		f, _ := os.OpenFile(os.Getenv("KILN_STARTS"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "KILN_SUPERVISE_HELPER=sleep")
		if err := cmd.Start(); err != nil {
			os.Exit(2)
		}
		fmt.Fprintf(f, "%d %d\n", os.Getpid(), cmd.Process.Pid)
		f.Close()
		os.Exit(1)
	case "sleep":
		time.Sleep(200 * time.Millisecond)
		os.Exit(0)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		f, _ := os.OpenFile(os.Getenv("KILN_STARTS"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		fmt.Fprintf(f, "%d 0\n", os.Getpid())
		f.Close()
		time.Sleep(time.Hour)
	}
	os.Exit(3)
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Stable: time.Minute}
	steps := []struct {
		ran  time.Duration
		want time.Duration
	}{
		{0, 100 * time.Millisecond},
		{time.Second, 200 * time.Millisecond},
		{0, 400 * time.Millisecond},
		{0, 800 * time.Millisecond},
		{0, time.Second},
		{0, time.Second},
		{2 * time.Minute, 100 * time.Millisecond}, // stable run resets
		{0, 200 * time.Millisecond},
	}
	for i, s := range steps {
		if got := b.Next(s.ran); got != s.want {
			t.Errorf("step %d: Next(%v) = %v, want %v", i, s.ran, got, s.want)
		}
	}
}

func TestActionFor(t *testing.T) {
	for _, tt := range []struct {
		sig  os.Signal
		want Action
		ok   bool
	}{
		{unix.SIGTERM, Reboot, true},
		{unix.SIGINT, Reboot, true},
		{unix.SIGUSR2, PowerOff, true},
		{unix.SIGPWR, PowerOff, true},
		{unix.SIGUSR1, Halt, true},
		{unix.SIGHUP, 0, false},
	} {
		if a, ok := ActionFor(tt.sig); a != tt.want || ok != tt.ok {
			t.Errorf("ActionFor(%v) = %v, %v, want %v, %v", tt.sig, a, ok, tt.want, tt.ok)
		}
	}
	if RebootCmd(PowerOff) != unix.LINUX_REBOOT_CMD_POWER_OFF || RebootCmd(Reboot) != unix.LINUX_REBOOT_CMD_RESTART {
		t.Error("RebootCmd maps actions wrongly")
	}
}

type exits struct {
	mu sync.Mutex
	m  map[int]unix.WaitStatus
}

func (e *exits) add(pid int, ws unix.WaitStatus) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[pid] = ws
}

func (e *exits) get(pid int) (unix.WaitStatus, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ws, ok := e.m[pid]
	return ws, ok
}

// readStarts returns the "pid orphanpid" lines the helper wrote.
func readStarts(t *testing.T, path string) [][2]int {
	t.Helper()
	b, _ := os.ReadFile(path)
	var out [][2]int
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		a, _ := strconv.Atoi(f[0])
		o, _ := strconv.Atoi(f[1])
		out = append(out, [2]int{a, o})
	}
	return out
}

// waitFor polls cond; the deadline only protects against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func newSupervisor(t *testing.T, mode string, e *exits) (*Supervisor, string, chan os.Signal) {
	t.Helper()
	// Orphans of the helper are reparented to this test process, as to PID 1 on a node.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	starts := filepath.Join(t.TempDir(), "starts")
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	t.Cleanup(func() { signal.Stop(sigs) })
	s := &Supervisor{
		Path:        os.Args[0],
		Env:         append(os.Environ(), "KILN_SUPERVISE_HELPER="+mode, "KILN_STARTS="+starts),
		Backoff:     Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, Stable: time.Hour},
		StopTimeout: 200 * time.Millisecond,
		Log:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
		OnExit:      e.add,
	}
	return s, starts, sigs
}

func TestSupervisorRestartsAndReapsOrphans(t *testing.T) {
	e := &exits{m: map[int]unix.WaitStatus{}}
	s, starts, sigs := newSupervisor(t, "orphan-crash", e)
	done := make(chan Action)
	go func() { done <- s.Run(sigs) }()

	waitFor(t, "three starts with their orphans reaped", func() bool {
		st := readStarts(t, starts)
		if len(st) < 3 {
			return false
		}
		for _, p := range st[:3] {
			ws, ok := e.get(p[0])
			if !ok || ws.ExitStatus() != 1 {
				return false
			}
			if _, ok := e.get(p[1]); !ok {
				return false
			}
		}
		return true
	})
	sigs <- unix.SIGTERM
	if a := <-done; a != Reboot {
		t.Errorf("Run = %v, want reboot", a)
	}
}

func TestSupervisorStopKillsStubbornProgram(t *testing.T) {
	e := &exits{m: map[int]unix.WaitStatus{}}
	s, starts, sigs := newSupervisor(t, "stubborn", e)
	done := make(chan Action)
	go func() { done <- s.Run(sigs) }()
	waitFor(t, "the program to start", func() bool { return len(readStarts(t, starts)) == 1 })
	pid := readStarts(t, starts)[0][0]
	sigs <- unix.SIGUSR2
	if a := <-done; a != PowerOff {
		t.Errorf("Run = %v, want power off", a)
	}
	ws, ok := e.get(pid)
	if !ok || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("program %d: reaped %v, status %v; want killed by SIGKILL after ignoring SIGTERM", pid, ok, describe(ws))
	}
	if s.Running() != 0 {
		t.Errorf("Running() = %d after stop, want 0", s.Running())
	}
}

// TestSupervisorAdopts: a program started by Start (in init's first phase) is
// supervised by a later Run with Adopt, not started twice, and restarted when it dies.
func TestSupervisorAdopts(t *testing.T) {
	e := &exits{m: map[int]unix.WaitStatus{}}
	first, starts, _ := newSupervisor(t, "stubborn", e)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	adopted := first.Running()
	waitFor(t, "the first program to start", func() bool { return len(readStarts(t, starts)) == 1 })

	s, _, sigs := newSupervisor(t, "stubborn", e)
	s.Env = first.Env
	s.Adopt = adopted
	done := make(chan Action)
	go func() { done <- s.Run(sigs) }()
	// A SIGCHLD before Run adopted waits in sigs and is handled after the adoption.
	if err := unix.Kill(adopted, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a restart after the adopted program died", func() bool { return len(readStarts(t, starts)) == 2 })
	sigs <- unix.SIGUSR2
	if a := <-done; a != PowerOff {
		t.Errorf("Run = %v, want power off", a)
	}
	if ws, ok := e.get(adopted); !ok || ws.Signal() != unix.SIGKILL {
		t.Errorf("adopted program %d: reaped %v, status %v", adopted, ok, describe(ws))
	}
}

package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashDirEnv makes the test binary run crashChild instead of the tests.
const crashDirEnv = "KILN_STORE_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashContent is the config with sequence number i. Sizes vary so that a
// torn write cannot look complete, and consecutive configs always differ.
func crashContent(i int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "config %d\n", i)
	pattern := fmt.Sprintf("%08d-", i)
	for b.Len() < (i*7919)%65536 {
		b.WriteString(pattern)
	}
	return b.Bytes()
}

func crashSeq(data []byte) (int, error) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	n, ok := strings.CutPrefix(string(line), "config ")
	if !ok {
		return 0, fmt.Errorf("not a crash-test config: %q", line)
	}
	return strconv.Atoi(n)
}

// crashChild saves configs in a loop until it is killed, announcing each
// save on stdout ("saving N" before, "saved N" after) with unbuffered writes
// so the parent knows what was in flight when the signal hit.
func crashChild(dir string) error {
	s, err := Open(dir, nil)
	if err != nil {
		return err
	}
	last := 0
	switch data, err := s.Load(); {
	case errors.Is(err, ErrNoConfig):
	case err != nil:
		return err
	default:
		if last, err = crashSeq(data); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stdout, "ready %d\n", last)
	for i := last + 1; ; i++ {
		fmt.Fprintf(os.Stdout, "saving %d\n", i)
		if err := s.Save(crashContent(i)); err != nil {
			return err
		}
		fmt.Fprintf(os.Stdout, "saved %d\n", i)
	}
}

// TestCrashDuringSave SIGKILLs a process that saves configs in a loop, 200
// times at random moments, and checks after each kill that the store holds
// exactly the config being replaced or the one replacing it.
func TestCrashDuringSave(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 30
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	midSave := 0
	for run := range runs {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready ") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("run %d: child did not start: %q, stderr: %s", run, sc.Text(), stderr.String())
		}
		time.Sleep(time.Duration(rand.IntN(20000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("run %d: kill: %v", run, err)
		}
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		werr := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("run %d: child ended on its own (%v), stderr: %s", run, werr, stderr.String())
		}
		if len(lines) == 0 {
			continue // killed before the first save began; checked next run by "ready"
		}

		// The last line tells what was in flight.
		var acceptable []int
		last := lines[len(lines)-1]
		if n, ok := strings.CutPrefix(last, "saved "); ok {
			i, _ := strconv.Atoi(n)
			acceptable = []int{i}
		} else if n, ok := strings.CutPrefix(last, "saving "); ok {
			i, _ := strconv.Atoi(n)
			acceptable = []int{i - 1, i}
			midSave++
		} else {
			t.Fatalf("run %d: unexpected output %q", run, last)
		}

		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := s.Load()
		if err != nil {
			if acceptable[0] == 0 && errors.Is(err, ErrNoConfig) {
				continue // the very first save was interrupted
			}
			t.Fatalf("run %d: Load() after kill: %v (want config %v)", run, err, acceptable)
		}
		got, err := crashSeq(data)
		if err != nil {
			t.Fatalf("run %d: Load() after kill: %v", run, err)
		}
		ok := false
		for _, a := range acceptable {
			ok = ok || got == a
		}
		if !ok {
			t.Fatalf("run %d: Load() = config %d, want one of %v", run, got, acceptable)
		}
		if !bytes.Equal(data, crashContent(got)) {
			t.Fatalf("run %d: Load() returned config %d with wrong contents", run, got)
		}
	}
	t.Logf("%d of %d kills landed between \"saving\" and \"saved\"", midSave, runs)
}

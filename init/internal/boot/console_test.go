package boot

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty returns the two ends of a new pseudo-terminal.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// DrainConsole leaves what was written alone: on a terminal the other end reads the
// line whole; a file and a writer that is not a file are no terminals and pass.
func TestDrainConsoleLeavesOutput(t *testing.T) {
	m, s := openPty(t)
	line := []byte("kiln-init: power off\n")
	if _, err := s.Write(line); err != nil {
		t.Fatal(err)
	}
	DrainConsole(s, time.Minute)
	got := make([]byte, 0, len(line)+8)
	buf := make([]byte, 64)
	for len(got) <= len(line) {
		n, err := m.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	// The terminal's output processing turns \n into \r\n.
	if want := []byte("kiln-init: power off\r\n"); !bytes.Equal(got, want) {
		t.Errorf("read %q, want %q", got, want)
	}

	p := filepath.Join(t.TempDir(), "console")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("line\n"); err != nil {
		t.Fatal(err)
	}
	DrainConsole(f, time.Minute)
	DrainConsole(&bytes.Buffer{}, time.Minute)
	if b, err := os.ReadFile(p); err != nil || string(b) != "line\n" {
		t.Errorf("file after DrainConsole: %q, %v", b, err)
	}
}

// A console that does not drain (a serial port held back by flow control) holds the
// power-off back only for the limit: DrainConsole returns, or the test times out.
func TestDrainConsoleGivesUp(t *testing.T) {
	_, s := openPty(t)
	release := make(chan struct{})
	defer close(release)
	saved := tcdrain
	defer func() { tcdrain = saved }()
	tcdrain = func(int) error { <-release; return nil }
	DrainConsole(s, 10*time.Millisecond)
}

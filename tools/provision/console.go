package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// ReadyPattern matches the machine-readable line machined prints on the serial console
// once the machine API listens (format fixed in machined/daemon's documentation):
//
//	[kiln] ready api=<addr> mode=<maintenance|configured> fingerprint=sha256:<hex> addrs=… hostname=… platform=… cpu=… uptime=…
//
// Named submatches: mode, fingerprint (of the certificate the API serves, which Create
// pins in maintenance mode), hostname, cpu (machined's CPU time so far, a Go duration;
// empty from a machined older than the key).
var ReadyPattern = regexp.MustCompile(`\[kiln\] ready api=(?P<api>\S+) mode=(?P<mode>\S+) fingerprint=sha256:(?P<fingerprint>[0-9a-f]{64})(?: addrs=(?P<addrs>\S+))?(?: hostname=(?P<hostname>\S+))?(?: platform=(?P<platform>\S+))?(?: cpu=(?P<cpu>\S+))?(?: uptime=(?P<uptime>\S+))?`)

// panicPattern is the kernel's panic line.
var panicPattern = regexp.MustCompile(`Kernel panic - not syncing`)

// ErrQEMUExited is returned when QEMU ended while Create waited for the node.
var ErrQEMUExited = errors.New("QEMU exited")

// consoleWatch follows a serial log file that QEMU appends to, line by line.
type consoleWatch struct {
	path    string
	off     int64
	partial []byte
	lines   []string // every complete line seen, for error messages
}

// next returns the complete lines written since the last call.
func (w *consoleWatch) next() ([]string, error) {
	f, err := os.Open(w.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(w.off, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	w.off += int64(len(b))
	w.partial = append(w.partial, b...)
	var out []string
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		out = append(out, strings.TrimRight(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	w.lines = append(w.lines, out...)
	if len(w.lines) > 200 {
		w.lines = w.lines[len(w.lines)-200:]
	}
	return out, nil
}

func (w *consoleWatch) tail(n int) string {
	if len(w.lines) < n {
		n = len(w.lines)
	}
	return strings.Join(w.lines[len(w.lines)-n:], "\n")
}

// waitConsole polls the serial log at path until a line matches re and returns its
// submatches. It fails on a kernel panic, when running reports that QEMU has gone, and
// when ctx ends; the error carries the last console lines.
func waitConsole(ctx context.Context, w *consoleWatch, re *regexp.Regexp, running func() bool) ([]string, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		lines, err := w.next()
		if err != nil {
			return nil, fmt.Errorf("read the serial log: %w", err)
		}
		for _, l := range lines {
			if m := re.FindStringSubmatch(l); m != nil {
				return m, nil
			}
			if panicPattern.MatchString(l) {
				return nil, fmt.Errorf("kernel panic on the console (serial log %s):\n%s", w.path, w.tail(20))
			}
		}
		if !running() {
			// What QEMU wrote last is in the file now.
			if lines, _ := w.next(); len(lines) > 0 {
				for _, l := range lines {
					if m := re.FindStringSubmatch(l); m != nil {
						return m, nil
					}
				}
			}
			return nil, fmt.Errorf("%w before the node was ready (serial log %s):\n%s", ErrQEMUExited, w.path, w.tail(20))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q on the console: %w (serial log %s):\n%s", re, ctx.Err(), w.path, w.tail(20))
		case <-tick.C:
		}
	}
}

// submatch returns the named submatch of re in m, or "".
func submatch(re *regexp.Regexp, m []string, name string) string {
	if i := re.SubexpIndex(name); i >= 0 && i < len(m) {
		return m[i]
	}
	return ""
}

package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ErrKernelPanic is returned by Expect when the console showed a kernel panic; the VM
// has been killed by then.
var ErrKernelPanic = errors.New("kernel panic on the console")

// ErrExited is returned by Expect when QEMU exited before the pattern appeared.
var ErrExited = errors.New("QEMU exited")

// ErrTimeout is returned by Expect when the pattern did not appear in time.
var ErrTimeout = errors.New("timed out waiting for the console")

// panicRe matches the kernel's panic line ("Kernel panic - not syncing: ...").
var panicRe = regexp.MustCompile(`Kernel panic - not syncing`)

// console collects the serial output line by line. Expect consumes lines: each call sees
// only what came after the previous match (gokrazy's ConsoleExpect model).
type console struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever lines, panicked or closed change
	lines   []string
	next    int    // first line Expect has not consumed
	partial []byte // bytes after the last newline
	panic   string // the panic line, once seen
	closed  bool
	onPanic func()
}

func newConsole(onPanic func()) *console {
	return &console{changed: make(chan struct{}), onPanic: onPanic}
}

// feed reads the serial stream until EOF, copying it to log.
func (c *console) feed(r io.Reader, log io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			if log != nil {
				_, _ = log.Write(buf[:n])
			}
			c.add(buf[:n])
		}
		if err != nil {
			c.close()
			return
		}
	}
}

func (c *console) add(b []byte) {
	c.mu.Lock()
	c.partial = append(c.partial, b...)
	var panicked bool
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(c.partial[:i]), "\r")
		c.partial = c.partial[i+1:]
		c.lines = append(c.lines, line)
		if c.panic == "" && panicRe.MatchString(line) {
			c.panic = line
			panicked = true
		}
	}
	c.notifyLocked()
	c.mu.Unlock()
	if panicked && c.onPanic != nil {
		c.onPanic()
	}
}

func (c *console) close() {
	c.mu.Lock()
	if len(c.partial) > 0 {
		c.lines = append(c.lines, strings.TrimRight(string(c.partial), "\r"))
		c.partial = nil
	}
	c.closed = true
	c.notifyLocked()
	c.mu.Unlock()
}

func (c *console) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// expect waits for a line matching re among the lines not consumed yet and returns its
// submatches. A panic line before the match fails at once.
func (c *console) expect(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for c.next < len(c.lines) {
			line := c.lines[c.next]
			c.next++
			if m := re.FindStringSubmatch(line); m != nil {
				c.mu.Unlock()
				return m, nil
			}
			if panicRe.MatchString(line) {
				c.mu.Unlock()
				return nil, fmt.Errorf("waiting for %q: %w: %s", re, ErrKernelPanic, line)
			}
		}
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("waiting for %q: %w", re, ErrExited)
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return nil, fmt.Errorf("waiting %s for %q: %w", timeout, re, ErrTimeout)
		}
	}
}

// tail returns the last n lines seen, for error messages.
func (c *console) tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) < n {
		n = len(c.lines)
	}
	return append([]string(nil), c.lines[len(c.lines)-n:]...)
}

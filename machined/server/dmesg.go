package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kmsgPoll is how often a regular file standing in for /dev/kmsg is checked
// for new records when following (the device itself wakes the reader).
const kmsgPoll = 250 * time.Millisecond

// kmsgRecord is one record of the kernel log.
type kmsgRecord struct {
	Seq       uint64
	SinceBoot time.Duration
	Priority  uint32 // syslog level, 0 (emerg) to 7 (debug)
	Facility  uint32
	Message   string
}

// parseKmsg parses a /dev/kmsg record, "prio,seq,usec,flags[,...];message",
// without the continuation lines (" KEY=value") the kernel may add.
func parseKmsg(line string) (kmsgRecord, error) {
	head, msg, ok := strings.Cut(line, ";")
	if !ok {
		return kmsgRecord{}, fmt.Errorf("kernel log record %q: no ';'", line)
	}
	f := strings.Split(head, ",")
	if len(f) < 4 {
		return kmsgRecord{}, fmt.Errorf("kernel log record %q: want prio,seq,usec,flags", line)
	}
	prio, err1 := strconv.ParseUint(f[0], 10, 32)
	seq, err2 := strconv.ParseUint(f[1], 10, 64)
	usec, err3 := strconv.ParseUint(f[2], 10, 63)
	if err := errors.Join(err1, err2, err3); err != nil {
		return kmsgRecord{}, fmt.Errorf("kernel log record %q: %w", line, err)
	}
	return kmsgRecord{
		Seq:       seq,
		SinceBoot: time.Duration(usec) * time.Microsecond,
		Priority:  uint32(prio & 7),
		Facility:  uint32(prio >> 3),
		Message:   unescapeKmsg(msg),
	}, nil
}

// unescapeKmsg undoes the kernel's \xHH escaping of unprintable bytes.
func unescapeKmsg(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// kmsgReader reads records from /dev/kmsg, where each read returns one
// record, or from a regular file of records (tests, a saved log), where a
// read returns many.
type kmsgReader struct {
	f       *os.File
	pending []byte
	buf     []byte
}

func openKmsg(path string) (*kmsgReader, error) {
	// Non-blocking so that the history can be read to its end; following
	// then waits in the runtime's poller (see read).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		hint := ""
		if errors.Is(err, os.ErrPermission) {
			hint = " (reading the kernel log needs root or CAP_SYSLOG; run machined with --kmsg pointing to a readable file otherwise)"
		}
		return nil, fmt.Errorf("%w: kernel log: %v%s", ErrUnavailable, err, hint)
	}
	return &kmsgReader{f: f, buf: make([]byte, 16<<10)}, nil
}

// next returns the next complete record line. With wait false it returns
// ok == false at the end of what is there; with wait true it waits for more
// until ctx ends.
func (k *kmsgReader) next(ctx context.Context, wait bool) (line string, ok bool, err error) {
	for {
		if i := bytes.IndexByte(k.pending, '\n'); i >= 0 {
			l := string(k.pending[:i])
			k.pending = k.pending[i+1:]
			if l == "" || l[0] == ' ' {
				continue // continuation line of the previous record
			}
			return l, true, nil
		}
		n, err := k.read(wait)
		switch {
		case err == nil && n > 0:
			k.pending = append(k.pending, k.buf[:n]...)
			continue
		case errors.Is(err, syscall.EPIPE):
			// The kernel overwrote records before we read them; the next
			// read resumes at the oldest record left.
			continue
		case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, os.ErrDeadlineExceeded):
			return "", false, fmt.Errorf("read kernel log: %w", err)
		}
		// End of what is there: EAGAIN from the device, EOF (n == 0)
		// from a file, or the deadline set when ctx ended.
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		if !wait {
			return "", false, nil
		}
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-time.After(kmsgPoll):
		}
	}
}

// read does one read(2). With wait, a device that would block is waited
// for in the poller; a regular file never blocks and returns 0 at its end.
func (k *kmsgReader) read(wait bool) (int, error) {
	rc, err := k.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), k.buf)
		if n < 0 {
			n = 0
		}
		if wait && errors.Is(rerr, syscall.EAGAIN) {
			return false // wait for the device to have a record
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if rerr == nil && n == 0 {
		return 0, io.EOF
	}
	return n, rerr
}

// readKmsg sends the last tail records (all when tail <= 0) and then, with
// follow, every new record until ctx ends.
func readKmsg(ctx context.Context, path string, follow bool, tail int, send func(kmsgRecord) error) error {
	k, err := openKmsg(path)
	if err != nil {
		return err
	}
	defer k.f.Close()
	// Wake a reader waiting in the poller when the call ends. A regular
	// file does not support deadlines; it is polled and checks ctx itself.
	stop := context.AfterFunc(ctx, func() { _ = k.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var history []kmsgRecord
	for {
		line, ok, err := k.next(ctx, false)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		r, err := parseKmsg(line)
		if err != nil {
			continue // a record we do not understand is not worth failing the stream
		}
		history = append(history, r)
		if tail > 0 && len(history) > 2*tail {
			history = append(history[:0], history[len(history)-tail:]...)
		}
	}
	if tail > 0 && len(history) > tail {
		history = history[len(history)-tail:]
	}
	for _, r := range history {
		if err := send(r); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	for {
		line, ok, err := k.next(ctx, true)
		if err != nil {
			if ctx.Err() != nil {
				return nil // the client went away
			}
			return err
		}
		if !ok {
			continue
		}
		r, err := parseKmsg(line)
		if err != nil {
			continue
		}
		if err := send(r); err != nil {
			return err
		}
	}
}

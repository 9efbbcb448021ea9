// Package logstore keeps the output of one machined service: the last N lines
// in memory for tailing and streaming, and a size-capped copy on disk that is
// rotated to <file>.1 when it grows past its limit.
package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

const (
	// DefaultLines is the number of lines kept in memory when Open is given
	// lines <= 0.
	DefaultLines = 1000
	// DefaultMaxFileSize is the size at which the on-disk log is rotated.
	DefaultMaxFileSize = 4 << 20
	// MaxLineLength caps a line held in memory; a longer run of bytes without
	// a newline is split so that a misbehaving service cannot grow it forever.
	MaxLineLength = 64 << 10
	// subscriberBuffer is the number of lines a subscriber may lag behind
	// before lines are dropped for it.
	subscriberBuffer = 256
)

// Log is the log of one service. It is an io.Writer that is safe for
// concurrent use; writes are split into lines, each kept with its trailing
// "\n".
type Log struct {
	mu      sync.Mutex
	path    string
	maxSize int64
	file    *os.File
	size    int64
	fileErr error  // first error writing the file; the ring keeps working
	pending []byte // complete lines of the current Write, written to the file in one go

	ring    [][]byte
	start   int // index of the oldest line in ring
	count   int // number of lines in ring
	partial []byte

	subs    map[int]*subscriber
	nextSub int
	dropped uint64
	closed  bool
}

type subscriber struct {
	ch chan []byte
}

// Open opens (creating if needed) the log file at path and keeps the last
// lines lines in memory (DefaultLines when lines <= 0). Lines already in an
// existing file are loaded so that a tail survives a restart of machined.
// An empty path keeps the log in memory only.
func Open(path string, lines int) (*Log, error) {
	return OpenSize(path, lines, DefaultMaxFileSize)
}

// OpenSize is Open with the size at which the file is rotated to path+".1".
func OpenSize(path string, lines int, maxSize int64) (*Log, error) {
	if lines <= 0 {
		lines = DefaultLines
	}
	if maxSize <= 0 {
		maxSize = DefaultMaxFileSize
	}
	l := &Log{
		path:    path,
		maxSize: maxSize,
		ring:    make([][]byte, lines),
		subs:    map[int]*subscriber{},
	}
	if path == "" {
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	if old, err := os.ReadFile(path); err == nil {
		l.seed(old)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	l.file = f
	l.size = st.Size()
	return l, nil
}

// seed loads complete lines from an earlier run into the ring.
func (l *Log) seed(old []byte) {
	for len(old) > 0 {
		i := bytes.IndexByte(old, '\n')
		if i < 0 {
			// A torn last line from a previous run: finish it so that the
			// next write starts on a fresh line in memory.
			l.push(append(bytes.Clone(old), '\n'))
			return
		}
		l.push(bytes.Clone(old[:i+1]))
		old = old[i+1:]
	}
}

// Write splits p into lines, appends them to the ring and to the file and
// passes complete lines to subscribers. A failing file does not fail the
// write (the writer is usually a service's stdout, which must not break);
// see Err.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, os.ErrClosed
	}
	n := len(p)
	defer l.flushFile()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := MaxLineLength - 1 - len(l.partial)
			if len(p) <= room {
				l.partial = append(l.partial, p...)
				return n, nil
			}
			l.partial = append(l.partial, p[:room]...)
			p = p[room:]
			l.emit()
			continue
		}
		if room := MaxLineLength - 1 - len(l.partial); i > room {
			l.partial = append(l.partial, p[:room]...)
			p = p[room:]
			l.emit()
			continue
		}
		l.partial = append(l.partial, p[:i]...)
		p = p[i+1:]
		l.emit()
	}
	return n, nil
}

// emit completes the partial line. Called with l.mu held.
func (l *Log) emit() {
	line := make([]byte, len(l.partial)+1)
	copy(line, l.partial)
	line[len(line)-1] = '\n'
	l.partial = l.partial[:0]
	l.push(line)
	if l.file != nil {
		l.pending = append(l.pending, line...)
	}
	for _, s := range l.subs {
		select {
		case s.ch <- line:
		default:
			l.dropped++
		}
	}
}

func (l *Log) push(line []byte) {
	if l.count < len(l.ring) {
		l.ring[(l.start+l.count)%len(l.ring)] = line
		l.count++
		return
	}
	l.ring[l.start] = line
	l.start = (l.start + 1) % len(l.ring)
}

// flushFile writes the pending lines, rotating first when they would take
// the file past its limit. Called with l.mu held.
func (l *Log) flushFile() {
	if l.file == nil || len(l.pending) == 0 {
		l.pending = l.pending[:0]
		return
	}
	defer func() {
		l.pending = l.pending[:0]
		if cap(l.pending) > 2*MaxLineLength {
			l.pending = nil // do not keep a huge buffer after one big write
		}
	}()
	if l.size > 0 && l.size+int64(len(l.pending)) > l.maxSize {
		if err := l.rotate(); err != nil {
			l.setErr(err)
			if l.file == nil {
				return
			}
		}
	}
	n, err := l.file.Write(l.pending)
	l.size += int64(n)
	if err != nil {
		l.setErr(fmt.Errorf("write log %s: %w", l.path, err))
	}
}

func (l *Log) rotate() error {
	if err := l.file.Close(); err != nil {
		l.setErr(fmt.Errorf("close log %s: %w", l.path, err))
	}
	l.file = nil
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC | os.O_APPEND
	var rerr error
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		// Keep logging to the oversized file rather than not at all.
		rerr = fmt.Errorf("rotate log %s: %w", l.path, err)
		flags &^= os.O_TRUNC
	}
	f, err := os.OpenFile(l.path, flags, 0o640)
	if err != nil {
		return fmt.Errorf("rotate log %s: %w", l.path, err)
	}
	l.file = f
	l.size = 0
	return rerr
}

func (l *Log) setErr(err error) {
	if l.fileErr == nil {
		l.fileErr = err
	}
}

// Err returns the first error met writing the file, if any.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fileErr
}

// Dropped returns how many lines were not delivered to subscribers that
// were too slow to take them.
func (l *Log) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// Tail returns copies of the last n lines kept in memory (all of them when
// n < 0), oldest first, each ending in "\n". A line not yet terminated by a
// newline is not included.
func (l *Log) Tail(n int) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tailLocked(n)
}

// tailLocked is Tail with l.mu held.
func (l *Log) tailLocked(n int) [][]byte {
	if n < 0 || n > l.count {
		n = l.count
	}
	out := make([][]byte, 0, n)
	for i := l.count - n; i < l.count; i++ {
		out = append(out, bytes.Clone(l.ring[(l.start+i)%len(l.ring)]))
	}
	return out
}

// Subscribe returns a channel that receives every line completed after the
// call. The channel is buffered; when a subscriber falls behind, lines are
// dropped for it (and counted in Dropped) rather than blocking writers. The
// channel is closed by cancel or by Close. Receivers must not modify the
// lines.
func (l *Log) Subscribe() (lines <-chan []byte, cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.subscribeLocked()
}

// TailAndSubscribe is Tail(n) and Subscribe in one step under one lock: no
// line is both in the tail and on the channel, and none falls between them.
func (l *Log) TailAndSubscribe(n int) (tail [][]byte, lines <-chan []byte, cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tail = l.tailLocked(n)
	lines, cancel = l.subscribeLocked()
	return tail, lines, cancel
}

// subscribeLocked is Subscribe with l.mu held.
func (l *Log) subscribeLocked() (<-chan []byte, func()) {
	ch := make(chan []byte, subscriberBuffer)
	if l.closed {
		close(ch)
		return ch, func() {}
	}
	id := l.nextSub
	l.nextSub++
	l.subs[id] = &subscriber{ch: ch}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if s, ok := l.subs[id]; ok {
				delete(l.subs, id)
				close(s.ch)
			}
		})
	}
}

// Close completes a pending partial line, closes the file and all
// subscriber channels. Tail keeps working after Close; Write fails.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if len(l.partial) > 0 {
		l.emit()
		l.flushFile()
	}
	l.closed = true
	for id, s := range l.subs {
		delete(l.subs, id)
		close(s.ch)
	}
	var err error
	if l.file != nil {
		if cerr := l.file.Close(); cerr != nil {
			err = fmt.Errorf("close log %s: %w", l.path, cerr)
		}
		l.file = nil
	}
	return errors.Join(err, l.fileErr)
}

var _ io.WriteCloser = (*Log)(nil)

package boot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Banner is the first thing init prints on the console.
func Banner(version, release, arch string) string {
	return fmt.Sprintf("\nKiln %s (init, kernel %s, %s)\n", version, release, arch)
}

// KmsgWriter writes each Write as one kernel log record: "<level>kiln-init: msg". The
// kernel prints it on the console when level is below the console log level (errors
// and warnings also under `quiet`), and Dmesg shows all of it.
type KmsgWriter struct {
	mu  sync.Mutex
	W   io.Writer // /dev/kmsg
	Tag string
}

// NewKmsgHandler returns a slog handler writing to w (normally /dev/kmsg) as kernel
// log records with slog levels mapped to kernel levels.
func NewKmsgHandler(w io.Writer, tag string, level slog.Leveler) slog.Handler {
	return &kmsgHandler{w: &KmsgWriter{W: w, Tag: tag}, level: level}
}

type kmsgHandler struct {
	w     *KmsgWriter
	level slog.Leveler
	attrs []slog.Attr
	group string
}

func (h *kmsgHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *kmsgHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	th := slog.NewTextHandler(&b, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	var hh slog.Handler = th
	if len(h.attrs) > 0 {
		hh = hh.WithAttrs(h.attrs)
	}
	if h.group != "" {
		hh = hh.WithGroup(h.group)
	}
	if err := hh.Handle(context.Background(), r); err != nil {
		return err
	}
	msg := r.Message
	if rest := strings.TrimSuffix(b.String(), "\n"); rest != "" {
		msg += " " + rest
	}
	return h.w.writeRecord(kernelLevel(r.Level), msg)
}

func (h *kmsgHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

func (h *kmsgHandler) WithGroup(g string) slog.Handler {
	n := *h
	n.group = g
	return &n
}

// kernelLevel maps slog levels to syslog priorities.
func kernelLevel(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

func (k *KmsgWriter) writeRecord(level int, msg string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	// The kernel truncates records at about 1 KiB; keep whole words of long messages.
	const max = 900
	if len(msg) > max {
		msg = msg[:max] + "…"
	}
	_, err := fmt.Fprintf(k.W, "<%d>%s: %s\n", level, k.Tag, msg)
	return err
}

// OpenConsole opens /dev/console for writing, falling back to stderr.
func OpenConsole() io.Writer {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr
	}
	return f
}

// DrainConsole waits until what was written to the console (a terminal) has gone out
// of the kernel's buffers, as tcdrain(3) does, for at most limit. A serial driver sends
// a line after write(2) has returned, from its interrupts; reboot(2) right after the
// write can cut the line off, and the last line before a power-off is the one a
// reader looks for. The limit is for a port held back by flow control. Writers that
// are not a terminal are left alone.
func DrainConsole(w io.Writer, limit time.Duration) {
	f, ok := w.(*os.File)
	if !ok {
		return
	}
	drain, fd := tcdrain, int(f.Fd())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = drain(fd)
	}()
	select {
	case <-done:
	case <-time.After(limit):
	}
}

// tcdrain is tcdrain(3): TCSBRK with a non-zero argument. It fails (ENOTTY) on a file
// that is not a terminal. A variable for tests.
var tcdrain = func(fd int) error { return unix.IoctlSetInt(fd, unix.TCSBRK, 1) }

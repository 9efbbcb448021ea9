package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--root", t.TempDir(), "--log-level", "loud"},
		{"--root", t.TempDir(), "extra"},
		{"--no-such-flag"},
		{"--platform", "vm", "--root", t.TempDir()},
		// A node keeps its state on its partitions.
		{"--platform", "node", "--root", t.TempDir()},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}

// signalWriter collects output and signals its first write.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	wrote chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.wrote) })
	return w.buf.Write(p)
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestRunStartsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &signalWriter{wrote: make(chan struct{})}
	var stderr signalWriter
	stderr.wrote = make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--root", t.TempDir(), "--listen", "127.0.0.1:0", "--kmsg", "/nonexistent"}, stdout, &stderr)
	}()
	select {
	case <-stdout.wrote:
	case err := <-done:
		t.Fatalf("run ended before it was ready: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("machined printed nothing")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	if !strings.Contains(stdout.String(), "fingerprint") {
		t.Errorf("console output %q does not show the fingerprint", stdout.String())
	}
	if !strings.Contains(stderr.String(), "machine API ready") {
		t.Errorf("log %q has no readiness line", stderr.String())
	}
}

package logstore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func lines(bs [][]byte) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, string(b))
	}
	return out
}

func openT(t *testing.T, path string, n int) *Log {
	t.Helper()
	l, err := Open(path, n)
	if err != nil {
		t.Fatalf("Open(%q, %d): %v", path, n, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestWriteSplitsLines(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		tail   int
		want   []string
	}{
		{"one line", []string{"a\n"}, -1, []string{"a\n"}},
		{"partial not shown", []string{"a\nb"}, -1, []string{"a\n"}},
		{"joined across writes", []string{"a", "b\nc", "d\n"}, -1, []string{"ab\n", "cd\n"}},
		{"several in one write", []string{"1\n2\n3\n"}, 2, []string{"2\n", "3\n"}},
		{"ring keeps last 3", []string{"1\n2\n3\n4\n5\n"}, -1, []string{"3\n", "4\n", "5\n"}},
		{"tail more than kept", []string{"1\n"}, 10, []string{"1\n"}},
		{"tail zero", []string{"1\n"}, 0, []string{}},
		{"empty lines", []string{"\n\n"}, -1, []string{"\n", "\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := openT(t, "", 3)
			for _, w := range tt.writes {
				if n, err := l.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if diff := cmp.Diff(tt.want, lines(l.Tail(tt.tail))); diff != "" {
				t.Errorf("Tail(%d) mismatch (-want +got):\n%s", tt.tail, diff)
			}
		})
	}
}

func TestLongLineSplit(t *testing.T) {
	l := openT(t, "", 10)
	long := strings.Repeat("x", MaxLineLength*2+5) + "\n"
	l.Write([]byte(long))
	got := l.Tail(-1)
	if len(got) != 3 {
		t.Fatalf("Tail(-1) has %d lines, want 3", len(got))
	}
	var joined []byte
	for _, g := range got {
		if len(g) > MaxLineLength {
			t.Errorf("line of %d bytes, want <= %d", len(g), MaxLineLength)
		}
		joined = append(joined, bytes.TrimSuffix(g, []byte("\n"))...)
	}
	if string(joined)+"\n" != long {
		t.Errorf("split lines do not join back to the input")
	}
}

func TestFileAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "svc.log")
	l, err := Open(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(l, "one\ntwo\nthr")
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := l.Write([]byte("x")); err == nil {
		t.Errorf("Write after Close succeeded")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "one\ntwo\nthr\n"; got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	l2 := openT(t, path, 2)
	fmt.Fprintf(l2, "four\n")
	if diff := cmp.Diff([]string{"thr\n", "four\n"}, lines(l2.Tail(-1))); diff != "" {
		t.Errorf("Tail after reopen (-want +got):\n%s", diff)
	}
}

func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.log")
	l, err := OpenSize(path, 100, 21)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i := range 5 {
		fmt.Fprintf(l, "line %d\n", i) // 7 bytes each
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatalf("rotated file: %v", err)
	}
	if got, want := string(old), "line 0\nline 1\nline 2\n"; got != want {
		t.Errorf("%s.1 = %q, want %q", path, got, want)
	}
	if got, want := string(cur), "line 3\nline 4\n"; got != want {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
	if err := l.Err(); err != nil {
		t.Errorf("Err() = %v", err)
	}
}

func TestSubscribe(t *testing.T) {
	l := openT(t, "", 10)
	fmt.Fprintf(l, "before\n")
	ch, cancel := l.Subscribe()
	fmt.Fprintf(l, "a\nb")
	fmt.Fprintf(l, "\n")
	var got []string
	for range 2 {
		select {
		case line := <-ch:
			got = append(got, string(line))
		case <-time.After(time.Minute):
			t.Fatal("no line received")
		}
	}
	if diff := cmp.Diff([]string{"a\n", "b\n"}, got); diff != "" {
		t.Errorf("subscribed lines (-want +got):\n%s", diff)
	}
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Errorf("channel open after cancel")
	}
	fmt.Fprintf(l, "after cancel\n") // must not panic on a closed channel
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	l := openT(t, "", 10)
	_, cancel := l.Subscribe() // never read
	defer cancel()
	done := make(chan struct{})
	go func() {
		for i := range subscriberBuffer * 4 {
			fmt.Fprintf(l, "%d\n", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("writer blocked by a slow subscriber")
	}
	if got, want := l.Dropped(), uint64(subscriberBuffer*3); got != want {
		t.Errorf("Dropped() = %d, want %d", got, want)
	}
}

func TestCloseClosesSubscribers(t *testing.T) {
	l, err := Open("", 0)
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel := l.Subscribe()
	l.Close()
	if _, ok := <-ch; ok {
		t.Errorf("channel open after Close")
	}
	cancel()
	ch2, _ := l.Subscribe()
	if _, ok := <-ch2; ok {
		t.Errorf("Subscribe after Close returned an open channel")
	}
}

func TestConcurrentWriters(t *testing.T) {
	l := openT(t, filepath.Join(t.TempDir(), "c.log"), 10000)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(l, "w%d %d\n", w, i)
			}
		})
	}
	ch, cancel := l.Subscribe()
	defer cancel()
	go func() {
		for range ch {
			_ = l.Tail(5)
		}
	}()
	wg.Wait()
	if got := len(l.Tail(-1)); got != 2000 {
		t.Errorf("len(Tail(-1)) = %d, want 2000", got)
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/api/roles"
)

func readerClient(t *testing.T, e *testEnv) machine.MachineServiceClient {
	return machine.NewMachineServiceClient(dial(t, e.addr, withCert(roleCert(string(roles.Reader)))(t, e)))
}

func TestLogsTailThenFollow(t *testing.T) {
	e := startServer(t, false)
	c := readerClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	s, err := c.Logs(ctx, &machine.LogsRequest{Id: "web", TailLines: 1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	want := "line 2\nline 3\nline 4\n"
	// The tail is sent before the stream waits for new lines; write them
	// once the tail has arrived so that the test does not depend on timing.
	chunk, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got.Write(chunk.GetData())
	fmt.Fprintf(e.fake.log, "line 3\nline 4\n")
	for got.Len() < len(want) {
		chunk, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv after %q: %v", got.String(), err)
		}
		got.Write(chunk.GetData())
	}
	if diff := cmp.Diff(want, got.String()); diff != "" {
		t.Errorf("Logs (-want +got):\n%s", diff)
	}

	unknown, err := c.Logs(ctx, &machine.LogsRequest{Id: "nope"})
	if err == nil {
		_, err = unknown.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("Logs of an unknown service: %v, want NotFound", err)
	}
}

func TestEventsTailThenFollow(t *testing.T) {
	e := startServer(t, false)
	c := readerClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	s, err := c.Events(ctx, &machine.EventsRequest{TailEvents: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	e.fake.bus.Publish("service.state", "web is running", map[string]string{"service": "web"})
	second, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{first.GetType(), second.GetType()}
	if diff := cmp.Diff([]string{"config.applied", "service.state"}, got); diff != "" {
		t.Errorf("event types (-want +got):\n%s", diff)
	}
	if second.GetId() != first.GetId()+1 || second.GetAttributes()["service"] != "web" {
		t.Errorf("second event = %v", second)
	}
}

func TestParseKmsg(t *testing.T) {
	tests := []struct {
		line    string
		want    kmsgRecord
		wantErr bool
	}{
		{line: "6,1,1000,-;Linux version 6.12", want: kmsgRecord{Seq: 1, SinceBoot: time.Millisecond, Priority: 6, Message: "Linux version 6.12"}},
		// Facility 3 (daemon), level 4 (warning); extra header fields ignored.
		{line: "28,77,2500000,c,more;a\\x09tab; and semicolon", want: kmsgRecord{Seq: 77, SinceBoot: 2500 * time.Millisecond, Priority: 4, Facility: 3, Message: "a\ttab; and semicolon"}},
		{line: "6,1,1000,-;", want: kmsgRecord{Seq: 1, SinceBoot: time.Millisecond, Priority: 6}},
		{line: "no semicolon", wantErr: true},
		{line: "6,1;short header", wantErr: true},
		{line: "x,1,2,-;bad prio", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseKmsg(tt.line)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseKmsg(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("parseKmsg(%q) (-want +got):\n%s", tt.line, diff)
		}
	}
}

func dmesgMessages(t *testing.T, c machine.MachineServiceClient, req *machine.DmesgRequest) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	s, err := c.Dmesg(ctx, req)
	if err != nil {
		return nil, err
	}
	var msgs []string
	for {
		e, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return msgs, nil
			}
			return msgs, err
		}
		msgs = append(msgs, e.GetMessage())
	}
}

func TestDmesgFromFile(t *testing.T) {
	e := startServer(t, false)
	c := readerClient(t, e)
	for _, tt := range []struct {
		tail int32
		want []string
	}{
		{0, []string{"Linux version 6.12", "a warning"}},
		{-1, []string{"Linux version 6.12", "a warning"}},
		{1, []string{"a warning"}},
	} {
		got, err := dmesgMessages(t, c, &machine.DmesgRequest{Tail: tt.tail})
		if err != nil {
			t.Fatalf("Dmesg(tail %d): %v", tt.tail, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Dmesg(tail %d) (-want +got):\n%s", tt.tail, diff)
		}
	}
}

func TestDmesgFollowFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(path, []byte(kmsgRecords), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- readKmsg(ctx, path, true, 1, func(r kmsgRecord) error {
			got <- r.Message
			return nil
		})
	}()
	if m := <-got; m != "a warning" {
		t.Fatalf("first record = %q, want the tail %q", m, "a warning")
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "6,3,3000000,-;late record\n")
	f.Close()
	select {
	case m := <-got:
		if m != "late record" {
			t.Errorf("followed record = %q, want %q", m, "late record")
		}
	case <-ctx.Done():
		t.Fatal("the appended record never arrived")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("readKmsg after cancel = %v, want nil", err)
	}
}

// TestDmesgDevice reads the real kernel log when this process may.
func TestDmesgDevice(t *testing.T) {
	f, err := os.Open(DefaultKmsgPath)
	if err != nil {
		t.Skipf("needs a readable %s (root or CAP_SYSLOG): %v", DefaultKmsgPath, err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	n := 0
	if err := readKmsg(ctx, DefaultKmsgPath, false, 5, func(kmsgRecord) error { n++; return nil }); err != nil {
		t.Fatalf("readKmsg(%s): %v", DefaultKmsgPath, err)
	}
	if n == 0 || n > 5 {
		t.Errorf("readKmsg(%s, tail 5) sent %d records, want 1..5", DefaultKmsgPath, n)
	}
	// Following must end when the caller goes away, even with no new record.
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- readKmsg(fctx, DefaultKmsgPath, true, 1, func(kmsgRecord) error { fcancel(); return nil })
	}()
	if err := <-done; err != nil {
		t.Errorf("readKmsg follow after cancel = %v, want nil", err)
	}
}

func TestDmesgUnavailable(t *testing.T) {
	e := startServerWith(t, false, filepath.Join(t.TempDir(), "missing"))
	c := readerClient(t, e)
	_, err := dmesgMessages(t, c, &machine.DmesgRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "kernel log") {
		t.Errorf("Dmesg without a kernel log: %v, want Unavailable about the kernel log", err)
	}
}

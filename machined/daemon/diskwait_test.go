package daemon

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/platform"
)

func TestWaitSystemDisk(t *testing.T) {
	errNone := errors.New("no disk carries the system labels")
	disk := &platform.Disk{Dev: "/dev/vda"}
	for _, tc := range []struct {
		name string
		// appearsAt is the call of find that first returns the disk (0: never);
		// doneAt the call of driversDone that first reports true (0: never).
		appearsAt, doneAt int
		limit             time.Duration
		wantDisk          bool
		wantCalls         int
	}{
		{name: "present at once", appearsAt: 1, doneAt: 0, limit: time.Minute, wantDisk: true, wantCalls: 1},
		{name: "appears while drivers load", appearsAt: 4, doneAt: 0, limit: time.Minute, wantDisk: true, wantCalls: 4},
		{name: "appears on the last look after the drivers", appearsAt: 3, doneAt: 3, limit: time.Minute, wantDisk: true, wantCalls: 3},
		{name: "none once drivers are loaded", appearsAt: 0, doneAt: 3, limit: time.Minute, wantDisk: false, wantCalls: 3},
		{name: "loader never finishes", appearsAt: 0, doneAt: 0, limit: 0, wantDisk: false, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			finds, dones := 0, 0
			find := func() (*platform.Disk, error) {
				finds++
				if tc.appearsAt > 0 && finds >= tc.appearsAt {
					return disk, nil
				}
				return nil, errNone
			}
			done := func() bool {
				dones++
				return tc.doneAt > 0 && dones >= tc.doneAt
			}
			got, err := waitSystemDisk(find, done, time.Millisecond, tc.limit, slog.New(slog.DiscardHandler))
			if tc.wantDisk != (got != nil) || tc.wantDisk != (err == nil) {
				t.Fatalf("got disk %v, err %v; want a disk: %v", got, err, tc.wantDisk)
			}
			if !tc.wantDisk && !errors.Is(err, errNone) {
				t.Errorf("err = %v, want it to wrap the last miss", err)
			}
			if finds != tc.wantCalls {
				t.Errorf("find called %d times, want %d", finds, tc.wantCalls)
			}
		})
	}
}

package timesync

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// SystemClock is the kernel's CLOCK_REALTIME, changed with adjtimex.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

// Step jumps the clock (ADJ_SETOFFSET).
func (SystemClock) Step(offset time.Duration) error {
	tx := unix.Timex{Modes: unix.ADJ_SETOFFSET | unix.ADJ_NANO}
	sec, nsec := int64(offset/time.Second), int64(offset%time.Second)
	if nsec < 0 {
		sec--
		nsec += int64(time.Second)
	}
	tx.Time = unix.Timeval{Sec: sec, Usec: nsec} // with ADJ_NANO, Usec holds nanoseconds
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("adjtimex step %s: %w", offset, err)
	}
	return nil
}

// adjOffsetSingleshot is the old adjtime(2) mode: the kernel slews by the
// offset at 500 ppm.
const adjOffsetSingleshot = 0x8001

// Slew makes the kernel catch up offset gradually (at most 0.5 ms per
// second).
func (SystemClock) Slew(offset time.Duration) error {
	tx := unix.Timex{Modes: adjOffsetSingleshot, Offset: int64(offset / time.Microsecond)}
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("adjtimex slew %s: %w", offset, err)
	}
	return nil
}

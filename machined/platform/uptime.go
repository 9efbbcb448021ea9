package platform

import (
	"time"

	"golang.org/x/sys/unix"
)

// Uptime is the time since the kernel started (CLOCK_BOOTTIME, which counts suspend);
// zero when the kernel does not say. On a node it is how long the boot has taken,
// firmware and boot loader not counted.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

//go:build linux

// Command testinit is a stand-in PID 1 for the image builder's QEMU tests: it proves that
// firmware, bootloader, UKI, kernel and initramfs fit together by printing a marker line
// on /dev/console, then powers the machine off. The real init lives in init/. The line
// ends with uptime=, the time since the kernel started (as machined's readiness line
// does), which make bench-boot compares.
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Marker is the line prefix the QEMU tests wait for.
const Marker = "KILN-IMAGE-BOOT-OK"

func main() {
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	fmt.Fprintln(con, describe())
	// The serial driver sends the line from its interrupts after write(2) returns: wait
	// until it has gone out (tcdrain), or the power-off can cut it off.
	_ = unix.IoctlSetInt(int(con.Fd()), unix.TCSBRK, 1)
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {} // PID 1 must not exit: the kernel would panic.
}

func describe() string {
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	var rel strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel.WriteByte(byte(c))
	}
	root := "missing"
	if st, err := os.Stat("/rootfs.sqsh"); err == nil && st.Size() > 0 {
		root = "present"
	}
	// The manifest's early modules (images/kmod.Manifest.Text: "module NAME STAGE PATH ...").
	early := -1
	if b, err := os.ReadFile("/lib/modules/" + rel.String() + "/kiln-modules.txt"); err == nil {
		early = 0
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "module" && f[2] == "early" {
				early++
			}
		}
	}
	return fmt.Sprintf("%s release=%s root=%s early-modules=%d uptime=%s", Marker, rel.String(), root, early, Uptime())
}

// Uptime is the time since the kernel started (CLOCK_BOOTTIME), to the millisecond;
// zero when the kernel does not say. (machined/platform.Uptime is the same; the floor's
// PID 1 stays on the standard library and x/sys.)
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano()).Round(time.Millisecond)
}

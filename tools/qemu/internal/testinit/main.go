// Command testinit is the trivial PID 1 the QEMU harness tests and the boot-floor
// benchmark boot: it prints Marker on the console and powers the machine off. The kernel
// hands it unknown name=value parameters as environment: testinit_mode=hang keeps it
// running (for stop/kill tests), testinit_mode=exit makes it exit so the kernel panics.
package main

import (
	"os"
	"syscall"
	"time"
)

// Marker is the line the tests wait for; keep in sync with qemutest.InitMarker.
const Marker = "kiln-testinit: hello from PID 1"

func main() {
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	con.WriteString(Marker + "\n")
	switch os.Getenv("testinit_mode") {
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	case "exit":
		os.Exit(3)
	}
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		con.WriteString("kiln-testinit: power off: " + err.Error() + "\n")
	}
	for {
		time.Sleep(time.Hour)
	}
}

package daemon

import (
	"context"
	"fmt"
	"os"
	"syscall"
)

// Reboot stops the node and starts it again: in process mode machined
// re-executes itself (see Reexec), which takes a staged configuration. It
// returns at once so that the caller gets its answer first.
func (d *Daemon) Reboot(context.Context) error {
	d.log.Info("reboot requested over the API")
	d.bus.Publish("machine.reboot", "reboot requested", nil)
	d.requestPower(PowerReboot)
	return nil
}

// Shutdown stops the node: in process mode machined stops its services and
// exits. It returns at once so that the caller gets its answer first.
func (d *Daemon) Shutdown(context.Context) error {
	d.log.Info("shutdown requested over the API")
	d.bus.Publish("machine.shutdown", "shutdown requested", nil)
	d.requestPower(PowerOff)
	return nil
}

// Reexec replaces the process with a fresh machined with the same arguments
// and environment: the process-mode reboot. It returns only on failure.
func Reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("reboot: find machined: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("reboot: exec %s: %w", exe, err)
	}
	return nil
}

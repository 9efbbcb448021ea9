package supervise

import (
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
)

// KillAll ends every process but init: SIGTERM, up to grace for them to exit (reaping),
// then SIGKILL. It returns how many processes had to be killed.
func KillAll(grace time.Duration, log *slog.Logger) int {
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		reapAll()
		// kill(-1, 0) fails with ESRCH once no process but init is left.
		if err := unix.Kill(-1, 0); err == unix.ESRCH {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	n := 0
	if err := unix.Kill(-1, 0); err != unix.ESRCH {
		log.Warn("shutdown: processes left after SIGTERM; killing", "grace", grace)
		_ = unix.Kill(-1, unix.SIGKILL)
		n = 1
	}
	for range 40 {
		reapAll()
		if err := unix.Kill(-1, 0); err == unix.ESRCH {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	return n
}

func reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}

// RebootCmd is the reboot(2) command for an action.
func RebootCmd(a Action) int {
	switch a {
	case PowerOff:
		return unix.LINUX_REBOOT_CMD_POWER_OFF
	case Halt:
		return unix.LINUX_REBOOT_CMD_HALT
	}
	return unix.LINUX_REBOOT_CMD_RESTART
}

// Finish syncs, runs last (the caller's last steps: its reverse-order unmount, then
// the console's drain), syncs again and calls reboot(2). It returns only if reboot(2)
// fails.
func Finish(a Action, last func(), log *slog.Logger) error {
	unix.Sync()
	if last != nil {
		last()
	}
	unix.Sync()
	log.Info("shutdown: " + a.String())
	return unix.Reboot(RebootCmd(a))
}

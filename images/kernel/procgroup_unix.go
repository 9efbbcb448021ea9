//go:build unix

package kernel

import (
	"os/exec"
	"syscall"
	"time"
)

// inGroup makes cmd the leader of a process group that a cancelled context stops as a
// whole: the build script with its make and compilers. The script's exit trap then
// removes its work directory.
func inGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
}

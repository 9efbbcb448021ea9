//go:build unix

package kernel

import (
	"fmt"
	"os"
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

// lockBuild takes an exclusive lock on the directory dir, waiting while another
// process holds it; the kernel drops it when the process ends, however it ends.
func lockBuild(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

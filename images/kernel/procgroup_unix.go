//go:build unix

package kernel

import (
	"context"
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
// process holds it, until ctx ends; the kernel drops the lock when the process ends,
// however it ends. The wait polls a non-blocking flock, so that a cancelled build
// queued behind another one returns at once instead of when that one ends.
func lockBuild(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch err {
		case nil:
			return func() { f.Close() }, nil
		case syscall.EINTR:
			continue
		case syscall.EWOULDBLOCK:
			select {
			case <-ctx.Done():
				f.Close()
				return nil, fmt.Errorf("wait for the kernel build running in %s: %w", dir, context.Cause(ctx))
			case <-time.After(lockPoll):
			}
			continue
		}
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
}

// lockPoll is how often lockBuild tries the lock again while another build holds it.
const lockPoll = 250 * time.Millisecond

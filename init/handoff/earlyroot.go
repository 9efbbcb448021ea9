package handoff

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// EnterRoot is the first step of a machined that init started from the initramfs,
// before the root filesystem was mounted (EarlyEnv): it waits until init has
// switched root and then moves the process into that root. Without EarlyEnv it does
// nothing. It must run before machined opens any file.
func EnterRoot() error {
	if os.Getenv(EarlyEnv) != "1" {
		return nil
	}
	os.Unsetenv(EarlyEnv)
	proc := os.NewFile(EarlyProcFD, "/proc/1")
	ready := os.NewFile(EarlyReadyFD, "root-ready")
	defer proc.Close()
	defer ready.Close()
	return enterRoot(proc, ready)
}

// enterRoot waits for one byte on ready, then makes the directory proc/root the
// process's root and working directory (for all its threads: Go's share them).
func enterRoot(proc, ready *os.File) error {
	var b [1]byte
	if _, err := io.ReadFull(ready, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("init closed the handoff without switching root")
		}
		return fmt.Errorf("wait for the root filesystem: %w", err)
	}
	fd, err := unix.Openat(int(proc.Fd()), "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("enter init's root: open %s/root: %w", proc.Name(), err)
	}
	defer unix.Close(fd)
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("enter init's root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("enter init's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("enter init's root: %w", err)
	}
	return nil
}

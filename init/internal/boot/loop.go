package boot

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// AttachLoop binds file to a free loop device and returns the device path and an open
// handle on it. The device is read-only when readOnly, and auto-clears: it detaches
// by itself once the handle is closed and nothing mounts it any more, so callers close
// the handle after mounting (or on failure) and never leak a device.
func AttachLoop(file string, readOnly bool) (string, *os.File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	backing, err := os.OpenFile(file, flag, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	// Another process may take the free device between GET_FREE and CONFIGURE: retry.
	var lastErr error
	for range 10 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("loop: LOOP_CTL_GET_FREE: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
				return "", nil, fmt.Errorf("loop: mknod %s: %w", dev, err)
			}
		}
		lf, err := os.OpenFile(dev, flag, 0)
		if err != nil {
			return "", nil, fmt.Errorf("loop: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		if readOnly {
			cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
		}
		copy(cfg.Info.File_name[:], file)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			return dev, lf, nil
		}
		lf.Close()
		if !errors.Is(err, unix.EBUSY) {
			return "", nil, fmt.Errorf("loop: LOOP_CONFIGURE %s with %s: %w", dev, file, err)
		}
		lastErr = err
	}
	return "", nil, fmt.Errorf("loop: no free device for %s: %w", file, lastErr)
}

// MountLoop mounts file (a filesystem image) on target through a loop device, read-only
// when flags has MS_RDONLY. It returns the loop device used.
func MountLoop(file, target, fstype string, flags uintptr, data string) (string, error) {
	dev, lf, err := AttachLoop(file, flags&unix.MS_RDONLY != 0)
	if err != nil {
		return "", err
	}
	defer lf.Close()
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", fmt.Errorf("mount %s: %w", target, err)
	}
	if err := unix.Mount(dev, target, fstype, flags, data); err != nil {
		return "", fmt.Errorf("mount %s (%s via %s) on %s: %w", file, fstype, dev, target, err)
	}
	return dev, nil
}

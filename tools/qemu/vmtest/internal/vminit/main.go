// Command vminit is the PID 1 of a vmtest guest: it mounts the kernel filesystems a Go
// test expects (proc, sysfs, devtmpfs, tmpfs on /tmp and /run, cgroup2), loads the
// kernel modules listed in the initramfs in order, brings lo up, runs the test binary
// with the arguments the host chose, its output on the serial console, then prints one
// machine-readable result line and powers the machine off. The line formats are shared
// with the host side in package vmtest (see the constants there).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Paths inside the initramfs; keep in sync with package vmtest.
const (
	testPath    = "/vmtest/test"
	argsPath    = "/vmtest/args.json"
	modulesPath = "/vmtest/modules"

	startLine  = "KILN-VMTEST-START"
	resultLine = "KILN-VMTEST-RESULT exit="
)

func main() {
	// PID 1's descriptors 0-2 are /dev/console (the initramfs has dev/console).
	code, err := run()
	if err != nil {
		fmt.Fprintf(os.Stdout, "\nvminit: %v\n", err)
		code = -1
	}
	// A fresh line first: the test may have left a partial one.
	fmt.Fprintf(os.Stdout, "\n%s%d\n", resultLine, code)
	powerOff()
}

func run() (int, error) {
	if err := mountAll(); err != nil {
		return 0, err
	}
	if err := loadModules(modulesPath); err != nil {
		return 0, err
	}
	if err := loUp(); err != nil {
		return 0, err
	}
	var args []string
	b, err := os.ReadFile(argsPath)
	if err != nil {
		return 0, fmt.Errorf("read test arguments: %w", err)
	}
	if err := json.Unmarshal(b, &args); err != nil {
		return 0, fmt.Errorf("parse %s: %w", argsPath, err)
	}
	// os.Args[0] of the test is an absolute path, so tests that re-execute
	// themselves (networking/netnstest) find their binary.
	cmd := exec.Command(testPath, args...)
	cmd.Dir = "/tmp"
	cmd.Env = []string{
		"PATH=/vmtest:/bin:/sbin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"KILN_VMTEST=1",
	}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	fmt.Fprintf(os.Stdout, "%s %s %s\n", startLine, testPath, strings.Join(args, " "))
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(os.Stdout, "\nvminit: test binary killed by %v\n", ws.Signal())
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	default:
		return 0, fmt.Errorf("run %s: %w", testPath, err)
	}
}

func mountAll() error {
	for _, m := range []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"proc", "/proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "mode=0755", unix.MS_NOSUID},
		{"devpts", "/dev/pts", "mode=0620,ptmxmode=0666", unix.MS_NOSUID | unix.MS_NOEXEC},
		{"tmpfs", "/dev/shm", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/tmp", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/run", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"cgroup2", "/sys/fs/cgroup", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// loadModules loads the modules named in list (one path per line, dependencies
// first); the kernel decompresses .ko.xz itself.
func loadModules(list string) error {
	f, err := os.Open(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	defer f.Close()
	start := time.Now()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" {
			continue
		}
		if err := loadModule(p); err != nil {
			return err
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	fmt.Fprintf(os.Stdout, "vminit: loaded %d modules in %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module: %w", err)
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// loUp brings the loopback link up, as every Linux system has it.
func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

func powerOff() {
	// Wait until the console has sent what was written to it (tcdrain): the
	// kernel's own messages reach the UART at once, a process's wait in the
	// tty's buffer, and a loaded TCG host once showed only the kernel's
	// "reboot: Power down" of a guest whose every line was lost.
	_ = unix.IoctlSetInt(int(os.Stdout.Fd()), unix.TCSBRK, 1)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(os.Stdout, "vminit: power off: %v\n", err)
	}
	// PID 1 must not exit (the kernel would panic); the host's deadline ends the VM.
	for {
		time.Sleep(time.Hour)
	}
}

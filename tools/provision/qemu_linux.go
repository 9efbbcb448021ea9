package provision

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-os/kiln/tools/qemu"
)

// startQEMU starts QEMU daemonised (-daemonize: it forks, leaves kctl's session and
// process group, and its first process exits once the VM is set up, reporting setup
// errors), so the node outlives kctl. The serial console goes to serial.log in the
// cluster directory, which Create follows. It returns QEMU's PID and the host port
// forwarded to the machine API.
func startQEMU(ctx context.Context, s vmSpec, log *slog.Logger) (pid, port int, err error) {
	arch := qemu.Arch(s.arch)
	bin := qemu.Binary(arch)
	if _, err := exec.LookPath(bin); err != nil {
		return 0, 0, fmt.Errorf("qemu provisioner: %w (apt-get install -t bookworm-backports qemu-system-x86 qemu-system-arm qemu-utils)", err)
	}
	overlay := filepath.Join(s.dir, OverlayFile)
	if err := qemu.CreateOverlay(ctx, s.disk, overlay, s.diskSize); err != nil {
		return 0, 0, err
	}
	var code, vars string
	if s.uefi {
		var tmpl string
		if code, tmpl, err = qemu.Firmware(arch); err != nil {
			return 0, 0, err
		}
		vars = filepath.Join(s.dir, VarsFile)
		if err := copyFile(tmpl, vars); err != nil {
			return 0, 0, fmt.Errorf("copy UEFI variables: %w", err)
		}
	}
	if port, err = qemu.FreePort(); err != nil {
		return 0, 0, err
	}
	pidFile := filepath.Join(s.dir, PIDFile)
	argv := qemuArgs(s, code, vars, overlay, pidFile, port)
	errPath := filepath.Join(s.dir, QEMUStderrFile)
	ef, err := os.Create(errPath)
	if err != nil {
		return 0, 0, err
	}
	defer ef.Close()
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Dir = s.dir
	// A file, not a pipe: the daemon keeps its copy of stderr until it redirects it.
	cmd.Stdout, cmd.Stderr = ef, ef
	// Its own session even before QEMU daemonises: a Ctrl-C at kctl's terminal must not
	// reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	log.Debug("starting QEMU", "cmd", bin+" "+strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(errPath)
		return 0, 0, fmt.Errorf("start %s: %w: %s", bin, err, bytes.TrimSpace(msg))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, 0, fmt.Errorf("QEMU started but wrote no pidfile: %w", err)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil || pid <= 0 {
		return 0, 0, fmt.Errorf("QEMU pidfile %s: %q is not a PID", pidFile, b)
	}
	return pid, port, nil
}

// qemuArgs is QEMU's command line for a daemonised node: the machine tools/qemu
// builds for tests (qemu.MachineArgs), with the console in a file instead of on stdio.
func qemuArgs(s vmSpec, code, vars, overlay, pidFile string, port int) []string {
	a := []string{
		"-name", "kiln-" + filepath.Base(s.dir),
		"-serial", "file:" + qemu.EscapeOptionValue(filepath.Join(s.dir, SerialLogFile)),
		"-daemonize",
		"-pidfile", pidFile,
	}
	return append(a, qemu.MachineArgs(&qemu.Config{
		Arch:         qemu.Arch(s.arch),
		Accel:        qemu.Accel(s.accel),
		MemoryMiB:    s.memoryMiB,
		CPUs:         s.cpus,
		UEFI:         s.uefi,
		FirmwareCode: code,
		Kernel:       s.kernel,
		Initrd:       s.initrd,
		Append:       s.cmdline,
		GuestPort:    qemu.APIPort,
		HostPort:     port,
	}, overlay, vars)...)
}

// running reports whether the cluster's QEMU still runs: the PID is alive and is the
// QEMU of this cluster directory (not a later process that got the same PID).
func running(c *Cluster) bool {
	if c.PID <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c.PID))
	if err != nil || len(b) == 0 {
		return false // gone, or a zombie
	}
	return bytes.Contains(b, []byte(filepath.Join(c.Dir, PIDFile)))
}

// stopQEMU asks QEMU to quit (SIGTERM) and kills it when it has not gone after grace.
func stopQEMU(c *Cluster, grace time.Duration) error {
	if !running(c) {
		return nil
	}
	if err := syscall.Kill(c.PID, syscall.SIGTERM); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("stop QEMU (pid %d): %w", c.PID, err)
	}
	deadline := time.Now().Add(grace)
	for running(c) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(c.PID, syscall.SIGKILL)
			deadline = time.Now().Add(grace)
			for running(c) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if running(c) {
				return fmt.Errorf("QEMU (pid %d) survived SIGKILL", c.PID)
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

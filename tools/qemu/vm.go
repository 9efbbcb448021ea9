package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// VM is a running QEMU process.
type VM struct {
	cfg     Config
	cmd     *exec.Cmd
	con     *console
	log     *os.File
	logPath string
	ownDir  bool
	started time.Time

	done    chan struct{} // closed when QEMU has exited and the console is drained
	waitErr error
	stderr  bytes.Buffer

	killOnce sync.Once
	mu       sync.Mutex
	killMsg  string
}

// Start prepares the overlay and firmware copy and starts QEMU. Cancelling ctx kills
// the VM. The caller must call Close.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(cfg.Binary); err != nil {
		return nil, fmt.Errorf("qemu: %w (install qemu-system-x86 / qemu-system-arm)", err)
	}
	vm := &VM{cfg: cfg, done: make(chan struct{})}
	if vm.cfg.Dir == "" {
		d, err := os.MkdirTemp("", "kiln-qemu-")
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		vm.cfg.Dir, vm.ownDir = d, true
	}
	ok := false
	defer func() {
		if !ok {
			vm.cleanupDir()
		}
	}()
	var f files
	if cfg.Disk != "" {
		f.overlay = filepath.Join(vm.cfg.Dir, "disk.qcow2")
		if err := CreateOverlay(ctx, cfg.Disk, f.overlay, cfg.DiskSize); err != nil {
			return nil, err
		}
	}
	if cfg.UEFI {
		f.vars = filepath.Join(vm.cfg.Dir, "efivars.fd")
		if err := copyFile(cfg.FirmwareVars, f.vars); err != nil {
			return nil, fmt.Errorf("qemu: copy UEFI variables: %w", err)
		}
	}
	if vm.cfg.GuestPort > 0 && vm.cfg.HostPort == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		vm.cfg.HostPort = p
	}
	vm.logPath = filepath.Join(vm.cfg.Dir, "serial.log")
	lf, err := os.Create(vm.logPath)
	if err != nil {
		return nil, fmt.Errorf("qemu: serial log: %w", err)
	}
	vm.log = lf

	argv := args(&vm.cfg, f)
	vm.cmd = exec.Command(vm.cfg.Binary, argv...)
	vm.cmd.Dir = vm.cfg.Dir
	vm.cmd.Stderr = &vm.stderr
	// Own process group: a Ctrl-C in the caller's terminal must not reach QEMU first.
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := vm.cmd.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm.con = newConsole(func() { vm.kill("kernel panic") })
	cfg.Logger.Debug("starting QEMU", "cmd", vm.cfg.Binary+" "+strings.Join(argv, " "))
	vm.started = time.Now()
	if err := vm.cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", vm.cfg.Binary, err)
	}
	ok = true
	fed := make(chan struct{})
	go func() {
		vm.con.feed(out, lf)
		close(fed)
	}()
	go func() {
		<-fed
		vm.waitErr = vm.cmd.Wait()
		lf.Close()
		close(vm.done)
	}()
	go func() {
		t := time.NewTimer(vm.cfg.Timeout)
		defer t.Stop()
		select {
		case <-vm.done:
		case <-ctx.Done():
			vm.kill("context cancelled")
		case <-t.C:
			vm.kill(fmt.Sprintf("boot timeout %s", vm.cfg.Timeout))
		}
	}()
	return vm, nil
}

// Addr is the host address forwarded to the guest port ("" without networking).
func (vm *VM) Addr() string {
	if vm.cfg.GuestPort <= 0 {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", vm.cfg.HostPort)
}

// HostPort is the loopback port forwarded to the guest port.
func (vm *VM) HostPort() int { return vm.cfg.HostPort }

// SerialLog is the path of the console log; it lives in the VM directory.
func (vm *VM) SerialLog() string { return vm.logPath }

// Dir is the VM's working directory (overlay, UEFI variables, serial log).
func (vm *VM) Dir() string { return vm.cfg.Dir }

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.started }

// Expect waits up to timeout for a console line matching re, after the line the
// previous Expect matched, and returns the submatches. It fails at once on a kernel
// panic (ErrKernelPanic; the VM is killed) or when QEMU exits (ErrExited).
func (vm *VM) Expect(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	m, err := vm.con.expect(re, timeout)
	if errors.Is(err, ErrExited) {
		// The console ends when QEMU closes its output, a moment before the
		// process is reaped: wait for that, so the error carries QEMU's exit
		// status and stderr.
		select {
		case <-vm.done:
		case <-time.After(10 * time.Second):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w\nlast console lines:\n%s%s", err, strings.Join(vm.con.tail(15), "\n"), vm.exitNote())
	}
	return m, nil
}

// ExpectString is Expect with a literal.
func (vm *VM) ExpectString(s string, timeout time.Duration) error {
	_, err := vm.Expect(regexp.MustCompile(regexp.QuoteMeta(s)), timeout)
	return err
}

func (vm *VM) exitNote() string {
	select {
	case <-vm.done:
	default:
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nQEMU exited: %v", vm.waitErr)
	if k := vm.killReason(); k != "" {
		fmt.Fprintf(&b, " (killed: %s)", k)
	}
	if s := strings.TrimSpace(vm.stderr.String()); s != "" {
		fmt.Fprintf(&b, "\nQEMU stderr: %s", s)
	}
	return b.String()
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Wait waits for QEMU to exit (e.g. after the guest powered off) and returns its exit
// error: nil for a clean exit, an error when it was killed or failed.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
	case <-ctx.Done():
		return fmt.Errorf("waiting for QEMU to exit: %w", ctx.Err())
	}
	if k := vm.killReason(); k != "" {
		return fmt.Errorf("QEMU killed: %s", k)
	}
	if vm.waitErr != nil {
		return fmt.Errorf("QEMU: %w: %s", vm.waitErr, strings.TrimSpace(vm.stderr.String()))
	}
	return nil
}

// Stop asks QEMU to quit (SIGTERM; QEMU closes its files and exits, the guest gets no
// shutdown) and kills it if it has not exited after grace.
func (vm *VM) Stop(grace time.Duration) error {
	select {
	case <-vm.done:
		return nil
	default:
	}
	if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("qemu: stop: %w", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-vm.done:
		return nil
	case <-t.C:
		vm.kill("did not stop within " + grace.String())
		<-vm.done
		return nil
	}
}

// Kill ends QEMU at once (SIGKILL) and waits for it: a power cut for the guest.
func (vm *VM) Kill() {
	vm.kill("Kill called")
	<-vm.done
}

func (vm *VM) kill(why string) {
	vm.killOnce.Do(func() {
		select {
		case <-vm.done:
			return
		default:
		}
		vm.mu.Lock()
		vm.killMsg = why
		vm.mu.Unlock()
		vm.cfg.Logger.Debug("killing QEMU", "reason", why)
		_ = vm.cmd.Process.Kill()
	})
}

func (vm *VM) killReason() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.killMsg
}

// Close kills QEMU if it still runs and removes the VM directory unless Config.KeepDir
// or Config.Dir was given. Save the serial log first (SaveLog) when the run failed.
func (vm *VM) Close() error {
	vm.Kill()
	return vm.cleanupDir()
}

func (vm *VM) cleanupDir() error {
	if vm.ownDir && !vm.cfg.KeepDir {
		return os.RemoveAll(vm.cfg.Dir)
	}
	return nil
}

// SaveLog copies the serial log to dst (e.g. into t.ArtifactDir() when a test failed).
func (vm *VM) SaveLog(dst string) error {
	return copyFile(vm.logPath, dst)
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("qemu: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CreateOverlay makes a qcow2 overlay at dst backed by image (raw or qcow2, detected),
// optionally with a larger virtual size. Writes go to the overlay only.
func CreateOverlay(ctx context.Context, image, dst string, size int64) error {
	format, err := ImageFormat(image)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(image)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	argv := []string{"create", "-q", "-f", "qcow2", "-b", abs, "-F", format, dst}
	if size > 0 {
		argv = append(argv, fmt.Sprint(size))
	}
	out, err := exec.CommandContext(ctx, "qemu-img", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create overlay of %s: %w: %s", image, err, bytes.TrimSpace(out))
	}
	return nil
}

// ImageFormat returns "qcow2" or "raw" from the file's magic.
func ImageFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("qemu: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("qemu: read %s: %w", path, err)
	}
	if string(magic[:]) == "QFI\xfb" {
		return "qcow2", nil
	}
	return "raw", nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

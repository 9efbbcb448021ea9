//go:build linux

package proxy

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// The benchmark runs in a private network and mount namespace: TestMain
// re-executes the test binary there when it runs as root, so the control
// plane's loopback, every namespace made below and every bpffs and cgroup2
// mount end with the process.
const sandboxEnv = "KILN_BENCH_PROXY_SANDBOX"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(sandboxEnv) == "" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), sandboxEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &exit):
			os.Exit(exit.ExitCode())
		}
		os.Setenv(sandboxEnv, "unavailable: "+err.Error())
	}
	os.Exit(m.Run())
}

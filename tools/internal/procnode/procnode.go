// Package procnode runs machined in process mode for tests and benchmarks:
// start, wait until the API answers, stop cleanly or SIGKILL, and dial it.
package procnode

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Node is one machined in process mode.
type Node struct {
	t    testing.TB
	bin  string
	Root string
	Addr string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *bytes.Buffer
	// done is closed when the current process has exited.
	done chan struct{}
}

// New prepares a node with a fresh state directory and a free port on
// 127.0.0.1; machined is the path of the binary. The node is SIGKILLed when
// the test ends, and its log is printed if the test failed.
func New(t testing.TB, machined string) *Node {
	t.Helper()
	n := &Node{
		bin:  machined,
		t:    t,
		Root: t.TempDir(),
		Addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
	}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			n.mu.Lock()
			t.Logf("machined log:\n%s", n.log)
			n.mu.Unlock()
		}
	})
	return n
}

// Start launches machined and waits until its API answers.
func (n *Node) Start() {
	n.t.Helper()
	n.StartNoWait()
	n.WaitReady()
}

func (n *Node) StartNoWait() {
	n.t.Helper()
	cmd := exec.Command(n.bin, "--root", n.Root, "--listen", n.Addr)
	n.mu.Lock()
	if n.log == nil {
		n.log = &bytes.Buffer{}
	}
	cmd.Stdout = lockedWriter{&n.mu, n.log}
	cmd.Stderr = lockedWriter{&n.mu, n.log}
	n.mu.Unlock()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start machined: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
}

// WaitReady polls Version until machined answers, in either mode.
func (n *Node) WaitReady() {
	n.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.Version(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-n.done:
			n.t.Fatalf("machined exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("machined not ready after 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID returns the process ID of the running machined, or 0.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Build compiles machined and kctl into dir and returns their paths.
func Build(dir string) (machined, kctl string, err error) {
	machined = filepath.Join(dir, "machined")
	kctl = filepath.Join(dir, "kctl")
	for _, b := range []struct{ out, pkg string }{
		{machined, "github.com/kiln-os/kiln/machined/cmd/machined"},
		{kctl, "github.com/kiln-os/kiln/tools/kctl"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return machined, kctl, nil
}

// Stop sends SIGTERM and waits for a clean exit.
func (n *Node) Stop() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		n.t.Fatalf("machined did not stop within 60s of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		n.t.Errorf("machined exited with %d after SIGTERM, want 0", code)
	}
}

// Kill SIGKILLs machined and everything in its process group.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Version asks the node for its version without a client certificate. Any
// answer from the server — even a refusal — means the API is listening.
func (n *Node) Version(ctx context.Context) (*machine.VersionResponse, error) {
	c, err := client.New(ctx, n.Addr, client.WithInsecure(""))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := c.Version(ctx, &machine.VersionRequest{})
	if err != nil && status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		return nil, nil
	}
	return resp, err
}

// AdminClient dials the node with the admin credentials of a kctl client config.
func (n *Node) AdminClient(t testing.TB, kctlconfig string) *client.Client {
	t.Helper()
	cfg, err := clientconfig.Load(kctlconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur, _, err := cfg.Current("")
	if err != nil {
		t.Fatal(err)
	}
	ca, crt, key, err := cur.PEM()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(context.Background(), n.Addr, client.WithMTLS(ca, crt, key))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

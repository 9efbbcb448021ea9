//go:build linux

package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kiln-os/kiln/controlplane/args"
	"github.com/kiln-os/kiln/controlplane/pki"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// component is the absolute path of a file that controlplane/build.sh put in
// $KILN_COMPONENTS/<arch>, skipping the benchmark when it is missing.
func component(tb testing.TB, parts ...string) string {
	tb.Helper()
	d := os.Getenv("KILN_COMPONENTS")
	if d == "" {
		d = filepath.Join("..", "..", "..", "_out", "components")
	}
	p, err := filepath.Abs(filepath.Join(append([]string{d, runtime.GOARCH}, parts...)...))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("needs %s: run controlplane/build.sh %s (%v)", filepath.Join(parts...), parts[0], err)
	}
	return p
}

// proc is a process the benchmark started; it dies with the benchmark
// (Pdeathsig) and is killed at cleanup.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs bin with args, output to logDir/name.log. With ns, the process
// starts in that network namespace (forked from a thread there).
func start(tb testing.TB, ns *netNS, logDir, name, bin string, args []string, env ...string) *proc {
	tb.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if ns == nil {
		err = cmd.Start()
	} else {
		_, err = inNS(ns, cmd.Start)
	}
	if err != nil {
		f.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		if p.running() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("--- %s log tail (%s):\n%s", name, logPath, tail(logPath, 30))
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// alive is an error once the process has exited.
func (p *proc) alive() error {
	if p.running() {
		return nil
	}
	return fmt.Errorf("%s exited: %v; log tail:\n%s", p.name, p.err, tail(p.log, 20))
}

// stop sends SIGTERM and kills the process group after timeout.
func (p *proc) stop(timeout time.Duration) error {
	if !p.running() {
		return fmt.Errorf("%s had already exited: %v", p.name, p.err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, timeout)
	}
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// cluster is etcd and kube-apiserver on the main namespace's 127.0.0.1.
type cluster struct {
	client    *kubernetes.Clientset
	rest      *rest.Config
	adminConf []byte
	apiAddr   string // 127.0.0.1:port
	stopAll   func()
}

// startCluster starts etcd and kube-apiserver from the kube binary with the
// PKI and flags Kiln generates (as controlplane/hosttest does), and waits for
// /readyz.
func startCluster(tb testing.TB, kube, dir string) *cluster {
	tb.Helper()
	paths := args.Paths{
		PKI:      filepath.Join(dir, "pki"),
		Config:   filepath.Join(dir, "config"),
		EtcdData: filepath.Join(dir, "etcd"),
	}
	ports := freePorts(tb, 4)
	apiPort, etcdClient, etcdPeer, etcdMetrics := ports[0], ports[1], ports[2], ports[3]
	bundle, err := secrets.NewBundle()
	if err != nil {
		tb.Fatal(err)
	}
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	out, err := generate.Generate("kiln-bench", endpoint, bundle, generate.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	node := pki.Node{Name: "kiln-bench", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	set, err := pki.Generate(out.ControlPlane, node, pki.Options{APIServerPort: apiPort})
	if err != nil {
		tb.Fatal(err)
	}
	if err := set.WriteDir(paths.PKI); err != nil {
		tb.Fatal(err)
	}
	in := args.Input{Config: out.ControlPlane, Node: node, Paths: paths, APIServerPort: apiPort}
	enc, err := args.EncryptionConfig(in)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(paths.Config, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.Config, args.FileEncryptionConfig), enc, 0o600); err != nil {
		tb.Fatal(err)
	}
	etcdFlags, err := args.Etcd(in)
	if err != nil {
		tb.Fatal(err)
	}
	etcdURL := fmt.Sprintf("https://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", etcdPeer)
	etcdFlags["listen-client-urls"], etcdFlags["advertise-client-urls"] = etcdURL, etcdURL
	etcdFlags["listen-peer-urls"], etcdFlags["initial-advertise-peer-urls"] = peerURL, peerURL
	etcdFlags["initial-cluster"] = node.Name + "=" + peerURL
	etcdFlags["listen-metrics-urls"] = fmt.Sprintf("http://127.0.0.1:%d", etcdMetrics)
	apiFlags, err := args.APIServer(in)
	if err != nil {
		tb.Fatal(err)
	}
	apiFlags["etcd-servers"] = etcdURL
	apiFlags["bind-address"] = "127.0.0.1"
	apiFlags["endpoint-reconciler-type"] = "none" // no loopback endpoint for the kubernetes Service

	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		tb.Fatal(err)
	}
	etcd := start(tb, nil, logs, "etcd", kube, append([]string{"etcd"}, etcdFlags.Args()...))
	apiserver := start(tb, nil, logs, "kube-apiserver", kube, append([]string{"apiserver"}, apiFlags.Args()...))

	adminConf := set.Get(pki.FileAdminConf)
	restCfg, err := clientcmd.RESTConfigFromKubeConfig(adminConf)
	if err != nil {
		tb.Fatal(err)
	}
	restCfg.QPS, restCfg.Burst = 2000, 4000
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	var last error
	for {
		if err := etcd.alive(); err != nil {
			tb.Fatal(err)
		}
		if err := apiserver.alive(); err != nil {
			tb.Fatal(err)
		}
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			break
		}
		last = err
		select {
		case <-ctx.Done():
			tb.Fatalf("kube-apiserver /readyz: not within %v (last: %v)", hangGuard, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
	c := &cluster{client: client, rest: restCfg, adminConf: adminConf, apiAddr: fmt.Sprintf("127.0.0.1:%d", apiPort)}
	c.stopAll = func() {
		// The apiserver goes before etcd, or it hangs in graceful shutdown.
		for _, p := range []*proc{apiserver, etcd} {
			if p.running() {
				if err := p.stop(time.Minute); err != nil {
					tb.Log(err)
				}
			}
		}
	}
	tb.Cleanup(c.stopAll)
	return c
}

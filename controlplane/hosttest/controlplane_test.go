package hosttest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kiln-os/kiln/controlplane/args"
	"github.com/kiln-os/kiln/controlplane/pki"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// hangGuard bounds every wait; it protects against hangs, it does not
// measure anything.
const hangGuard = 3 * time.Minute

// TestControlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler from the kube binary on 127.0.0.1 with the PKI and flags
// Kiln generates from a `kctl gen config` bundle, and checks that the
// cluster works: /readyz, a Namespace and a Service through client-go, the
// default ServiceAccount made by the controller-manager, a Secret stored
// encrypted in etcd. Then it stops them in order, apiserver before etcd.
func TestControlPlane(t *testing.T) {
	needRoot(t, "runs the control plane as the node would (acceptance test of issue 6)")
	kube := component(t, "kube", "kube")

	dir := t.TempDir()
	paths := args.Paths{
		PKI:      filepath.Join(dir, "pki"),
		Config:   filepath.Join(dir, "config"),
		EtcdData: filepath.Join(dir, "etcd"),
	}
	ports := freePorts(t, 4)
	apiPort, etcdClient, etcdPeer, etcdMetrics := ports[0], ports[1], ports[2], ports[3]

	// What `kctl gen config` does: a new secrets bundle and the configs.
	bundle, err := secrets.NewBundle()
	if err != nil {
		t.Fatal(err)
	}
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	out, err := generate.Generate("kiln-host", endpoint, bundle, generate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	node := pki.Node{Name: "kiln-host-test", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	set, err := pki.Generate(out.ControlPlane, node, pki.Options{APIServerPort: apiPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.WriteDir(paths.PKI); err != nil {
		t.Fatal(err)
	}
	in := args.Input{Config: out.ControlPlane, Node: node, Paths: paths, APIServerPort: apiPort}
	enc, err := args.EncryptionConfig(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(paths.Config, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.Config, args.FileEncryptionConfig), enc, 0o600); err != nil {
		t.Fatal(err)
	}

	etcdFlags, err := args.Etcd(in)
	if err != nil {
		t.Fatal(err)
	}
	// The well-known ports may be taken on a shared host: move etcd.
	etcdURL := fmt.Sprintf("https://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", etcdPeer)
	etcdFlags["listen-client-urls"], etcdFlags["advertise-client-urls"] = etcdURL, etcdURL
	etcdFlags["listen-peer-urls"], etcdFlags["initial-advertise-peer-urls"] = peerURL, peerURL
	etcdFlags["initial-cluster"] = node.Name + "=" + peerURL
	etcdFlags["listen-metrics-urls"] = fmt.Sprintf("http://127.0.0.1:%d", etcdMetrics)
	apiFlags, err := args.APIServer(in)
	if err != nil {
		t.Fatal(err)
	}
	apiFlags["etcd-servers"] = etcdURL
	apiFlags["bind-address"] = "127.0.0.1"
	// The apiserver refuses to publish a loopback address as the kubernetes
	// Service's endpoint; on the host the test must stay on loopback.
	apiFlags["endpoint-reconciler-type"] = "none"
	cmFlags, err := args.ControllerManager(in)
	if err != nil {
		t.Fatal(err)
	}
	cmFlags["secure-port"] = "0" // its serving port is not under test
	schedFlags, err := args.Scheduler(in)
	if err != nil {
		t.Fatal(err)
	}
	schedFlags["secure-port"] = "0"

	logs := filepath.Join(dir, "logs")
	os.MkdirAll(logs, 0o755)
	begin := time.Now()
	etcd := start(t, logs, "etcd", kube, append([]string{"etcd"}, etcdFlags.Args()...))
	apiserver := start(t, logs, "kube-apiserver", kube, append([]string{"apiserver"}, apiFlags.Args()...))

	restCfg, err := clientcmd.RESTConfigFromKubeConfig(set.Get(pki.FileAdminConf))
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
	defer cancel()
	waitFor(t, "kube-apiserver /readyz", hangGuard, func() (bool, error) {
		if !apiserver.running() || !etcd.running() {
			t.Fatalf("a component exited: etcd %v, apiserver %v", etcd.err, apiserver.err)
		}
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", err
	})
	readyz := time.Since(begin)
	t.Logf("figure: control plane start -> /readyz ok: %.2f s", readyz.Seconds())

	// The controller-manager exits at once when the apiserver is not up,
	// so it starts after /readyz, as machined orders it.
	cm := start(t, logs, "kube-controller-manager", kube, append([]string{"controller-manager"}, cmFlags.Args()...))
	sched := start(t, logs, "kube-scheduler", kube, append([]string{"scheduler"}, schedFlags.Args()...))

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kiln-host-test"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Namespace: %v", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	got, err := client.CoreV1().Services(ns.Name).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service: %v", err)
	}
	if ip, err := netip.ParseAddr(got.Spec.ClusterIP); err != nil || !netip.MustParsePrefix("10.96.0.0/12").Contains(ip) {
		t.Errorf("Service ClusterIP = %q, want an address in the service subnet 10.96.0.0/12", got.Spec.ClusterIP)
	}
	waitFor(t, "the default ServiceAccount from the controller-manager", hangGuard, func() (bool, error) {
		if !cm.running() {
			t.Fatalf("kube-controller-manager exited: %v", cm.err)
		}
		_, err := client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, err
		}
		return err == nil, err
	})

	// Secrets are encrypted at rest with the cluster's secretbox key.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: ns.Name}, StringData: map[string]string{"k": "plaintext-canary"}}
	if _, err := client.CoreV1().Secrets(ns.Name).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Secret: %v", err)
	}
	raw, err := exec.Command(kube, "etcdctl", "--endpoints", etcdURL,
		"--cacert", filepath.Join(paths.PKI, pki.FileEtcdCACrt),
		"--cert", filepath.Join(paths.PKI, pki.FileAPIServerEtcdCrt),
		"--key", filepath.Join(paths.PKI, pki.FileAPIServerEtcdKey),
		"get", "/registry/secrets/"+ns.Name+"/s", "--print-value-only").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl get: %v\n%s", err, raw)
	}
	if !strings.HasPrefix(string(raw), "k8s:enc:secretbox:v1:key1:") || strings.Contains(string(raw), "plaintext-canary") {
		t.Errorf("Secret in etcd is not secretbox-encrypted: %.80q", raw)
	}

	// Idle memory, once everything has settled a little.
	for _, p := range []*proc{etcd, apiserver, cm, sched} {
		if kib, err := pssKiB(p.cmd.Process.Pid); err == nil {
			t.Logf("figure: %s PSS %.1f MiB", p.name, float64(kib)/1024)
		}
	}

	// Ordered stop: the apiserver goes before etcd, or it hangs in
	// graceful shutdown holding its port.
	for _, p := range []*proc{sched, cm, apiserver, etcd} {
		if err := p.stop(time.Minute); err != nil {
			t.Error(err)
		}
	}
	// Nothing is left listening on the ports the test used.
	for _, p := range ports {
		if conn, err := dialLocal(p); err == nil {
			conn.Close()
			t.Errorf("something still listens on 127.0.0.1:%d", p)
		}
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", dir, m)
	}
}

//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kiln-os/kiln/networking/bpfsandbox"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/kiln-os/kiln/networking/serviceproxy/agent"
	"github.com/kiln-os/kiln/tools/internal/benchstat"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// hangGuard bounds waits that should take seconds; programGuard bounds a
	// proxy's first programming, which takes minutes for kube-proxy's iptables
	// mode with the nf_tables backend at 10k Services. Both only protect
	// against hangs; nothing is asserted on time.
	hangGuard    = 3 * time.Minute
	programGuard = 20 * time.Minute

	namespace   = "bench"
	servicePort = 80
	// kubeProxyAPIPort is where kube-proxy finds the apiserver in its namespace
	// (a forwarder to the main namespace's loopback).
	kubeProxyAPIPort = 6443
)

// Modes, in the order they run. Each has its own network namespace.
const (
	modeDirect = "direct" // no proxy: connections to the backend address
	// modeDirectEnd is direct again after the other modes (same namespace).
	modeDirectEnd = "direct (again, at the end)"
	modeEBPF      = "ebpf"
	modeNFTables  = "kube-proxy-nftables"
	modeLegacy    = "kube-proxy-iptables-legacy"
	modeIPTNFT    = "kube-proxy-iptables-nft"
)

var allModes = []string{modeDirect, modeEBPF, modeNFTables, modeLegacy, modeIPTNFT}

// envList reads a comma-separated environment variable.
func envList(key string, def []string) []string {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	return strings.Split(v, ",")
}

func envInt(tb testing.TB, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}

// BenchmarkServiceProxy runs the side-by-side benchmark once per size:
// N Services (KILN_BENCH_PROXY_SERVICES, default 1000,10000) with two
// endpoints each, programmed by each mode (KILN_BENCH_PROXY_MODES, default all
// of allModes), and KILN_BENCH_PROXY_CONNS (default 20000) new connections at
// concurrency 1 and 8. It logs a table (and appends it to
// $KILN_BENCH_PROXY_OUT when set). Run it with -benchtime 1x.
func BenchmarkServiceProxy(b *testing.B) {
	bpfsandbox.Require(b, "runs kube-proxy and loads BPF programs, in private network namespaces")
	// The private namespace's loopback carries the control plane.
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		b.Fatalf("bring loopback up: %v", err)
	}
	modes := envList("KILN_BENCH_PROXY_MODES", allModes)
	for _, m := range modes {
		if !slices.Contains(allModes, m) {
			b.Fatalf("KILN_BENCH_PROXY_MODES: unknown mode %q (have %v)", m, allModes)
		}
	}
	env := &benchEnv{modes: modes, conns: envInt(b, "KILN_BENCH_PROXY_CONNS", 20000)}
	env.kube = component(b, "kube", "kube")
	for _, m := range modes {
		if strings.HasPrefix(m, "kube-proxy") {
			env.kubeProxy = component(b, "kube-proxy", "kube-proxy")
			break
		}
	}
	for _, tool := range neededTools(modes) {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("needs %s for the kube-proxy anchor: apt-get install iptables nftables (%v)", tool, err)
		}
	}
	for _, s := range envList("KILN_BENCH_PROXY_SERVICES", []string{"1000", "10000"}) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 30000 {
			b.Fatalf("KILN_BENCH_PROXY_SERVICES: %q is not a count in 1..30000", s)
		}
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { env.run(b, n) })
	}
}

func neededTools(modes []string) []string {
	var out []string
	for _, m := range modes {
		switch m {
		case modeNFTables:
			out = append(out, "nft")
		case modeLegacy:
			out = append(out, "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore")
		case modeIPTNFT:
			out = append(out, "iptables-nft", "iptables-nft-save", "iptables-nft-restore")
		}
	}
	return out
}

type benchEnv struct {
	kube, kubeProxy string
	modes           []string
	conns           int
	backend         *netNS // for failure reports
}

// svcInfo is one created Service.
type svcInfo struct {
	name      string
	clusterIP netip.Addr
	backends  [2]netip.Addr
}

// result is one mode's figures. Zero durations were not measured.
type result struct {
	mode string
	// (a) objects existing → programmed.
	startToProbe time.Duration // proxy start → first probe through the last Service's ClusterIP
	firstSync    time.Duration // the proxy's own figure for programming everything
	syncs        int           // kube-proxy syncs by then
	// (b) one endpoint change with N programmed.
	changeE2E  time.Duration // API update sent → probe reaches a new backend
	changeProg time.Duration // the proxy's own programming time of the change
	// changeProgCPU is the CPU time of the thread that programmed the change
	// (eBPF only): changeProg less the time it waited for a CPU.
	changeProgCPU time.Duration
	changeNPL     time.Duration // kube-proxy network programming latency (trigger time → programmed)
	// (c) new connections, by concurrency.
	load map[int]loadResult
}

func (e *benchEnv) run(b *testing.B, n int) {
	dir := b.TempDir()
	topo := newTopology(b, e.modes)
	e.backend = topo.backend
	serveEcho(b, topo.backend)
	cl := startCluster(b, e.kube, filepath.Join(dir, "cp"))

	begin := time.Now()
	svcs := createObjects(b, cl.client, n)
	created := time.Since(begin)
	b.Logf("created %d Services and %d EndpointSlices in %.1f s", n, n, created.Seconds())
	target := svcs[n-1]
	spread := sample(svcs, spreadServices)

	var results []*result
	for k, mode := range e.modes {
		ns := topo.modes[mode]
		// (b) moves the target Service to two backends no other Service has,
		// different for each mode.
		next := [2]netip.Addr{backendAddr(60000 + 2*k), backendAddr(60001 + 2*k)}
		var r *result
		switch mode {
		case modeDirect:
			r = &result{mode: mode, load: e.loads(b, ns, backendsOf(spread))}
		case modeEBPF:
			r = e.runEBPF(b, cl, ns, &target, next, clusterIPsOf(spread))
		default:
			r = e.runKubeProxy(b, cl, ns, mode, topo.clientAddr(mode, e.modes), &target, next, clusterIPsOf(spread))
		}
		r.mode = mode
		results = append(results, r)
		b.Logf("%s done", mode)
	}
	if ns, ok := topo.modes[modeDirect]; ok {
		// Direct once more at the end: the machine is shared, and the two
		// direct rows show how much it drifted during the run.
		results = append(results, &result{mode: modeDirectEnd, load: e.loads(b, ns, backendsOf(spread))})
	}
	report(b, n, e.conns, created, results)
}

// createObjects creates n selector-less Services with two endpoints each (one
// EndpointSlice per Service), 8 requests at a time.
func createObjects(tb testing.TB, client kubernetes.Interface, n int) []svcInfo {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), programGuard)
	defer cancel()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("create Namespace: %v", err)
	}
	out := make([]svcInfo, n)
	idx := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range idx {
				s, err := createOne(ctx, client, i)
				if err != nil {
					errs <- err
					cancel()
					return
				}
				out[i] = s
			}
		})
	}
	for i := range n {
		select {
		case idx <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(idx)
	wg.Wait()
	close(errs)
	if err := errors.Join(<-errs); err != nil {
		tb.Fatal(err)
	}
	if ctx.Err() != nil {
		tb.Fatalf("create objects: %v", ctx.Err())
	}
	return out
}

func createOne(ctx context.Context, client kubernetes.Interface, i int) (svcInfo, error) {
	name := fmt.Sprintf("s%05d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "tcp", Protocol: corev1.ProtocolTCP, Port: servicePort, TargetPort: intstr.FromInt32(backendPort),
		}}},
	}
	got, err := client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return svcInfo{}, fmt.Errorf("create Service %s: %w", name, err)
	}
	ip, err := netip.ParseAddr(got.Spec.ClusterIP)
	if err != nil {
		return svcInfo{}, fmt.Errorf("Service %s: ClusterIP %q: %w", name, got.Spec.ClusterIP, err)
	}
	s := svcInfo{name: name, clusterIP: ip, backends: [2]netip.Addr{backendAddr(2*i + 1), backendAddr(2*i + 2)}}
	if _, err := client.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice(s, time.Now()), metav1.CreateOptions{}); err != nil {
		return svcInfo{}, fmt.Errorf("create EndpointSlice of %s: %w", name, err)
	}
	return s, nil
}

// slice is the EndpointSlice of s, with the trigger-time annotation that
// kube-proxy's network programming latency starts from.
func slice(s svcInfo, trigger time.Time) *discoveryv1.EndpointSlice {
	ready := true
	portName, port, proto := "tcp", int32(backendPort), corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.name, Namespace: namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: s.name,
				discoveryv1.LabelManagedBy:   "kiln-bench",
			},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger.UTC().Format(time.RFC3339Nano)},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for _, a := range s.backends {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return es
}

// changeEndpoints points s at next and returns the time just before the
// update was sent.
func changeEndpoints(tb testing.TB, client kubernetes.Interface, s *svcInfo, next [2]netip.Addr) time.Time {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cur, err := client.DiscoveryV1().EndpointSlices(namespace).Get(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		tb.Fatalf("get EndpointSlice %s: %v", s.name, err)
	}
	s.backends = next
	es := slice(*s, time.Now())
	es.ResourceVersion = cur.ResourceVersion
	sent := time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices(namespace).Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		tb.Fatalf("update EndpointSlice %s: %v", s.name, err)
	}
	return sent
}

func isBackendOf(s *svcInfo) func(netip.Addr) bool {
	want := s.backends
	return func(a netip.Addr) bool { return a == want[0] || a == want[1] }
}

// assertUnreachable fails unless the ClusterIP is unreachable before the proxy
// programs it: the figures below would mean nothing otherwise.
func assertUnreachable(tb testing.TB, ns *netNS, vip netip.AddrPort) {
	tb.Helper()
	if got, err := probe(ns, vip, 300*time.Millisecond); err == nil {
		tb.Fatalf("%s: %s reached backend %s before any proxy programmed it", ns.name, vip, got)
	}
}

// spreadServices is how many Services the connection benchmark spreads its
// connections over.
const spreadServices = 1000

// sample picks n of svcs at random, the same ones in every run (a fixed seed).
// kube-proxy's iptables mode writes KUBE-SERVICES in Go map order, a new order
// at every sync, and a connection's first packet walks the chain to its
// Service's rule: through a single Service, the cost is wherever that rule
// happened to land. Many Services give the average a client sees.
func sample(svcs []svcInfo, n int) []svcInfo {
	r := rand.New(rand.NewPCG(1, 2))
	idx := r.Perm(len(svcs))[:min(n, len(svcs))]
	out := make([]svcInfo, len(idx))
	for i, j := range idx {
		out[i] = svcs[j]
	}
	return out
}

// clusterIPsOf is the ClusterIP and port of each of svcs.
func clusterIPsOf(svcs []svcInfo) []netip.AddrPort {
	out := make([]netip.AddrPort, len(svcs))
	for i, s := range svcs {
		out[i] = netip.AddrPortFrom(s.clusterIP, servicePort)
	}
	return out
}

// backendsOf is the first backend of each of svcs: where direct connections go.
func backendsOf(svcs []svcInfo) []netip.AddrPort {
	out := make([]netip.AddrPort, len(svcs))
	for i, s := range svcs {
		out[i] = netip.AddrPortFrom(s.backends[0], backendPort)
	}
	return out
}

// loads runs the connection benchmark at concurrency 1 and 8, the connections
// going to dsts in turn.
func (e *benchEnv) loads(tb testing.TB, ns *netNS, dsts []netip.AddrPort) map[int]loadResult {
	tb.Helper()
	// Warm up (threads, ARP, socket caches), not measured.
	if _, err := load(ns, dsts, min(500, e.conns), 1); err != nil {
		tb.Fatalf("%s: warm-up connections: %v", ns.name, err)
	}
	out := map[int]loadResult{}
	for _, c := range []int{1, 8} {
		r, err := load(ns, dsts, e.conns, c)
		if err != nil {
			tb.Fatalf("%s: %d connections at concurrency %d: %v\n%s%s", ns.name, e.conns, c, err, diagnose(ns), diagnose(e.backend))
		}
		out[c] = r
	}
	return out
}

// runKubeProxy runs upstream kube-proxy in ns and measures it.
func (e *benchEnv) runKubeProxy(tb testing.TB, cl *cluster, ns *netNS, mode string, nodeIP netip.Addr, target *svcInfo, next [2]netip.Addr, dsts []netip.AddrPort) *result {
	tb.Helper()
	dir := tb.TempDir()
	proxyMode, pathEnv := "nftables", os.Getenv("PATH")
	if mode != modeNFTables {
		// kube-proxy runs iptables, iptables-save and iptables-restore from
		// PATH; links choose the backend.
		proxyMode = "iptables"
		backend := "legacy"
		if mode == modeIPTNFT {
			backend = "nft"
		}
		bin := filepath.Join(dir, "bin")
		if err := os.Mkdir(bin, 0o755); err != nil {
			tb.Fatal(err)
		}
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, suffix := range []string{"", "-save", "-restore"} {
				src, err := exec.LookPath(fam + "-" + backend + suffix)
				if err != nil {
					tb.Fatal(err)
				}
				if err := os.Symlink(src, filepath.Join(bin, fam+suffix)); err != nil {
					tb.Fatal(err)
				}
			}
		}
		pathEnv = bin + ":" + pathEnv
	}

	forward(tb, ns, kubeProxyAPIPort, cl.apiAddr)
	kcfg, err := clientcmd.Load(cl.adminConf)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range kcfg.Clusters {
		c.Server = fmt.Sprintf("https://127.0.0.1:%d", kubeProxyAPIPort)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kcfg, kubeconfig); err != nil {
		tb.Fatal(err)
	}
	// Conntrack sizes and timeouts are left alone (0): some are host-wide.
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
hostnameOverride: %q
bindAddress: %q
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
mode: %s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, "bench-"+mode, nodeIP.String(), proxyMode)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}

	// kube-proxy waits up to 30 s for its Node's addresses; a node has them.
	createNode(tb, cl.client, "bench-"+mode, nodeIP)

	vip := netip.AddrPortFrom(target.clusterIP, servicePort)
	assertUnreachable(tb, ns, vip)
	r := &result{}
	t0 := time.Now()
	p := start(tb, ns, dir, mode, e.kubeProxy, []string{"--config=" + cfgPath, "--v=2"}, "PATH="+pathEnv)
	// (a)
	seen, err := waitProbe(ns, vip, isBackendOf(target), programGuard, p.alive)
	if err != nil {
		tb.Fatalf("%s: first programming: %v", mode, err)
	}
	r.startToProbe = seen.Sub(t0)
	m := waitMetrics(tb, ns, p, func(m metrics) bool { return m.count(syncMetric) >= 1 })
	r.syncs = int(m.count(syncMetric))
	r.firstSync = m.mean(syncMetric)
	if c := m.count(fullSyncMetric); c >= 1 {
		// The first sync is a full one; with several, their mean.
		r.firstSync = m.mean(fullSyncMetric)
	}

	// (b) Let kube-proxy settle (minSyncPeriod) so the change is not held back
	// behind the first sync's rate limit.
	time.Sleep(2 * time.Second)
	m0 := scrape(tb, ns)
	changed := changeEndpoints(tb, cl.client, target, next)
	seen, err = waitProbe(ns, vip, isBackendOf(target), hangGuard, p.alive)
	if err != nil {
		tb.Fatalf("%s: endpoint change: %v", mode, err)
	}
	r.changeE2E = seen.Sub(changed)
	m1 := waitMetrics(tb, ns, p, func(m metrics) bool {
		return m.count(nplMetric) > m0.count(nplMetric) && m.count(syncMetric) > m0.count(syncMetric)
	})
	r.changeProg = m1.deltaMean(m0, syncMetric)
	r.changeNPL = m1.deltaMean(m0, nplMetric)

	// (c)
	r.load = e.loads(tb, ns, dsts)
	if err := p.stop(time.Minute); err != nil {
		tb.Error(err)
	}
	return r
}

// createNode registers a Node with ip as its InternalIP.
func createNode(tb testing.TB, client kubernetes.Interface, name string, ip netip.Addr) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	node, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create Node %s: %v", name, err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		tb.Fatalf("set addresses of Node %s: %v", name, err)
	}
}

// The kube-proxy metrics read, all histograms in seconds, IPv4 series only.
const (
	syncMetric     = "kubeproxy_sync_proxy_rules_duration_seconds"
	fullSyncMetric = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	nplMetric      = "kubeproxy_network_programming_duration_seconds"
)

// metrics is a scrape of Prometheus text: series → value.
type metrics map[string]float64

// value sums the series named name whose labels, if any, include IPv4.
func (m metrics) value(name string) float64 {
	var v float64
	for k, x := range m {
		base, labels, hasLabels := strings.Cut(k, "{")
		if base != name {
			continue
		}
		if hasLabels && strings.Contains(labels, "ip_family=") && !strings.Contains(labels, `ip_family="IPv4"`) {
			continue
		}
		v += x
	}
	return v
}

func (m metrics) count(hist string) float64 { return m.value(hist + "_count") }

func (m metrics) mean(hist string) time.Duration {
	c := m.count(hist)
	if c == 0 {
		return 0
	}
	return seconds(m.value(hist+"_sum") / c)
}

func (m metrics) deltaMean(before metrics, hist string) time.Duration {
	c := m.count(hist) - before.count(hist)
	if c <= 0 {
		return 0
	}
	return seconds((m.value(hist+"_sum") - before.value(hist+"_sum")) / c)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// scrape reads kube-proxy's /metrics in ns.
func scrape(tb testing.TB, ns *netNS) metrics {
	tb.Helper()
	m, err := scrapeOnce(ns)
	if err != nil {
		tb.Fatalf("%s: kube-proxy metrics: %v", ns.name, err)
	}
	return m
}

func scrapeOnce(ns *netNS) (metrics, error) {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
				return dialIn(ns, network, addr, 5*time.Second)
			},
		},
	}
	resp, err := client.Get("http://127.0.0.1:10249/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, body)
	}
	m := metrics{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, nil
}

// waitMetrics scrapes until ok holds.
func waitMetrics(tb testing.TB, ns *netNS, p *proc, ok func(metrics) bool) metrics {
	tb.Helper()
	end := time.Now().Add(hangGuard)
	var last error
	for time.Now().Before(end) {
		if err := p.alive(); err != nil {
			tb.Fatal(err)
		}
		m, err := scrapeOnce(ns)
		if err == nil && ok(m) {
			return m
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("%s: kube-proxy metrics did not show the sync within %v (last error: %v)", ns.name, hangGuard, last)
	return nil
}

// timedDP is the eBPF Proxy with each call timed.
type timedDP struct {
	*serviceproxy.Proxy
	mu    sync.Mutex
	calls []dpCall
}

type dpCall struct {
	kind       string // "sync" or "update"
	start, end time.Time
	cpu        time.Duration // the calling thread's CPU time in the call
	services   int
	err        error
}

// record times f by the clock and by the CPU time of its thread: the wall time
// also counts the time the thread waited for a CPU, which on this 2-core machine
// the apiserver and etcd have just been busy with when a change arrives.
func (d *timedDP) record(kind string, n int, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0 := threadCPU()
	t0 := time.Now()
	err := f()
	t1 := time.Now()
	cpu := threadCPU() - c0
	d.mu.Lock()
	d.calls = append(d.calls, dpCall{kind: kind, start: t0, end: t1, cpu: cpu, services: n, err: err})
	d.mu.Unlock()
	return err
}

// threadCPU is the calling thread's CPU time so far.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func (d *timedDP) Sync(desired []serviceproxy.Service) error {
	return d.record("sync", len(desired), func() error { return d.Proxy.Sync(desired) })
}

func (d *timedDP) Update(ups []serviceproxy.Service, dels []serviceproxy.ServiceKey) error {
	return d.record("update", len(ups)+len(dels), func() error { return d.Proxy.Update(ups, dels) })
}

// firstAfter returns the first call of kind that started at or after t.
func (d *timedDP) firstAfter(kind string, t time.Time) (dpCall, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.calls {
		if c.kind == kind && !c.start.Before(t) {
			return c, true
		}
	}
	return dpCall{}, false
}

// runEBPF runs Kiln's agent and datapath for ns: the programs attached to a
// cgroup of the benchmark's own, which the benchmark process joins for the
// duration (its sockets are the ones balanced), maps pinned on a private bpffs.
func (e *benchEnv) runEBPF(tb testing.TB, cl *cluster, ns *netNS, target *svcInfo, next [2]netip.Addr, dsts []netip.AddrPort) *result {
	tb.Helper()
	sb := bpfsandbox.New(tb, "bench-proxy")
	p, err := serviceproxy.Open(serviceproxy.Config{Cgroup: sb.Cgroup, PinDir: sb.PinDir})
	if err != nil {
		tb.Fatalf("open eBPF datapath: %v", err)
	}
	// Leave the cgroup and remove the datapath when this mode is done: the
	// next modes' sockets must not be balanced.
	defer func() {
		if err := p.Remove(); err != nil {
			tb.Errorf("remove eBPF datapath: %v", err)
		}
	}()
	if err := sb.Enter(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := sb.Leave(); err != nil {
			tb.Error(err)
		}
	}()

	vip := netip.AddrPortFrom(target.clusterIP, servicePort)
	assertUnreachable(tb, ns, vip)
	dp := &timedDP{Proxy: p}
	client, err := kubernetes.NewForConfig(cl.rest)
	if err != nil {
		tb.Fatal(err)
	}
	a, err := agent.New(agent.Config{Client: client, Datapath: dp, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("agent: %v", err)
	}
	r := &result{}
	t0 := time.Now()
	run := runAgent(a)
	defer run.stop(tb)
	alive := run.alive
	// (a)
	seen, err := waitProbe(ns, vip, isBackendOf(target), programGuard, alive)
	if err != nil {
		tb.Fatalf("ebpf: first programming: %v", err)
	}
	r.startToProbe = seen.Sub(t0)
	if c, ok := dp.firstAfter("sync", t0); ok {
		if c.err != nil {
			tb.Fatalf("ebpf: first Sync of %d services: %v", c.services, c.err)
		}
		r.firstSync = c.end.Sub(c.start)
	}
	// (b) The median of ebpfChanges changes, back and forth between next and the
	// old backends (ending on next): one Update takes microseconds, so a single
	// sample is mostly the caches the agent left cold while it waited.
	var e2e, prog, progCPU []time.Duration
	from := target.backends
	for i := range ebpfChanges {
		to := next
		if i%2 == 1 {
			to = from
		}
		changed := changeEndpoints(tb, cl.client, target, to)
		seen, err = waitProbe(ns, vip, isBackendOf(target), hangGuard, alive)
		if err != nil {
			tb.Fatalf("ebpf: endpoint change %d: %v", i+1, err)
		}
		e2e = append(e2e, seen.Sub(changed))
		if c, ok := dp.firstAfter("update", changed); ok && c.err == nil {
			prog = append(prog, c.end.Sub(c.start))
			progCPU = append(progCPU, c.cpu)
		}
	}
	r.changeE2E, r.changeProg, r.changeProgCPU = benchstat.Median(e2e), benchstat.Median(prog), benchstat.Median(progCPU)
	// (c)
	r.load = e.loads(tb, ns, dsts)
	return r
}

// agentRun is an agent running in the background (runAgent).
type agentRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned, with err
	err    error
}

func runAgent(a *agent.Agent) *agentRun {
	r := &agentRun{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	return r
}

// alive reports an error once the agent has stopped.
func (r *agentRun) alive() error {
	select {
	case <-r.done:
		return fmt.Errorf("agent stopped: %v", r.err)
	default:
		return nil
	}
}

// stop ends the agent and reports how it ended.
func (r *agentRun) stop(tb testing.TB) {
	r.cancel()
	<-r.done
	if r.err != nil {
		tb.Errorf("agent: %v", r.err)
	}
}

// ebpfChanges is how many endpoint changes (b) makes for the eBPF proxy (odd: the
// last one moves the target to its new backends, like kube-proxy's single change).
const ebpfChanges = 5

// diagnose collects the namespace's TCP and conntrack counters for a failure
// report.
func diagnose(ns *netNS) string {
	var out strings.Builder
	for _, argv := range [][]string{{"nstat", "-az"}, {"conntrack", "-S"}, {"conntrack", "-C"}, {"iptables-legacy-save", "-t", "filter"}, {"iptables-legacy-save", "-t", "mangle"}, {"iptables-legacy-save", "-t", "raw"}} {
		if _, err := exec.LookPath(argv[0]); err != nil {
			continue
		}
		var b []byte
		_, err := inNS(ns, func() (err error) {
			b, err = exec.Command(argv[0], argv[1:]...).CombinedOutput()
			return err
		})
		fmt.Fprintf(&out, "--- %s in %s (%v):\n", strings.Join(argv, " "), ns.name, err)
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if argv[0] == "nstat" && (len(f) < 2 || f[1] == "0") {
				continue // nonzero counters only
			}
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

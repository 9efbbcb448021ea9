//go:build linux

package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kiln-os/kiln/networking/bpfsandbox"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/kiln-os/kiln/networking/serviceproxy/agent"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Acceptance topology. The test's private namespace plays the node: the
// control plane on its loopback, the agent and the datapath (socket hooks on a
// cgroup the test process joins, TCX on the external links ext0 and ext1), and
// forwarding on.
//
//	client ns  eth0 10.252.0.2 ==veth== ext0 10.252.0.1 (external: the uplink)
//	remote ns  eth0 10.253.0.2 ==veth== ext1 10.253.0.1 (external: to other nodes)
//	pods ns    eth0 10.251.0.3 ==veth== kb0  10.251.0.1 (a pod link, not external)
//
// The remote namespace stands for a pod on another node (its endpoint names no
// node), the pods namespace for a pod on this one (its endpoint names this
// node).
var (
	accNodeIP      = netip.MustParseAddr("10.252.0.1")
	accClientIP    = netip.MustParseAddr("10.252.0.2")
	accRemoteGW    = netip.MustParseAddr("10.253.0.1")
	accRemote      = netip.MustParseAddr("10.253.0.2")
	accPodGW       = netip.MustParseAddr("10.251.0.1")
	accLocal       = netip.MustParseAddr("10.251.0.3")
	accLBIP        = netip.MustParseAddr("10.252.0.100")
	accNodePort    = int32(30080)
	accLocalNPort  = int32(30081)
	accNodeName    = "kiln-acceptance"
	accNamespace   = "acceptance"
	accServiceName = "echo"
	accLocalName   = "echo-local"
)

// TestAgentAgainstAPIServer is the service proxy's acceptance test: the agent
// and the real datapath against a real kube-apiserver and etcd, no kube-proxy
// and no iptables. A ClusterIP is unreachable until its Service has an
// EndpointSlice, then reaches the backend from the node; the same Service made
// NodePort is reached from a client namespace over a veth; a LoadBalancer
// Service with externalTrafficPolicy Local is reached on its NodePort and
// ingress IP and answers its health check; deleting the Services makes all of
// it unreachable again. Waits have generous deadlines against hangs only.
//
// Run: KILN_COMPONENTS=/var/cache/kiln/components go test ./tools/bench/proxy -run TestAgentAgainstAPIServer -v
func TestAgentAgainstAPIServer(t *testing.T) {
	bpfsandbox.Require(t, "runs etcd and kube-apiserver and loads BPF programs, in private network namespaces")
	if os.Getenv("KILN_COMPONENTS") == "" {
		t.Skip("needs $KILN_COMPONENTS with amd64|arm64/kube/kube: run `make components` and set it")
	}
	kube := component(t, "kube", "kube")
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring loopback up: %v", err)
	}
	cl := startCluster(t, kube, t.TempDir())
	t.Logf("kube-apiserver ready on %s", cl.apiAddr)

	// The node: the private namespace the test runs in.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		t.Fatalf("enable forwarding in the node's (private) namespace: %v", err)
	}
	fd, err := mainNS()
	if err != nil {
		t.Fatal(err)
	}
	node := &netNS{name: "node", fd: fd}
	remote := newNetNS(t, "remote")
	pods := newNetNS(t, "pods")
	client := newNetNS(t, "client")
	accVeth(t, "ext1", netip.PrefixFrom(accRemoteGW, 24), remote, netip.PrefixFrom(accRemote, 24), accRemoteGW)
	accVeth(t, "kb0", netip.PrefixFrom(accPodGW, 24), pods, netip.PrefixFrom(accLocal, 24), accPodGW)
	accVeth(t, "ext0", netip.PrefixFrom(accNodeIP, 24), client, netip.PrefixFrom(accClientIP, 24), netip.Addr{})
	// The load balancer sends its IP to the node: a route in the client's
	// namespace stands for it.
	ch := nsHandle(t, client)
	if err := ch.RouteAdd(&netlink.Route{Dst: prefixNet(netip.PrefixFrom(accLBIP, 32)), Gw: accNodeIP.AsSlice()}); err != nil {
		t.Fatalf("client: route to the load balancer IP: %v", err)
	}
	// The backends answer '?' with the address they were reached on.
	serveEcho(t, remote)
	serveEcho(t, pods)

	// The datapath: the client's packets come in on ext0, a remote backend's
	// replies on ext1. A local backend's replies come in on kb0, which is not
	// external, and are reverse-NATed on their way out of ext0.
	sb := bpfsandbox.New(t, "proxy-acceptance")
	p, err := serviceproxy.Open(serviceproxy.Config{
		Cgroup: sb.Cgroup, PinDir: sb.PinDir, Logger: testLog(t),
		ExternalLinks: []serviceproxy.ExternalLink{{Name: "ext0"}, {Name: "ext1"}},
	})
	if err != nil {
		t.Fatalf("open the eBPF datapath: %v", err)
	}
	if err := sb.Enter(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Leave(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range p.Services() {
				t.Logf("programmed: %+v", s)
			}
		}
		if err := p.Remove(); err != nil {
			t.Errorf("remove the eBPF datapath: %v", err)
		}
	})
	health := serviceproxy.NewHealthServer(netip.Addr{}, testLog(t)) // all addresses, as kube-proxy
	t.Cleanup(func() { health.Close() })

	kc, err := kubernetes.NewForConfig(cl.rest)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Client: kc, Datapath: p, Logger: testLog(t), NodeName: accNodeName, Health: health})
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	run := runAgent(a)
	t.Cleanup(func() { run.stop(t) })
	alive := run.alive
	select {
	case <-a.Ready():
	case <-run.done:
		t.Fatalf("agent stopped before its first sync: %v", run.err)
	case <-time.After(hangGuard):
		t.Fatalf("agent: no first sync within %v", hangGuard)
	}

	api := cl.client
	actx, acancel := context.WithTimeout(context.Background(), programGuard)
	defer acancel()
	if _, err := api.CoreV1().Namespaces().Create(actx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: accNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Namespace: %v", err)
	}
	is := func(want netip.Addr) func(netip.Addr) bool { return func(a netip.Addr) bool { return a == want } }

	// 1. ClusterIP: unreachable while the Service has no endpoints.
	svc, err := api.CoreV1().Services(accNamespace).Create(actx, accService(accServiceName, corev1.ServiceTypeClusterIP), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service: %v", err)
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), servicePort)
	if got, err := probe(node, vip, time.Second); err == nil {
		t.Fatalf("ClusterIP %s reached backend %s before the Service had endpoints", vip, got)
	} else {
		t.Logf("ClusterIP %s without endpoints: %v", vip, err)
	}
	nodePort := netip.AddrPortFrom(accNodeIP, uint16(accNodePort))
	if got, err := probe(client, nodePort, time.Second); err == nil {
		t.Fatalf("%s reached backend %s before any Service asked for that NodePort", nodePort, got)
	}

	// 2. An EndpointSlice: the ClusterIP reaches the backend from the node.
	if _, err := api.DiscoveryV1().EndpointSlices(accNamespace).Create(actx, accSlice(accServiceName, accRemote, ""), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create EndpointSlice: %v", err)
	}
	if _, err := waitProbe(node, vip, is(accRemote), hangGuard, alive); err != nil {
		t.Fatalf("ClusterIP after the EndpointSlice: %v", err)
	}
	t.Logf("ClusterIP %s reaches %s", vip, accRemote)

	// 3. The Service made NodePort: a client outside the node reaches it over
	// ext0 (DNAT to the remote backend, SNAT to the node).
	svc, err = api.CoreV1().Services(accNamespace).Get(actx, accServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Service: %v", err)
	}
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = accNodePort
	if _, err := api.CoreV1().Services(accNamespace).Update(actx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("make the Service NodePort: %v", err)
	}
	if _, err := waitProbe(client, nodePort, is(accRemote), hangGuard, alive); err != nil {
		t.Fatalf("NodePort from the client namespace: %v", err)
	}
	t.Logf("NodePort %s reaches %s from %s", nodePort, accRemote, accClientIP)

	// 4. A LoadBalancer Service with externalTrafficPolicy Local and an
	// endpoint on this node: its NodePort, its ingress IP and its health check.
	lb := accService(accLocalName, corev1.ServiceTypeLoadBalancer)
	lb.Spec.Ports[0].NodePort = accLocalNPort
	lb.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	lb, err = api.CoreV1().Services(accNamespace).Create(actx, lb, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create LoadBalancer Service: %v", err)
	}
	if lb.Spec.HealthCheckNodePort == 0 {
		t.Fatal("the apiserver allocated no healthCheckNodePort for a Local LoadBalancer Service")
	}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: accLBIP.String()}}
	if _, err := api.CoreV1().Services(accNamespace).UpdateStatus(actx, lb, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set the load balancer's ingress IP: %v", err)
	}
	// The remote endpoint too: policy Local must never pick it.
	lbSlice := accSlice(accLocalName, accLocal, accNodeName)
	lbSlice.Endpoints = append(lbSlice.Endpoints, accSlice(accLocalName, accRemote, "").Endpoints...)
	if _, err := api.DiscoveryV1().EndpointSlices(accNamespace).Create(actx, lbSlice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create EndpointSlice: %v", err)
	}
	localNP := netip.AddrPortFrom(accNodeIP, uint16(accLocalNPort))
	lbAddr := netip.AddrPortFrom(accLBIP, servicePort)
	for _, dst := range []netip.AddrPort{localNP, lbAddr} {
		if _, err := waitProbe(client, dst, is(accLocal), hangGuard, alive); err != nil {
			t.Fatalf("Local LoadBalancer Service from the client namespace: %v", err)
		}
		// With two backends, 16 connections all on the local one do not
		// happen by chance (1 in 65536).
		for i := range 16 {
			if got, err := probe(client, dst, 10*time.Second); err != nil || got != accLocal {
				t.Fatalf("%s, connection %d: backend %s, %v; want the local backend %s only", dst, i, got, err, accLocal)
			}
		}
		t.Logf("%s reaches only the local backend %s", dst, accLocal)
	}
	hc := netip.AddrPortFrom(accNodeIP, uint16(lb.Spec.HealthCheckNodePort))
	if err := waitHealth(client, hc, http.StatusOK, 1, alive); err != nil {
		t.Fatalf("health check: %v", err)
	}
	t.Logf("health check %s: 200, 1 local endpoint", hc)

	// 5. The Services deleted: everything is unreachable again.
	for _, name := range []string{accServiceName, accLocalName} {
		if err := api.CoreV1().Services(accNamespace).Delete(actx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete Service %s: %v", name, err)
		}
	}
	for _, x := range []struct {
		ns  *netNS
		dst netip.AddrPort
	}{{node, vip}, {client, nodePort}, {client, localNP}, {client, lbAddr}} {
		if err := waitUnreachable(x.ns, x.dst, alive); err != nil {
			t.Fatalf("after deleting the Services: %v", err)
		}
	}
	if err := waitHealthGone(client, hc, alive); err != nil {
		t.Fatalf("after deleting the Services: %v", err)
	}
	t.Log("after deleting the Services: ClusterIP, NodePorts, ingress IP and health check are gone")
}

func accService(name string, typ corev1.ServiceType) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: accNamespace},
		Spec: corev1.ServiceSpec{Type: typ, Ports: []corev1.ServicePort{{
			Name: "tcp", Protocol: corev1.ProtocolTCP, Port: servicePort, TargetPort: intstr.FromInt32(backendPort),
		}}},
	}
}

// accSlice is the EndpointSlice of Service svc: one ready endpoint at addr, on
// node (none when empty).
func accSlice(svc string, addr netip.Addr, node string) *discoveryv1.EndpointSlice {
	ready := true
	portName, port, proto := "tcp", int32(backendPort), corev1.ProtocolTCP
	ep := discoveryv1.Endpoint{Addresses: []string{addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	if node != "" {
		ep.NodeName = &node
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-a", Namespace: accNamespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "kiln-acceptance"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{ep},
	}
}

// accVeth makes a veth pair: name with addr in the node's namespace, eth0 with
// peerAddr (and a default route via gw, when valid) in ns.
func accVeth(t *testing.T, name string, addr netip.Prefix, ns *netNS, peerAddr netip.Prefix, gw netip.Addr) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.fd)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	})
	if err := linkUp(nodeHandle(t), name, addr); err != nil {
		t.Fatalf("node side of %s: %v", name, err)
	}
	h := nsHandle(t, ns)
	if err := linkUp(h, "eth0", peerAddr); err != nil {
		t.Fatalf("%s: %v", ns.name, err)
	}
	if gw.IsValid() {
		if err := h.RouteAdd(&netlink.Route{Gw: gw.AsSlice()}); err != nil {
			t.Fatalf("%s: default route via %s: %v", ns.name, gw, err)
		}
	}
}

func nodeHandle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// waitUnreachable probes dst from ns until a connection fails (refused or
// unreachable). Hang protection only: hangGuard.
func waitUnreachable(ns *netNS, dst netip.AddrPort, alive func() error) error {
	end := time.Now().Add(hangGuard)
	var got netip.Addr
	for time.Now().Before(end) {
		if err := alive(); err != nil {
			return err
		}
		var err error
		if got, err = probe(ns, dst, time.Second); err != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s from %s: still answered by %s after %v", dst, ns.name, got, hangGuard)
}

// healthAnswer is the part of a health-check answer the test reads.
type healthAnswer struct {
	LocalEndpoints int `json:"localEndpoints"`
}

// getHealth sends one GET to the health check at dst from ns.
func getHealth(ns *netNS, dst netip.AddrPort) (int, healthAnswer, error) {
	hc := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
				return dialIn(ns, network, addr, 5*time.Second)
			},
		},
	}
	resp, err := hc.Get("http://" + dst.String() + "/healthz")
	if err != nil {
		return 0, healthAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, healthAnswer{}, err
	}
	var ans healthAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return resp.StatusCode, ans, fmt.Errorf("answer %q: %w", body, err)
	}
	return resp.StatusCode, ans, nil
}

// waitHealth polls the health check until it answers code with local endpoints.
func waitHealth(ns *netNS, dst netip.AddrPort, code, local int, alive func() error) error {
	end := time.Now().Add(hangGuard)
	var last string
	for time.Now().Before(end) {
		if err := alive(); err != nil {
			return err
		}
		got, ans, err := getHealth(ns, dst)
		if err == nil && got == code && ans.LocalEndpoints == local {
			return nil
		}
		last = fmt.Sprintf("status %d, %d local endpoints, %v", got, ans.LocalEndpoints, err)
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("health check %s from %s: want status %d with %d local endpoints, last: %s", dst, ns.name, code, local, last)
}

// waitHealthGone polls the health check until nothing answers on it.
func waitHealthGone(ns *netNS, dst netip.AddrPort, alive func() error) error {
	end := time.Now().Add(hangGuard)
	for time.Now().Before(end) {
		if err := alive(); err != nil {
			return err
		}
		if _, _, err := getHealth(ns, dst); err != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("health check %s from %s: still answering after %v", dst, ns.name, hangGuard)
}

// testLog logs to the test at Info level.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}

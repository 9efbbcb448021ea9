package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A LoadBalancer Service with externalTrafficPolicy Local is programmed with its
// NodePort, ingress IP and local backends, and its health-check node port reaches
// the health server, until it is deleted.
func TestExternalFrontendsAndHealth(t *testing.T) {
	dp := newFakeDatapath()
	health := newFakeHealth()
	h := start(t, fake.NewClientset(), dp, func(c *Config) {
		c.NodeName = "node-a"
		c.Health = health
	})
	lb := service(ns, "lb", []string{"10.96.0.10"}, httpPort)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Spec.Ports[0].NodePort = 30080
	lb.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	lb.Spec.HealthCheckNodePort = 32000
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.1"}}
	onNode := func(a, node string) discoveryv1.Endpoint {
		e := endpoint(a, readyEP)
		e.NodeName = ptr(node)
		return e
	}
	h.create(lb, endpointSlice(ns, "lb-a", "lb", discoveryv1.AddressTypeIPv4, slicePorts,
		onNode("10.0.0.1", "node-a"), onNode("10.0.0.2", "node-b")))

	want := webState("10.96.0.10", "10.0.0.1", "10.0.0.2")
	want.NodePort = 30080
	want.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	want.ExternalPolicy = serviceproxy.PolicyLocal
	want.LocalBackends = backends("10.0.0.1:8080")
	want.HealthCheckNodePort = 32000
	want.Name = "default/lb"
	dp.waitForState(t, []serviceproxy.Service{want})
	// The health server is synced after the datapath, so it may still hold the
	// Service as it was before its EndpointSlice arrived: wait for the whole state.
	health.waitFor(t, "the LoadBalancer Service with its local backend", func(got []serviceproxy.Service) bool {
		return cmp.Equal([]serviceproxy.Service{want}, normalized(got), netipComparers)
	})
	if got := testutil.ToFloat64(h.agent.m.mapEntries.WithLabelValues("frontends")); got != 2 {
		t.Errorf("kiln_proxy_map_entries{map=frontends} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.agent.m.healthPorts); got != 1 {
		t.Errorf("kiln_proxy_health_check_node_ports = %v, want 1", got)
	}

	h.deleteService(ns, "lb")
	dp.waitForState(t, nil)
	health.waitFor(t, "nothing", func(got []serviceproxy.Service) bool { return len(got) == 0 })
	h.assertErrors(nil)
}

// Two Services asking for one externalIP:port: the first keeps it, the second is
// served without it, and gains it when the first is deleted, without the datapath
// refusing the move.
func TestFrontendConflict(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp)
	first, firstSlice := web("first", "10.96.0.10", "10.0.0.1")
	first.Spec.ExternalIPs = []string{"192.0.2.1"}
	h.create(first, firstSlice)
	wantFirst := webState("10.96.0.10", "10.0.0.1")
	wantFirst.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	dp.waitForState(t, []serviceproxy.Service{wantFirst})

	second, secondSlice := web("second", "10.96.0.11", "10.0.0.2")
	second.Spec.ExternalIPs = []string{"192.0.2.2", "192.0.2.1"}
	h.create(second, secondSlice)
	wantSecond := webState("10.96.0.11", "10.0.0.2")
	wantSecond.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	dp.waitForState(t, []serviceproxy.Service{wantFirst, wantSecond})
	if n := h.errorCount(ReasonDuplicateFrontend); n < 1 {
		t.Errorf("kiln_proxy_errors_total{reason=%q} = %v, want at least 1", ReasonDuplicateFrontend, n)
	}

	h.deleteService(ns, "first")
	wantSecond.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
	dp.waitForState(t, []serviceproxy.Service{wantSecond})
	if n := h.errorCount(ReasonDatapath); n != 0 {
		t.Errorf("kiln_proxy_errors_total{reason=%q} = %v, want 0: the move of the frontend was refused", ReasonDatapath, n)
	}
}

package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var netipComparers = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

func TestTranslate(t *testing.T) {
	const ns = "default"
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	http := svcPort("http", tcp, 80, intstr.FromString("web"))
	httpSlicePort := []discoveryv1.EndpointPort{epPort("http", tcp, 8080)}
	withAffinity := func(s *corev1.Service, secs *int32) *corev1.Service {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if secs != nil {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: secs}}
		}
		return s
	}
	local := func(s *corev1.Service) *corev1.Service {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		return s
	}
	onNode := func(e discoveryv1.Endpoint, node string) discoveryv1.Endpoint {
		e.NodeName = ptr(node)
		return e
	}
	svcOf := func(k key, affinity time.Duration, bes ...string) serviceproxy.Service {
		return serviceproxy.Service{ServiceKey: k, Backends: backends(bes...), Affinity: affinity}
	}
	k4 := sk("10.96.0.10:80", serviceproxy.TCP)
	k6 := sk("[fd00::10]:80", serviceproxy.TCP)

	tests := []struct {
		name       string
		svc        *corev1.Service
		slices     []*discoveryv1.EndpointSlice
		nodeName   string
		perService int
		want       []serviceproxy.Service
		wantSkip   string
		wantReason string
	}{
		{
			name: "dual-stack",
			svc:  service(ns, "web", []string{"10.96.0.10", "fd00::10"}, http),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.2", readyEP), endpoint("10.0.0.1", readyEP)),
				endpointSlice(ns, "web-6", "web", v6, httpSlicePort, endpoint("fd00:1::1", readyEP)),
			},
			want: []serviceproxy.Service{
				svcOf(k4, 0, "10.0.0.1:8080", "10.0.0.2:8080"),
				svcOf(k6, 0, "[fd00:1::1]:8080"),
			},
		},
		{
			name: "named target ports resolve through the slice's port names",
			svc: service(ns, "dns", []string{"10.96.0.53"},
				svcPort("dns", udp, 53, intstr.FromString("dns")),
				svcPort("dns-tcp", tcp, 53, intstr.FromString("dns-tcp")),
				svcPort("metrics", tcp, 9153, intstr.FromInt32(9153))),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "dns-a", "dns", v4,
					[]discoveryv1.EndpointPort{epPort("dns", udp, 5353), epPort("dns-tcp", tcp, 5354), epPort("metrics", tcp, 9153)},
					endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{
				svcOf(sk("10.96.0.53:53", serviceproxy.TCP), 0, "10.0.0.1:5354"),
				svcOf(sk("10.96.0.53:53", serviceproxy.UDP), 0, "10.0.0.1:5353"),
				svcOf(sk("10.96.0.53:9153", serviceproxy.TCP), 0, "10.0.0.1:9153"),
			},
		},
		{
			name: "affinity with the default timeout",
			svc:  withAffinity(service(ns, "web", []string{"10.96.0.10"}, http), nil),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 3*time.Hour, "10.0.0.1:8080")},
		},
		{
			name: "affinity with a timeout",
			svc:  withAffinity(service(ns, "web", []string{"10.96.0.10"}, http), ptr[int32](60)),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, time.Minute, "10.0.0.1:8080")},
		},
		{
			name: "ready endpoints only while there are any",
			svc:  service(ns, "web", []string{"10.96.0.10"}, http),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort,
					endpoint("10.0.0.1", readyEP), endpoint("10.0.0.2", notReadyEP),
					endpoint("10.0.0.3", terminatingEP), endpoint("10.0.0.4", cond{})),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080", "10.0.0.4:8080")},
		},
		{
			name: "serving terminating endpoints when none is ready",
			svc:  service(ns, "web", []string{"10.96.0.10"}, http),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort,
					endpoint("10.0.0.2", notReadyEP), endpoint("10.0.0.3", terminatingEP), endpoint("10.0.0.5", goneEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.3:8080")},
		},
		{
			name: "no usable endpoints: no backends",
			svc:  service(ns, "web", []string{"10.96.0.10"}, http),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.2", notReadyEP), endpoint("10.0.0.5", goneEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0)},
		},
		{
			name: "no slices: no backends",
			svc:  service(ns, "web", []string{"10.96.0.10"}, http),
			want: []serviceproxy.Service{svcOf(k4, 0)},
		},
		{
			name: "multiple slices, duplicates across them, a slice port of another name",
			svc:  service(ns, "web", []string{"10.96.0.10"}, http),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-a", "web", v4, httpSlicePort, endpoint("10.0.0.1", readyEP), endpoint("10.0.0.2", readyEP)),
				endpointSlice(ns, "web-b", "web", v4, httpSlicePort, endpoint("10.0.0.2", readyEP), endpoint("10.0.0.3", readyEP)),
				endpointSlice(ns, "web-c", "web", v4, []discoveryv1.EndpointPort{epPort("other", tcp, 9999)}, endpoint("10.0.0.9", readyEP)),
				endpointSlice(ns, "web-d", "web", discoveryv1.AddressTypeFQDN, httpSlicePort, endpoint("example.com", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")},
		},
		{
			name: "unnamed single port",
			svc:  service(ns, "web", []string{"10.96.0.10"}, svcPort("", "", 80, intstr.FromInt32(8080))),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-a", "web", v4, []discoveryv1.EndpointPort{{Port: ptr[int32](8080)}}, endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080")},
		},
		{
			name: "SCTP ports are skipped",
			svc:  service(ns, "web", []string{"10.96.0.10"}, http, svcPort("sctp", corev1.ProtocolSCTP, 90, intstr.FromInt32(90))),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, []discoveryv1.EndpointPort{epPort("http", tcp, 8080), epPort("sctp", corev1.ProtocolSCTP, 90)},
					endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080")},
		},
		{
			name:     "internalTrafficPolicy Local keeps this node's endpoints",
			svc:      local(service(ns, "web", []string{"10.96.0.10"}, http)),
			nodeName: "node-a",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort,
					onNode(endpoint("10.0.0.1", readyEP), "node-a"), onNode(endpoint("10.0.0.2", readyEP), "node-b"), endpoint("10.0.0.3", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080")},
		},
		{
			name:     "IPv4-mapped ClusterIP and endpoint are unmapped",
			svc:      service(ns, "web", []string{"::ffff:10.96.0.10"}, http),
			slices:   []*discoveryv1.EndpointSlice{endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("::ffff:10.0.0.1", readyEP))},
			want:     []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080")},
			nodeName: "",
		},
		{
			name:     "headless",
			svc:      service(ns, "db", []string{"None"}, http),
			slices:   []*discoveryv1.EndpointSlice{endpointSlice(ns, "db-4", "db", v4, httpSlicePort, endpoint("10.0.0.1", readyEP))},
			wantSkip: "headless",
		},
		{
			name: "ExternalName",
			svc: func() *corev1.Service {
				s := service(ns, "ext", nil)
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
				return s
			}(),
			wantSkip: "ExternalName",
		},
		{
			name:     "no ClusterIP yet",
			svc:      service(ns, "web", nil, http),
			wantSkip: "no ClusterIP",
		},
		{
			name:       "malformed endpoint address",
			svc:        service(ns, "web", []string{"10.96.0.10"}, http),
			slices:     []*discoveryv1.EndpointSlice{endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.300", readyEP))},
			wantReason: ReasonInvalidEndpoint,
		},
		{
			name:       "IPv6 address in an IPv4 slice",
			svc:        service(ns, "web", []string{"10.96.0.10"}, http),
			slices:     []*discoveryv1.EndpointSlice{endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("fd00::1", readyEP))},
			wantReason: ReasonInvalidEndpoint,
		},
		{
			name:       "endpoint port out of range",
			svc:        service(ns, "web", []string{"10.96.0.10"}, http),
			slices:     []*discoveryv1.EndpointSlice{endpointSlice(ns, "web-4", "web", v4, []discoveryv1.EndpointPort{epPort("http", tcp, 70000)}, endpoint("10.0.0.1", readyEP))},
			wantReason: ReasonInvalidEndpoint,
		},
		{
			name:       "malformed ClusterIP",
			svc:        service(ns, "web", []string{"10.96.0"}, http),
			wantReason: ReasonInvalidService,
		},
		{
			name:       "more backends than a service holds",
			svc:        service(ns, "web", []string{"10.96.0.10"}, http),
			perService: 2,
			slices: []*discoveryv1.EndpointSlice{endpointSlice(ns, "web-4", "web", v4, httpSlicePort,
				endpoint("10.0.0.1", readyEP), endpoint("10.0.0.2", readyEP), endpoint("10.0.0.3", readyEP))},
			wantReason: ReasonTooManyBackends,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := translate(tc.svc, tc.slices, translateOptions{nodeName: tc.nodeName, perService: tc.perService})
			gotReason := ""
			if err != nil {
				gotReason = err.reason
			}
			if gotReason != tc.wantReason {
				t.Fatalf("translate(%s) error = %v, want reason %q", tc.name, err, tc.wantReason)
			}
			if err != nil {
				if tr.services != nil {
					t.Errorf("translate(%s) failed with %v but returned services %v", tc.name, err, tr.services)
				}
				return
			}
			if tr.skipped != tc.wantSkip {
				t.Errorf("translate(%s) skipped = %q, want %q", tc.name, tr.skipped, tc.wantSkip)
			}
			if tc.wantSkip != "" {
				if len(tr.services) != 0 {
					t.Errorf("translate(%s) skipped the service but returned %v", tc.name, tr.services)
				}
				return
			}
			if diff := cmp.Diff(tc.want, normalized(tr.services), netipComparers); diff != "" {
				t.Errorf("translate(%s) services (-want +got):\n%s", tc.name, diff)
			}
			var keys []key
			for _, s := range tr.services {
				keys = append(keys, s.ServiceKey)
			}
			if diff := cmp.Diff(keys, tr.keys, netipComparers); diff != "" {
				t.Errorf("translate(%s) keys do not match the services (-services +keys):\n%s", tc.name, diff)
			}
		})
	}
}

// A Service whose endpoints are broken still names its frontends, so that it can
// hold them.
func TestTranslateFailureKeepsKeys(t *testing.T) {
	svc := service("default", "web", []string{"10.96.0.10"}, svcPort("http", corev1.ProtocolTCP, 80, intstr.FromInt32(8080)))
	bad := endpointSlice("default", "web-4", "web", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{epPort("http", corev1.ProtocolTCP, 8080)}, endpoint("bogus", readyEP))
	tr, err := translate(svc, []*discoveryv1.EndpointSlice{bad}, translateOptions{})
	if err == nil {
		t.Fatal("translate with a malformed address succeeded")
	}
	if diff := cmp.Diff([]key{sk("10.96.0.10:80", serviceproxy.TCP)}, tr.keys, netipComparers); diff != "" {
		t.Errorf("keys of a failed translation (-want +got):\n%s", diff)
	}
}

package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var netipComparers = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
}

// stateOptions compare datapath states: Name is for logs only.
var stateOptions = cmp.Options{netipComparers, cmpopts.IgnoreFields(serviceproxy.Service{}, "Name")}

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
	// exposed makes s of type typ with NodePort np on its first port.
	exposed := func(s *corev1.Service, typ corev1.ServiceType, np int32) *corev1.Service {
		s.Spec.Type = typ
		s.Spec.Ports[0].NodePort = np
		return s
	}
	withExternal := func(s *corev1.Service, ips ...string) *corev1.Service {
		s.Spec.ExternalIPs = ips
		return s
	}
	withIngress := func(s *corev1.Service, ing ...corev1.LoadBalancerIngress) *corev1.Service {
		s.Status.LoadBalancer.Ingress = ing
		return s
	}
	localExternal := func(s *corev1.Service, hc int32) *corev1.Service {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = hc
		return s
	}
	addrs := func(as ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range as {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	ext := func(s serviceproxy.Service, f func(*serviceproxy.Service)) serviceproxy.Service {
		f(&s)
		return s
	}
	proxyMode := corev1.LoadBalancerIPModeProxy
	vipMode := corev1.LoadBalancerIPModeVIP

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
			want: []serviceproxy.Service{ext(svcOf(k4, 0, "10.0.0.1:8080"), func(s *serviceproxy.Service) {
				s.LocalBackends = backends("10.0.0.1:8080")
			})},
		},
		{
			name:     "IPv4-mapped ClusterIP and endpoint are unmapped",
			svc:      service(ns, "web", []string{"::ffff:10.96.0.10"}, http),
			slices:   []*discoveryv1.EndpointSlice{endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("::ffff:10.0.0.1", readyEP))},
			want:     []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080")},
			nodeName: "",
		},
		{
			name: "NodePort and externalIPs per family",
			svc: withExternal(exposed(service(ns, "web", []string{"10.96.0.10", "fd00::10"}, http), corev1.ServiceTypeNodePort, 30080),
				"192.0.2.2", "2001:db8::1", "192.0.2.1", "not-an-ip", "::ffff:192.0.2.3"),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.1", readyEP)),
				endpointSlice(ns, "web-6", "web", v6, httpSlicePort, endpoint("fd00:1::1", readyEP)),
			},
			want: []serviceproxy.Service{
				ext(svcOf(k4, 0, "10.0.0.1:8080"), func(s *serviceproxy.Service) {
					s.NodePort, s.ExternalIPs = 30080, addrs("192.0.2.1", "192.0.2.2", "192.0.2.3")
				}),
				ext(svcOf(k6, 0, "[fd00:1::1]:8080"), func(s *serviceproxy.Service) {
					s.NodePort, s.ExternalIPs = 30080, addrs("2001:db8::1")
				}),
			},
		},
		{
			name: "LoadBalancer, externalTrafficPolicy Local, health check, local backends",
			svc: withIngress(localExternal(exposed(service(ns, "web", []string{"10.96.0.10"}, http), corev1.ServiceTypeLoadBalancer, 30080), 32000),
				corev1.LoadBalancerIngress{IP: "203.0.113.1"},
				corev1.LoadBalancerIngress{IP: "203.0.113.2", IPMode: &vipMode},
				corev1.LoadBalancerIngress{IP: "203.0.113.3", IPMode: &proxyMode},
				corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
				corev1.LoadBalancerIngress{IP: "2001:db8::9"}),
			nodeName: "node-a",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort,
					onNode(endpoint("10.0.0.1", readyEP), "node-a"), onNode(endpoint("10.0.0.2", readyEP), "node-b"),
					onNode(endpoint("10.0.0.3", terminatingEP), "node-a"), endpoint("10.0.0.4", readyEP)),
			},
			want: []serviceproxy.Service{
				ext(svcOf(k4, 0, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.4:8080"), func(s *serviceproxy.Service) {
					s.NodePort, s.LoadBalancerIPs = 30080, addrs("203.0.113.1", "203.0.113.2")
					s.ExternalPolicy, s.HealthCheckNodePort = serviceproxy.PolicyLocal, 32000
					s.LocalBackends = backends("10.0.0.1:8080")
				}),
			},
		},
		{
			name: "LoadBalancer without node ports, externalTrafficPolicy Cluster",
			svc: withIngress(exposed(service(ns, "web", []string{"10.96.0.10"}, http), corev1.ServiceTypeLoadBalancer, 0),
				corev1.LoadBalancerIngress{IP: "203.0.113.1"}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{
				ext(svcOf(k4, 0, "10.0.0.1:8080"), func(s *serviceproxy.Service) { s.LoadBalancerIPs = addrs("203.0.113.1") }),
			},
		},
		{
			name: "ClusterIP: node port, ingress IPs, Local policy and health check are not served",
			svc: withIngress(localExternal(exposed(service(ns, "web", []string{"10.96.0.10"}, http), corev1.ServiceTypeClusterIP, 30080), 32000),
				corev1.LoadBalancerIngress{IP: "203.0.113.1"}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, endpoint("10.0.0.1", readyEP)),
			},
			want: []serviceproxy.Service{svcOf(k4, 0, "10.0.0.1:8080")},
		},
		{
			name:     "ClusterIP with externalIPs and Local policy; local backends among the terminating ones",
			svc:      localExternal(withExternal(service(ns, "web", []string{"10.96.0.10"}, http), "192.0.2.1"), 0),
			nodeName: "node-a",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort,
					onNode(endpoint("10.0.0.1", terminatingEP), "node-a"), onNode(endpoint("10.0.0.2", terminatingEP), "node-b")),
			},
			want: []serviceproxy.Service{
				ext(svcOf(k4, 0, "10.0.0.1:8080", "10.0.0.2:8080"), func(s *serviceproxy.Service) {
					s.ExternalIPs, s.ExternalPolicy = addrs("192.0.2.1"), serviceproxy.PolicyLocal
					s.LocalBackends = backends("10.0.0.1:8080")
				}),
			},
		},
		{
			name: "no node name: no local backends",
			svc:  exposed(service(ns, "web", []string{"10.96.0.10"}, http), corev1.ServiceTypeNodePort, 30080),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice(ns, "web-4", "web", v4, httpSlicePort, onNode(endpoint("10.0.0.1", readyEP), "node-a")),
			},
			want: []serviceproxy.Service{
				ext(svcOf(k4, 0, "10.0.0.1:8080"), func(s *serviceproxy.Service) { s.NodePort = 30080 }),
			},
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
			for i := range tc.want {
				if tc.want[i].Name == "" {
					tc.want[i].Name = tc.svc.Namespace + "/" + tc.svc.Name
				}
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

func TestWithoutFrontend(t *testing.T) {
	base := serviceproxy.Service{
		ServiceKey:      sk("10.96.0.10:80", serviceproxy.TCP),
		NodePort:        30080,
		ExternalIPs:     []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")},
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("203.0.113.1")},
		ExternalPolicy:  serviceproxy.PolicyLocal,
	}
	tests := []struct {
		name string
		drop []key
		want []key
	}{
		{"node port", []key{sk("0.0.0.0:30080", serviceproxy.TCP)},
			[]key{sk("192.0.2.1:80", serviceproxy.TCP), sk("192.0.2.2:80", serviceproxy.TCP), sk("203.0.113.1:80", serviceproxy.TCP)}},
		{"an externalIP", []key{sk("192.0.2.1:80", serviceproxy.TCP)},
			[]key{sk("0.0.0.0:30080", serviceproxy.TCP), sk("192.0.2.2:80", serviceproxy.TCP), sk("203.0.113.1:80", serviceproxy.TCP)}},
		{"another port's frontend is not this one", []key{sk("192.0.2.1:81", serviceproxy.TCP)},
			[]key{sk("0.0.0.0:30080", serviceproxy.TCP), sk("192.0.2.1:80", serviceproxy.TCP), sk("192.0.2.2:80", serviceproxy.TCP), sk("203.0.113.1:80", serviceproxy.TCP)}},
		{"all", []key{sk("0.0.0.0:30080", serviceproxy.TCP), sk("192.0.2.1:80", serviceproxy.TCP), sk("192.0.2.2:80", serviceproxy.TCP), sk("203.0.113.1:80", serviceproxy.TCP)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			for _, f := range tc.drop {
				s = withoutFrontend(s, f)
			}
			if diff := cmp.Diff(tc.want, frontendKeys(s), netipComparers); diff != "" {
				t.Errorf("frontends after dropping %v (-want +got):\n%s", tc.drop, diff)
			}
			if len(tc.want) == 0 && s.ExternalPolicy != serviceproxy.PolicyCluster {
				t.Errorf("a service without frontends keeps policy %v", s.ExternalPolicy)
			}
			if len(base.ExternalIPs) != 2 {
				t.Errorf("withoutFrontend changed its argument's externalIPs: %v", base.ExternalIPs)
			}
		})
	}
}

package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/kiln-os/kiln/networking/serviceproxy"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Reasons label kiln_proxy_errors_total.
const (
	ReasonInvalidService    = "invalid_service"    // a ClusterIP that does not parse
	ReasonInvalidEndpoint   = "invalid_endpoint"   // a malformed address or port in an EndpointSlice
	ReasonTooManyBackends   = "too_many_backends"  // more backends than Limits.PerService
	ReasonDuplicateFrontend = "duplicate_frontend" // a ClusterIP:port/proto another Service has
	ReasonUnknownService    = "unknown_service"    // an EndpointSlice whose Service does not exist
	ReasonMapFull           = "map_full"           // no room in a datapath map for the Service
	ReasonDatapath          = "datapath"           // a map write failed, or another refusal of the datapath
	ReasonHealthCheck       = "health_check"       // a health-check node port that could not be opened
)

var reasons = []string{ReasonInvalidService, ReasonInvalidEndpoint, ReasonTooManyBackends,
	ReasonDuplicateFrontend, ReasonUnknownService, ReasonMapFull, ReasonDatapath, ReasonHealthCheck}

// refusalReason is the metric label of the datapath's refusal of one Service.
func refusalReason(r serviceproxy.Refusal) string {
	switch r {
	case serviceproxy.RefusedFull:
		return ReasonMapFull
	case serviceproxy.RefusedConflict:
		return ReasonDuplicateFrontend
	case serviceproxy.RefusedInvalid:
		return ReasonInvalidService
	}
	return ReasonDatapath
}

// translateError is a Service that cannot be programmed as it stands.
type translateError struct {
	reason string
	err    error
}

func (e *translateError) Error() string { return e.err.Error() }
func (e *translateError) Unwrap() error { return e.err }

func failf(reason, format string, args ...any) *translateError {
	return &translateError{reason: reason, err: fmt.Errorf(format, args...)}
}

// defaultAffinityTimeout is Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds.
const defaultAffinityTimeout = 10800 * time.Second

type translateOptions struct {
	nodeName   string // for internalTrafficPolicy Local and LocalBackends; empty: no endpoint is local
	perService int    // backends one Service port may have; 0: unchecked
	log        *slog.Logger
}

// translation is what one Kubernetes Service asks of the datapath.
type translation struct {
	// keys are the Service's frontends. They are set whenever the spec itself
	// is valid, even when err is not nil, so a failing Service can hold them.
	keys     []serviceproxy.ServiceKey
	services []serviceproxy.Service // one per key, backends sorted; nil when err is set
	skipped  string                 // why the Service is not programmed at all (headless, ExternalName)
}

// translate turns a Service and its EndpointSlices into datapath Services. The
// slices must all belong to svc; their order does not matter.
func translate(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, opts translateOptions) (translation, *translateError) {
	var tr translation
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		tr.skipped = "ExternalName"
		return tr, nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	if len(ips) == 0 {
		tr.skipped = "no ClusterIP"
		return tr, nil
	}
	if ips[0] == corev1.ClusterIPNone {
		tr.skipped = "headless"
		return tr, nil
	}
	var addrs []netip.Addr
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return tr, failf(ReasonInvalidService, "clusterIP %q is not an IP address", s)
		}
		addrs = append(addrs, a.Unmap())
	}

	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	local := opts.nodeName != "" && svc.Spec.InternalTrafficPolicy != nil &&
		*svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal

	type portKey struct {
		name  string
		proto corev1.Protocol
	}
	var ports []portKey
	var keyPorts []int // the index in svc.Spec.Ports of each of tr.keys
	for i, sp := range svc.Spec.Ports {
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
			if opts.log != nil {
				opts.log.Info("skipping service port: only TCP and UDP are balanced", "port", sp.Port, "protocol", proto)
			}
			continue
		}
		if sp.Port <= 0 || sp.Port > 65535 {
			return tr, failf(ReasonInvalidService, "port %d is out of range", sp.Port)
		}
		for _, a := range addrs {
			tr.keys = append(tr.keys, serviceproxy.ServiceKey{Addr: a, Port: uint16(sp.Port), Proto: protoOf(proto)})
			keyPorts = append(keyPorts, i)
		}
		ports = append(ports, portKey{sp.Name, proto})
	}

	// backends[family][port] are the ready and the serving-terminating endpoints,
	// and which of them are on this node.
	type cands struct {
		ready, terminating []netip.AddrPort
		local              map[netip.AddrPort]bool
	}
	type famPort struct {
		v4   bool
		port portKey
	}
	found := make(map[famPort]*cands)
	for _, es := range eps {
		var v4 bool
		switch es.AddressType {
		case discoveryv1.AddressTypeIPv4:
			v4 = true
		case discoveryv1.AddressTypeIPv6:
		default:
			continue // FQDN slices name no address to balance to
		}
		for _, p := range es.Ports {
			name, proto := "", corev1.ProtocolTCP
			if p.Name != nil {
				name = *p.Name
			}
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			pk := portKey{name, proto}
			if !slices.Contains(ports, pk) || p.Port == nil {
				continue
			}
			if *p.Port <= 0 || *p.Port > 65535 {
				return tr, failf(ReasonInvalidEndpoint, "EndpointSlice %s: port %q is %d, out of range", es.Name, name, *p.Port)
			}
			c := found[famPort{v4, pk}]
			if c == nil {
				c = new(cands)
				found[famPort{v4, pk}] = c
			}
			for _, ep := range es.Endpoints {
				if len(ep.Addresses) == 0 {
					continue
				}
				a, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil || a.Zone() != "" || a.Unmap().Is4() != v4 {
					return tr, failf(ReasonInvalidEndpoint, "EndpointSlice %s: %q is not an %s address", es.Name, ep.Addresses[0], es.AddressType)
				}
				onNode := opts.nodeName != "" && ep.NodeName != nil && *ep.NodeName == opts.nodeName
				if local && !onNode {
					continue
				}
				be := netip.AddrPortFrom(a.Unmap(), uint16(*p.Port))
				if onNode {
					if c.local == nil {
						c.local = make(map[netip.AddrPort]bool)
					}
					c.local[be] = true
				}
				ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
				serving := ep.Conditions.Serving == nil || *ep.Conditions.Serving
				terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
				switch {
				case ready:
					c.ready = append(c.ready, be)
				case serving && terminating:
					c.terminating = append(c.terminating, be)
				}
			}
		}
	}

	ext := externalOf(svc, opts)
	tr.services = make([]serviceproxy.Service, 0, len(tr.keys))
	for i, k := range tr.keys {
		sp := svc.Spec.Ports[keyPorts[i]]
		pk := portKey{sp.Name, sp.Protocol}
		if pk.proto == "" {
			pk.proto = corev1.ProtocolTCP
		}
		var bes, local []netip.AddrPort
		if c := found[famPort{k.Addr.Is4(), pk}]; c != nil {
			bes = c.ready
			if len(bes) == 0 {
				bes = c.terminating
			}
			for _, b := range bes {
				if c.local[b] {
					local = append(local, b)
				}
			}
		}
		bes = sortedUnique(bes)
		if opts.perService > 0 && len(bes) > opts.perService {
			tr.services = nil
			return tr, failf(ReasonTooManyBackends, "%s has %d backends, more than the %d a service holds", k, len(bes), opts.perService)
		}
		s := serviceproxy.Service{ServiceKey: k, Backends: bes, Affinity: affinity, Name: svc.Namespace + "/" + svc.Name}
		if len(local) > 0 {
			s.LocalBackends = sortedUnique(local)
		}
		ext.apply(&s, sp)
		tr.services = append(tr.services, s)
	}
	return tr, nil
}

// external is how a Kubernetes Service is reached from outside the node, for all
// its ports and both families.
type external struct {
	nodePorts   bool         // spec.ports[].nodePort is served (NodePort and LoadBalancer)
	externalIPs []netip.Addr // spec.externalIPs, sorted
	lbIPs       []netip.Addr // status.loadBalancer.ingress[].ip, sorted
	local       bool         // externalTrafficPolicy Local
	healthPort  uint16       // spec.healthCheckNodePort
}

// externalOf reads the frontends of svc as kube-proxy does: NodePorts for the
// NodePort and LoadBalancer types (a LoadBalancer with
// allocateLoadBalancerNodePorts false has none), externalIPs for any type, and the
// load balancer's ingress IPs for the LoadBalancer type, except those with ipMode
// Proxy, whose load balancer does not send the IP to the node. Addresses that do
// not parse are logged and skipped: the apiserver validates them, and one bad
// externalIP must not take the Service's other frontends away.
func externalOf(svc *corev1.Service, opts translateOptions) external {
	var e external
	lb := svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	e.nodePorts = lb || svc.Spec.Type == corev1.ServiceTypeNodePort
	bad := func(what, s string) {
		if opts.log != nil {
			opts.log.Warn("skipping an address that does not parse", "field", what, "address", s)
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.Unmap().IsUnspecified() {
			bad("spec.externalIPs", s)
			continue
		}
		e.externalIPs = append(e.externalIPs, a.Unmap())
	}
	if lb {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
				continue
			}
			a, err := netip.ParseAddr(ing.IP)
			if err != nil || a.Zone() != "" || a.Unmap().IsUnspecified() {
				bad("status.loadBalancer.ingress[].ip", ing.IP)
				continue
			}
			e.lbIPs = append(e.lbIPs, a.Unmap())
		}
	}
	e.externalIPs, e.lbIPs = sortedAddrs(e.externalIPs), sortedAddrs(e.lbIPs)
	e.local = svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		(e.nodePorts || len(e.externalIPs) > 0 || len(e.lbIPs) > 0)
	if lb && e.local && svc.Spec.HealthCheckNodePort > 0 && svc.Spec.HealthCheckNodePort <= 65535 {
		e.healthPort = uint16(svc.Spec.HealthCheckNodePort)
	}
	return e
}

// apply sets the frontends of s, one port of one family of the Service.
func (e external) apply(s *serviceproxy.Service, sp corev1.ServicePort) {
	if e.nodePorts && sp.NodePort > 0 && sp.NodePort <= 65535 {
		s.NodePort = uint16(sp.NodePort)
	}
	s.ExternalIPs = ofFamily(e.externalIPs, s.Addr.Is4())
	s.LoadBalancerIPs = ofFamily(e.lbIPs, s.Addr.Is4())
	if e.local {
		s.ExternalPolicy = serviceproxy.PolicyLocal
	}
	s.HealthCheckNodePort = e.healthPort
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	if len(as) == 0 {
		return nil
	}
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(as)
}

func ofFamily(as []netip.Addr, v4 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if a.Is4() == v4 {
			out = append(out, a)
		}
	}
	return out
}

// frontendKeys are the frontends map keys s asks for: a NodePort's address is the
// unspecified one of its family, as in the datapath.
func frontendKeys(s serviceproxy.Service) []key {
	var out []key
	if s.NodePort != 0 {
		any := netip.IPv4Unspecified()
		if !s.Addr.Is4() {
			any = netip.IPv6Unspecified()
		}
		out = append(out, key{Addr: any, Port: s.NodePort, Proto: s.Proto})
	}
	for _, a := range s.ExternalIPs {
		out = append(out, key{Addr: a, Port: s.Port, Proto: s.Proto})
	}
	for _, a := range s.LoadBalancerIPs {
		if !slices.Contains(s.ExternalIPs, a) {
			out = append(out, key{Addr: a, Port: s.Port, Proto: s.Proto})
		}
	}
	return out
}

// withoutFrontend returns s without the frontend f.
func withoutFrontend(s serviceproxy.Service, f key) serviceproxy.Service {
	if s.NodePort == f.Port && f.Addr.IsUnspecified() {
		s.NodePort = 0
	}
	drop := func(as []netip.Addr) []netip.Addr {
		if f.Port != s.Port || !slices.Contains(as, f.Addr) {
			return as
		}
		return slices.DeleteFunc(slices.Clone(as), func(a netip.Addr) bool { return a == f.Addr })
	}
	s.ExternalIPs, s.LoadBalancerIPs = drop(s.ExternalIPs), drop(s.LoadBalancerIPs)
	if s.NodePort == 0 && len(s.ExternalIPs) == 0 && len(s.LoadBalancerIPs) == 0 {
		s.ExternalPolicy = serviceproxy.PolicyCluster
	}
	return s
}

func protoOf(p corev1.Protocol) serviceproxy.Proto {
	if p == corev1.ProtocolUDP {
		return serviceproxy.UDP
	}
	return serviceproxy.TCP
}

func sortedUnique(bes []netip.AddrPort) []netip.AddrPort {
	if len(bes) == 0 {
		return []netip.AddrPort{}
	}
	bes = slices.Clone(bes)
	slices.SortFunc(bes, netip.AddrPort.Compare)
	return slices.Compact(bes)
}

// sameService reports whether a and b program the same datapath state, the order
// of lists aside. HealthCheckNodePort and Name are not in the maps: they are fed to
// the health server from the desired state and are not compared.
func sameService(a, b serviceproxy.Service) bool {
	if a.ServiceKey != b.ServiceKey || a.Affinity != b.Affinity || len(a.Backends) != len(b.Backends) ||
		a.NodePort != b.NodePort || a.ExternalPolicy != b.ExternalPolicy ||
		len(a.ExternalIPs) != len(b.ExternalIPs) || len(a.LoadBalancerIPs) != len(b.LoadBalancerIPs) ||
		len(a.LocalBackends) != len(b.LocalBackends) {
		return false
	}
	return sameAddrPorts(a.Backends, b.Backends) && sameAddrPorts(a.LocalBackends, b.LocalBackends) &&
		sameAddrs(a.ExternalIPs, b.ExternalIPs) && sameAddrs(a.LoadBalancerIPs, b.LoadBalancerIPs)
}

func sameAddrPorts(a, b []netip.AddrPort) bool {
	return slices.Equal(a, b) || slices.Equal(sortedUnique(a), sortedUnique(b))
}

func sameAddrs(a, b []netip.Addr) bool {
	return slices.Equal(a, b) || slices.Equal(sortedAddrs(slices.Clone(a)), sortedAddrs(slices.Clone(b)))
}

// addsFrontend reports whether want serves a frontend that had does not: such an
// upsert can collide in the datapath with the Service that frees the frontend in
// the same Update, so it goes in a second one.
func addsFrontend(want, had serviceproxy.Service) bool {
	fes := frontendKeys(want)
	if len(fes) == 0 {
		return false
	}
	old := frontendKeys(had)
	for _, f := range fes {
		if !slices.Contains(old, f) {
			return true
		}
	}
	return false
}

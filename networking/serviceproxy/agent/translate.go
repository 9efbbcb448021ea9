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
	ReasonDatapath          = "datapath"           // the datapath refused the Service (a full map)
)

var reasons = []string{ReasonInvalidService, ReasonInvalidEndpoint, ReasonTooManyBackends,
	ReasonDuplicateFrontend, ReasonUnknownService, ReasonDatapath}

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
	nodeName   string // for internalTrafficPolicy Local; empty: Local is treated as Cluster
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
	var keyPorts []portKey // the port of each of tr.keys
	for _, sp := range svc.Spec.Ports {
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
			keyPorts = append(keyPorts, portKey{sp.Name, proto})
		}
		ports = append(ports, portKey{sp.Name, proto})
	}

	// backends[family][port] are the ready and the serving-terminating endpoints.
	type cands struct{ ready, terminating []netip.AddrPort }
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
				if local && (ep.NodeName == nil || *ep.NodeName != opts.nodeName) {
					continue
				}
				be := netip.AddrPortFrom(a.Unmap(), uint16(*p.Port))
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

	tr.services = make([]serviceproxy.Service, 0, len(tr.keys))
	for i, k := range tr.keys {
		pk := keyPorts[i]
		var bes []netip.AddrPort
		if c := found[famPort{k.Addr.Is4(), pk}]; c != nil {
			bes = c.ready
			if len(bes) == 0 {
				bes = c.terminating
			}
		}
		bes = sortedUnique(bes)
		if opts.perService > 0 && len(bes) > opts.perService {
			tr.services = nil
			return tr, failf(ReasonTooManyBackends, "%s has %d backends, more than the %d a service holds", k, len(bes), opts.perService)
		}
		tr.services = append(tr.services, serviceproxy.Service{ServiceKey: k, Backends: bes, Affinity: affinity})
	}
	return tr, nil
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

// sameService reports whether a and b program the same state, backend order aside.
func sameService(a, b serviceproxy.Service) bool {
	if a.ServiceKey != b.ServiceKey || a.Affinity != b.Affinity || len(a.Backends) != len(b.Backends) {
		return false
	}
	if slices.Equal(a.Backends, b.Backends) {
		return true
	}
	return slices.Equal(sortedUnique(a.Backends), sortedUnique(b.Backends))
}

package serviceproxy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Proto is an IP protocol number a Service port uses.
type Proto uint8

// The protocols the datapath balances. SCTP is left to the kernel.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ServiceKey names one port of one ClusterIP: the unit the datapath balances.
type ServiceKey struct {
	Addr  netip.Addr // an IPv4-mapped IPv6 address is taken as the IPv4 address
	Port  uint16
	Proto Proto
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), k.Proto)
}

// Service is the desired state of one ServiceKey.
type Service struct {
	ServiceKey
	// Backends are the ready endpoints, of the Service's address family. None
	// makes connections to the Service fail with ECONNREFUSED. Duplicates are
	// ignored.
	Backends []netip.AddrPort
	// Affinity, when not zero, is the sessionAffinity ClientIP timeout: a client
	// (a network namespace: a pod, or the host) keeps its backend while it comes
	// back within this time. Rounded up to whole seconds. It holds for the
	// frontends below too, where the client is the source address.
	Affinity time.Duration

	// The fields below describe how the Service is reached from outside the
	// node: the frontends that the TCX programs on the node's external links
	// (Config.ExternalLinks) translate to Backends. They use the ClusterIP's
	// protocol, family and backends. A zero value programs none. IPv4 and
	// IPv6 are both served; an IPv6 packet is translated when its next header
	// is TCP or UDP (one with extension headers passes as it is), and SNAT
	// needs a global IPv6 address on the external link it came in on.

	// NodePort is spec.ports[].nodePort: served on every node address
	// (ExternalLink.Addrs) of the Service's family. Zero for none.
	NodePort uint16
	// ExternalIPs are spec.externalIPs, served on ServiceKey.Port.
	ExternalIPs []netip.Addr
	// LoadBalancerIPs are the status.loadBalancer.ingress[].ip addresses,
	// served on ServiceKey.Port.
	LoadBalancerIPs []netip.Addr
	// ExternalPolicy is spec.externalTrafficPolicy for the frontends above.
	ExternalPolicy TrafficPolicy
	// LocalBackends lists which of Backends run on this node (the
	// EndpointSlice endpoint's nodeName is this node's). Traffic to a local
	// backend is never SNATed; with PolicyLocal the frontends use only these.
	// Entries not in Backends are an error. Locality belongs to the backend
	// address: Services that share a backend must agree on it.
	LocalBackends []netip.AddrPort
	// HealthCheckNodePort is spec.healthCheckNodePort of a PolicyLocal
	// LoadBalancer Service: HealthServer answers on it. It is not programmed
	// into the maps.
	HealthCheckNodePort uint16
	// Name is "namespace/name", for logs and health-check answers only.
	Name string
}

// TrafficPolicy is a Service's externalTrafficPolicy.
type TrafficPolicy uint8

const (
	// PolicyCluster spreads frontend traffic over all backends; the client's
	// packets to a backend on another node are SNATed to the node's address so
	// that the replies come back through this node.
	PolicyCluster TrafficPolicy = iota
	// PolicyLocal uses only the backends on this node and keeps the client's
	// address; with none, the node drops the traffic (and its health check
	// answers 503, so a load balancer stops sending it here).
	PolicyLocal
)

func (p TrafficPolicy) String() string {
	switch p {
	case PolicyCluster:
		return "Cluster"
	case PolicyLocal:
		return "Local"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// Limits size the maps. Changing them for a pinned datapath needs Remove first.
type Limits struct {
	Services        uint32 // service ports (ServiceKeys)
	Backends        uint32 // distinct backend address:port pairs
	Slots           uint32 // sum over services of their backend counts
	PerService      uint32 // backends of one service
	ReverseNAT      uint32 // LRU: (unconnected UDP socket, backend) pairs remembered for recvmsg/getpeername
	AffinityEntries uint32 // LRU: (client netns, service) pairs, and (client address, frontend) pairs
	Frontends       uint32 // NodePorts, externalIPs and LoadBalancer IPs, each with each port
	Conntrack       uint32 // LRU: two entries per IPv4 connection through a frontend
	Conntrack6      uint32 // LRU: the same for IPv6 (136 bytes an entry against 88)
}

// DefaultLimits fit a cluster of tens of thousands of Services on a small node: the
// hash maps are preallocated, and take about 50 MiB of kernel memory at these sizes
// (half of it conntrack for 131,072 IPv4 and 32,768 IPv6 connections through
// frontends: IPv6 NodePort traffic is the smaller part on the clusters Kiln runs).
var DefaultLimits = Limits{
	Services:        16384,
	Backends:        65536,
	Slots:           131072,
	PerService:      4096,
	ReverseNAT:      131072,
	AffinityEntries: 65536,
	Frontends:       16384,
	Conntrack:       262144,
	Conntrack6:      65536,
}

// Flags in the maps, as bpf/common.h and bpf/tc.c define them.
const (
	flagAffinity   = 1 << 0 // SVC_F_AFFINITY, FE_F_AFFINITY
	feFlagLocal    = 1 << 1 // FE_F_LOCAL
	feFlagNodePort = 1 << 2 // FE_F_NODEPORT
	feFlagExternal = 1 << 3 // FE_F_EXTERNAL_IP
	feFlagLB       = 1 << 4 // FE_F_LB_IP
	feFlagMaglev   = 1 << 5 // FE_F_MAGLEV
	beFlagLocal    = 1 << 0 // BE_F_LOCAL
)

// inlineSlots is INLINE_SLOTS (bpf/common.h): the first slots of a slot table
// are in the service's or frontend's value, the others in the slots map.
const inlineSlots = 4

// frontend is one key of the frontends map that a Service owns.
type frontend struct {
	key  ServiceKey // a NodePort's address is the unspecified one of its family
	kind uint32     // feFlagNodePort, feFlagExternal or feFlagLB
}

// frontends lists what a normalized Service serves on the external links.
func (s Service) frontends() []frontend {
	var out []frontend
	if s.NodePort != 0 {
		any := netip.IPv4Unspecified()
		if s.Addr.Is6() {
			any = netip.IPv6Unspecified()
		}
		out = append(out, frontend{ServiceKey{any, s.NodePort, s.Proto}, feFlagNodePort})
	}
	for _, a := range s.ExternalIPs {
		out = append(out, frontend{ServiceKey{a, s.Port, s.Proto}, feFlagExternal})
	}
	for _, a := range s.LoadBalancerIPs {
		out = append(out, frontend{ServiceKey{a, s.Port, s.Proto}, feFlagLB})
	}
	return out
}

// usesLocalSlots reports whether the Service's frontends balance over a slot
// table of their own, which holds only the local backends.
func (s Service) usesLocalSlots() bool {
	return s.ExternalPolicy == PolicyLocal && (s.NodePort != 0 || len(s.ExternalIPs) > 0 || len(s.LoadBalancerIPs) > 0)
}

// normalize checks s and returns it with the address unmapped, backends unmapped and
// deduplicated (first occurrence kept), for programming.
func (s Service) normalize(perService uint32) (Service, error) {
	err := s.normalizeInPlace(perService, nil)
	return s, err
}

// normalizeInPlace is normalize on s itself: a Service is large enough that the
// copies of a by-value method chain show when 10,000 of them are programmed.
// Backends gets a new array, buf's when it has room (buf is empty); the other
// slices are new when they change.
func (s *Service) normalizeInPlace(perService uint32, buf []netip.AddrPort) error {
	s.Addr = s.Addr.Unmap()
	if !s.Addr.IsValid() {
		return fmt.Errorf("service %s: no address", s.ServiceKey)
	}
	if s.Addr.Zone() != "" {
		return fmt.Errorf("service %s: the address has a zone", s.ServiceKey)
	}
	if s.Proto != TCP && s.Proto != UDP {
		return fmt.Errorf("service %s: protocol %d is not TCP or UDP", s.ServiceKey, s.Proto)
	}
	if s.Port == 0 {
		return fmt.Errorf("service %s: port 0", s.ServiceKey)
	}
	if s.Affinity < 0 {
		return fmt.Errorf("service %s: negative affinity timeout %s", s.ServiceKey, s.Affinity)
	}
	secs := (s.Affinity + time.Second - 1) / time.Second
	if secs > 1<<32-1 {
		return fmt.Errorf("service %s: affinity timeout %s too long", s.ServiceKey, s.Affinity)
	}
	s.Affinity = secs * time.Second
	// Endpoint lists are short: a linear duplicate check beats a map until they
	// are not.
	var seen map[netip.AddrPort]bool
	if len(s.Backends) > 16 {
		seen = make(map[netip.AddrPort]bool, len(s.Backends))
	}
	is4 := s.Addr.Is4()
	bes := buf
	if cap(bes) < len(s.Backends) {
		bes = make([]netip.AddrPort, 0, len(s.Backends))
	}
	for _, b := range s.Backends {
		if a := b.Addr(); a.Is4In6() {
			b = netip.AddrPortFrom(a.Unmap(), b.Port())
		}
		a := b.Addr()
		if !a.IsValid() || b.Port() == 0 {
			return fmt.Errorf("service %s: backend %s is not an address and port", s.ServiceKey, b)
		}
		if a.Is4() != is4 {
			return fmt.Errorf("service %s: backend %s is of the other address family", s.ServiceKey, b)
		}
		if a.Zone() != "" {
			return fmt.Errorf("service %s: backend %s has a zone", s.ServiceKey, b)
		}
		if seen != nil {
			if seen[b] {
				continue
			}
			seen[b] = true
		} else if slices.Contains(bes, b) {
			continue
		}
		bes = append(bes, b)
	}
	if uint32(len(bes)) > perService {
		return fmt.Errorf("service %s: %d backends, more than the %d a slot table holds", s.ServiceKey, len(bes), perService)
	}
	s.Backends = bes
	return s.normalizeFrontends()
}

// normalizeFrontends checks the external side of s (backends already normalized):
// addresses unmapped, of the Service's family, deduplicated and sorted; an address
// both in ExternalIPs and LoadBalancerIPs counts as an externalIP.
func (s *Service) normalizeFrontends() error {
	if s.ExternalPolicy != PolicyCluster && s.ExternalPolicy != PolicyLocal {
		return fmt.Errorf("service %s: unknown traffic policy %d", s.ServiceKey, s.ExternalPolicy)
	}
	if len(s.ExternalIPs) == 0 && len(s.LoadBalancerIPs) == 0 && len(s.LocalBackends) == 0 {
		s.ExternalIPs, s.LoadBalancerIPs, s.LocalBackends = nil, nil, nil
		return nil
	}
	var err error
	if s.ExternalIPs, err = s.normalizeIPs("externalIP", s.ExternalIPs, nil); err != nil {
		return err
	}
	if s.LoadBalancerIPs, err = s.normalizeIPs("load balancer IP", s.LoadBalancerIPs, s.ExternalIPs); err != nil {
		return err
	}
	if len(s.LocalBackends) > 0 {
		local := make([]netip.AddrPort, 0, len(s.LocalBackends))
		for _, b := range s.LocalBackends {
			b = netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
			if !slices.Contains(s.Backends, b) {
				return fmt.Errorf("service %s: local backend %s is not one of its backends", s.ServiceKey, b)
			}
			local = append(local, b)
		}
		slices.SortFunc(local, netip.AddrPort.Compare)
		s.LocalBackends = slices.Compact(local)
	} else {
		s.LocalBackends = nil
	}
	return nil
}

func (s *Service) normalizeIPs(what string, ips, skip []netip.Addr) ([]netip.Addr, error) {
	if len(ips) == 0 {
		return nil, nil
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, a := range ips {
		a = a.Unmap()
		switch {
		case !a.IsValid() || a.IsUnspecified():
			return nil, fmt.Errorf("service %s: %s %s is not an address", s.ServiceKey, what, a)
		case a.Is4() != s.Addr.Is4():
			return nil, fmt.Errorf("service %s: %s %s is of the other address family", s.ServiceKey, what, a)
		case a.Zone() != "":
			return nil, fmt.Errorf("service %s: %s %s has a zone", s.ServiceKey, what, a)
		}
		if !slices.Contains(skip, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// equalService reports whether normalized a and b program the same datapath state,
// slot order aside (HealthCheckNodePort and Name are not in the maps).
func equalService(a, b Service) bool {
	if a.ServiceKey != b.ServiceKey || a.Affinity != b.Affinity || len(a.Backends) != len(b.Backends) ||
		a.NodePort != b.NodePort || a.ExternalPolicy != b.ExternalPolicy ||
		!slices.Equal(a.ExternalIPs, b.ExternalIPs) || !slices.Equal(a.LoadBalancerIPs, b.LoadBalancerIPs) ||
		!slices.Equal(a.LocalBackends, b.LocalBackends) {
		return false
	}
	x, y := slices.Clone(a.Backends), slices.Clone(b.Backends)
	slices.SortFunc(x, netip.AddrPort.Compare)
	slices.SortFunc(y, netip.AddrPort.Compare)
	return slices.Equal(x, y)
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	for _, f := range []struct{ v, def *uint32 }{
		{&l.Services, &d.Services}, {&l.Backends, &d.Backends}, {&l.Slots, &d.Slots},
		{&l.PerService, &d.PerService}, {&l.ReverseNAT, &d.ReverseNAT}, {&l.AffinityEntries, &d.AffinityEntries},
		{&l.Frontends, &d.Frontends}, {&l.Conntrack, &d.Conntrack}, {&l.Conntrack6, &d.Conntrack6},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	return l
}

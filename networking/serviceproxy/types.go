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
	// back within this time. Rounded up to whole seconds.
	Affinity time.Duration
}

// Limits size the maps. Changing them for a pinned datapath needs Remove first.
type Limits struct {
	Services        uint32 // service ports (ServiceKeys)
	Backends        uint32 // distinct backend address:port pairs
	Slots           uint32 // sum over services of their backend counts
	PerService      uint32 // backends of one service
	ReverseNAT      uint32 // LRU: (socket, backend) pairs remembered for recvmsg/getpeername
	AffinityEntries uint32 // LRU: (client netns, service) pairs
}

// DefaultLimits fit a cluster of tens of thousands of Services on a small node: the
// hash maps are preallocated, and take about 20 MiB of kernel memory at these sizes.
var DefaultLimits = Limits{
	Services:        16384,
	Backends:        65536,
	Slots:           131072,
	PerService:      4096,
	ReverseNAT:      131072,
	AffinityEntries: 65536,
}

const (
	flagAffinity = 1 << 0 // SVC_F_AFFINITY in bpf/sock.c
)

// normalize checks s and returns it with the address unmapped, backends unmapped and
// deduplicated (first occurrence kept), for programming.
func (s Service) normalize(perService uint32) (Service, error) {
	s.Addr = s.Addr.Unmap()
	if !s.Addr.IsValid() {
		return s, fmt.Errorf("service %s: no address", s.ServiceKey)
	}
	if s.Proto != TCP && s.Proto != UDP {
		return s, fmt.Errorf("service %s: protocol %d is not TCP or UDP", s.ServiceKey, s.Proto)
	}
	if s.Port == 0 {
		return s, fmt.Errorf("service %s: port 0", s.ServiceKey)
	}
	if s.Affinity < 0 {
		return s, fmt.Errorf("service %s: negative affinity timeout %s", s.ServiceKey, s.Affinity)
	}
	secs := (s.Affinity + time.Second - 1) / time.Second
	if secs > 1<<32-1 {
		return s, fmt.Errorf("service %s: affinity timeout %s too long", s.ServiceKey, s.Affinity)
	}
	s.Affinity = secs * time.Second
	// Endpoint lists are short: a linear duplicate check beats a map until they
	// are not.
	var seen map[netip.AddrPort]bool
	if len(s.Backends) > 16 {
		seen = make(map[netip.AddrPort]bool, len(s.Backends))
	}
	bes := make([]netip.AddrPort, 0, len(s.Backends))
	for _, b := range s.Backends {
		b = netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
		if !b.Addr().IsValid() || b.Port() == 0 {
			return s, fmt.Errorf("service %s: backend %s is not an address and port", s.ServiceKey, b)
		}
		if b.Addr().Is4() != s.Addr.Is4() {
			return s, fmt.Errorf("service %s: backend %s is of the other address family", s.ServiceKey, b)
		}
		if b.Addr().Zone() != "" {
			return s, fmt.Errorf("service %s: backend %s has a zone", s.ServiceKey, b)
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
		return s, fmt.Errorf("service %s: %d backends, more than the %d a slot table holds", s.ServiceKey, len(bes), perService)
	}
	s.Backends = bes
	return s, nil
}

// equalService reports whether a and b program the same datapath state, slot order
// aside.
func equalService(a, b Service) bool {
	if a.ServiceKey != b.ServiceKey || a.Affinity != b.Affinity || len(a.Backends) != len(b.Backends) {
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
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	return l
}

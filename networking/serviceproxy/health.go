package serviceproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// HealthServer answers the health-check NodePorts (spec.healthCheckNodePort) of
// PolicyLocal Services, as kube-proxy does, so that an external load balancer sends
// traffic only to nodes with a local endpoint: any GET answers 200 with the number
// of local endpoints, or 503 when there are none. Its methods are safe for
// concurrent use.
type HealthServer struct {
	listen netip.Addr
	log    *slog.Logger

	mu    sync.Mutex
	ports map[uint16]*hcPort
}

type hcPort struct {
	srv   *http.Server
	addr  net.Addr
	name  string // namespace/name
	local int
}

// NewHealthServer returns a server that listens on listen (all addresses when
// listen is the zero Addr) once Sync gives it ports.
func NewHealthServer(listen netip.Addr, log *slog.Logger) *HealthServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &HealthServer{listen: listen, log: log.With("component", "serviceproxy-health"), ports: map[uint16]*hcPort{}}
}

// Sync serves the HealthCheckNodePort of every Service in svcs that has one: the
// Services sharing a port (the ports of one Kubernetes Service) count their distinct
// local endpoint addresses together. Ports no longer listed are closed. A port that
// cannot be opened is reported and the others are served.
func (h *HealthServer) Sync(svcs []Service) error {
	type want struct {
		name  string
		local map[netip.Addr]bool
	}
	wants := map[uint16]*want{}
	for _, s := range svcs {
		if s.HealthCheckNodePort == 0 {
			continue
		}
		w := wants[s.HealthCheckNodePort]
		if w == nil {
			w = &want{name: s.Name, local: map[netip.Addr]bool{}}
			wants[s.HealthCheckNodePort] = w
		}
		for _, b := range s.LocalBackends {
			w.local[b.Addr().Unmap()] = true
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for port, hp := range h.ports {
		if wants[port] == nil {
			hp.srv.Close()
			delete(h.ports, port)
		}
	}
	for port, w := range wants {
		hp := h.ports[port]
		if hp == nil {
			var err error
			if hp, err = h.serve(port); err != nil {
				errs = append(errs, err)
				continue
			}
			h.ports[port] = hp
		}
		hp.name, hp.local = w.name, len(w.local)
	}
	return errors.Join(errs...)
}

func (h *HealthServer) serve(port uint16) (*hcPort, error) {
	addr := ":" + strconv.Itoa(int(port))
	if h.listen.IsValid() {
		addr = netip.AddrPortFrom(h.listen, port).String()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health-check node port %d: %w", port, err)
	}
	hp := &hcPort{addr: ln.Addr()}
	hp.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		name, local := hp.name, hp.local
		h.mu.Unlock()
		ns, n, _ := strings.Cut(name, "/")
		body, _ := json.Marshal(struct {
			Service struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
			} `json:"service"`
			LocalEndpoints      int  `json:"localEndpoints"`
			ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
		}{Service: struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		}{ns, n}, LocalEndpoints: local, ServiceProxyHealthy: true})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(local))
		if local == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write(body)
	})}
	go func() {
		if err := hp.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("health-check server stopped", "port", port, "error", err)
		}
	}()
	return hp, nil
}

// Addr returns the address the health check of port listens on, or nil.
func (h *HealthServer) Addr(port uint16) net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hp := h.ports[port]; hp != nil {
		return hp.addr
	}
	return nil
}

// Close stops every health-check port.
func (h *HealthServer) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for port, hp := range h.ports {
		errs = append(errs, hp.srv.Close())
		delete(h.ports, port)
	}
	return errors.Join(errs...)
}

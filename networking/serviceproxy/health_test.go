//go:build linux

package serviceproxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// freePort finds a TCP port free on loopback.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func TestHealthServer(t *testing.T) {
	loopbackUp(t)
	h := NewHealthServer(netip.MustParseAddr("127.0.0.1"), nil)
	t.Cleanup(func() { h.Close() })
	port := freePort(t)
	web := Service{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.5"), 80, TCP}, Name: "shop/web",
		ExternalPolicy: PolicyLocal, HealthCheckNodePort: port,
		Backends:      []netip.AddrPort{ap("10.244.1.2:8080"), ap("10.244.1.3:8080"), ap("10.244.2.9:8080")},
		LocalBackends: []netip.AddrPort{ap("10.244.1.2:8080"), ap("10.244.1.3:8080")}}
	webTLS := web // the same Service's second port: the same pods
	webTLS.Port = 443
	webTLS.Backends = []netip.AddrPort{ap("10.244.1.2:8443"), ap("10.244.1.3:8443")}
	webTLS.LocalBackends = webTLS.Backends
	empty := web
	empty.LocalBackends = nil

	get := func() (int, map[string]any, string) {
		t.Helper()
		resp, err := http.Get("http://" + h.Addr(port).String() + "/healthz")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
		return resp.StatusCode, m, resp.Header.Get("X-Load-Balancing-Endpoint-Weight")
	}

	steps := []struct {
		name       string
		svcs       []Service
		wantStatus int
		wantBody   map[string]any
	}{
		{"two local endpoints", []Service{web, webTLS}, 200, map[string]any{
			"service": map[string]any{"namespace": "shop", "name": "web"}, "localEndpoints": 2.0, "serviceProxyHealthy": true}},
		{"none local", []Service{empty}, 503, map[string]any{
			"service": map[string]any{"namespace": "shop", "name": "web"}, "localEndpoints": 0.0, "serviceProxyHealthy": true}},
	}
	for _, st := range steps {
		if err := h.Sync(st.svcs); err != nil {
			t.Fatalf("%s: Sync: %v", st.name, err)
		}
		code, body, _ := get()
		if code != st.wantStatus {
			t.Errorf("%s: status %d, want %d", st.name, code, st.wantStatus)
		}
		if diff := cmp.Diff(st.wantBody, body); diff != "" {
			t.Errorf("%s: body (-want +got):\n%s", st.name, diff)
		}
	}
	if err := h.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if a := h.Addr(port); a != nil {
		t.Errorf("port %d still served at %s after Sync(nil)", port, a)
	}
	if c, err := net.Dial("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after Sync(nil)", port)
	}
}

package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

const ns = "default"

var (
	tcp        = corev1.ProtocolTCP
	httpPort   = svcPort("http", tcp, 80, intstr.FromString("web"))
	slicePorts = []discoveryv1.EndpointPort{epPort("http", tcp, 8080)}
)

// web is a Service "name" at ip:80 and an IPv4 EndpointSlice "name-a" with ready
// endpoints at addrs:8080.
func web(name, ip string, addrs ...string) (*corev1.Service, *discoveryv1.EndpointSlice) {
	return service(ns, name, []string{ip}, httpPort), webSlice(name, name+"-a", addrs...)
}

func webSlice(svc, slice string, addrs ...string) *discoveryv1.EndpointSlice {
	var eps []discoveryv1.Endpoint
	for _, a := range addrs {
		eps = append(eps, endpoint(a, readyEP))
	}
	return endpointSlice(ns, slice, svc, discoveryv1.AddressTypeIPv4, slicePorts, eps...)
}

// webState is what web(…, ip, addrs…) programs.
func webState(ip string, addrs ...string) serviceproxy.Service {
	var bes []string
	for _, a := range addrs {
		bes = append(bes, a+":8080")
	}
	return serviceproxy.Service{ServiceKey: sk(ip+":80", serviceproxy.TCP), Backends: backends(bes...)}
}

func (h *harness) errorCount(reason string) float64 {
	return testutil.ToFloat64(h.agent.m.errors.WithLabelValues(reason))
}

// assertErrors checks every error counter: want lists the non-zero ones.
func (h *harness) assertErrors(want map[string]float64) {
	h.t.Helper()
	got := map[string]float64{}
	for _, r := range reasons {
		if v := h.errorCount(r); v != 0 {
			got[r] = v
		}
	}
	if want == nil {
		want = map[string]float64{}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		h.t.Errorf("kiln_proxy_errors_total (-want +got):\n%s", diff)
	}
}

// eventually polls cond; the deadline only protects against a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestProgramsServicesAndMetrics(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp)
	dual := service(ns, "dual", []string{"10.96.0.20", "fd00::20"}, httpPort)
	dual.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	dual.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr[int32](30)}}
	headless := service(ns, "headless", []string{"None"}, httpPort)
	h.create(dual, headless,
		endpointSlice(ns, "dual-4", "dual", discoveryv1.AddressTypeIPv4, slicePorts, endpoint("10.0.0.1", readyEP), endpoint("10.0.0.2", notReadyEP)),
		endpointSlice(ns, "dual-6", "dual", discoveryv1.AddressTypeIPv6, slicePorts, endpoint("fd00:1::1", readyEP)),
		webSlice("headless", "headless-a", "10.0.0.7"),
	)
	want := []serviceproxy.Service{
		{ServiceKey: sk("10.96.0.20:80", serviceproxy.TCP), Backends: backends("10.0.0.1:8080"), Affinity: 30 * time.Second},
		{ServiceKey: sk("[fd00::20]:80", serviceproxy.TCP), Backends: backends("[fd00:1::1]:8080"), Affinity: 30 * time.Second},
	}
	dp.waitForState(t, want)

	if got := testutil.ToFloat64(h.agent.m.services); got != 2 {
		t.Errorf("kiln_proxy_programmed_services = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.agent.m.backends); got != 2 {
		t.Errorf("kiln_proxy_programmed_backends = %v, want 2", got)
	}
	wantFill := 2 / float64(serviceproxy.DefaultLimits.Services)
	if got := testutil.ToFloat64(h.agent.m.mapFill.WithLabelValues("services")); got != wantFill {
		t.Errorf("kiln_proxy_map_fill_ratio{map=services} = %v, want %v", got, wantFill)
	}
	if n := testutil.CollectAndCount(h.agent.m.syncLatency); n != 1 {
		t.Errorf("sync latency histogram has %d series, want 1", n)
	}
	names := map[string]bool{}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"kiln_proxy_programmed_services", "kiln_proxy_programmed_backends", "kiln_proxy_map_fill_ratio",
		"kiln_proxy_map_entries", "kiln_proxy_sync_latency_seconds", "kiln_proxy_errors_total", "kiln_proxy_datapath_call_duration_seconds"} {
		if !names[n] {
			t.Errorf("registry has no %s", n)
		}
	}
	h.assertErrors(nil)
}

func TestSliceWithoutServiceLabel(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp)
	svc, es := web("web", "10.96.0.10", "10.0.0.1")
	h.create(svc, es, webSlice("", "stray", "10.0.0.9"))
	// A change after the stray slice, in the same informer: once it is
	// programmed, the stray slice has been seen.
	h.update(webSlice("web", "web-a", "10.0.0.1", "10.0.0.2"))
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.1", "10.0.0.2")})
	h.assertErrors(nil)
}

func TestChurn(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp)
	const n = 300
	ip := func(i int) string { return fmt.Sprintf("10.96.%d.%d", i/250, i%250+1) }
	be := func(i, j int) string { return fmt.Sprintf("10.1.%d.%d", i/250, (i+j)%250+1) }
	name := func(i int) string { return fmt.Sprintf("svc-%d", i) }

	want := map[key]serviceproxy.Service{}
	for i := range n {
		svc, es := web(name(i), ip(i), be(i, 0), be(i, 1))
		h.create(svc, es)
		s := webState(ip(i), be(i, 0), be(i, 1))
		want[s.ServiceKey] = s
	}
	for i := 0; i < n; i += 3 { // new endpoints
		h.update(webSlice(name(i), name(i)+"-a", be(i, 2), be(i, 3), be(i, 4)))
		s := webState(ip(i), be(i, 2), be(i, 3), be(i, 4))
		want[s.ServiceKey] = s
	}
	for i := 1; i < n; i += 5 { // deleted
		h.deleteSlice(ns, name(i)+"-a")
		h.deleteService(ns, name(i))
		delete(want, webState(ip(i)).ServiceKey)
	}
	for i := 2; i < n; i += 7 { // port changed
		if i%5 == 1 {
			continue // deleted above
		}
		svc, _ := web(name(i), ip(i))
		svc.Spec.Ports[0].Port = 81
		h.update(svc)
		old := want[webState(ip(i)).ServiceKey]
		delete(want, old.ServiceKey)
		old.Port = 81
		want[old.ServiceKey] = old
	}
	var wantList []serviceproxy.Service
	for _, s := range want {
		wantList = append(wantList, s)
	}
	dp.waitForState(t, wantList)
	if diff := cmp.Diff(normalized(wantList), normalized(h.agent.cfg.Datapath.Services()), stateOptions); diff != "" {
		t.Errorf("programmed state (-want +got):\n%s", diff)
	}
	syncs, updates := dp.calls()
	t.Logf("%d services, %d events: %d Sync and %d Update calls", n, h.agent.events.Load(), syncs, updates)
	if syncs != 1 {
		t.Errorf("%d Sync calls, want 1 (at start)", syncs)
	}
	h.assertErrors(nil)
}

func TestOrdering(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp)
	k := sk("10.96.0.10:80", serviceproxy.TCP)
	svc := service(ns, "web", []string{"10.96.0.10"}, httpPort)
	h.create(svc, webSlice("web", "web-a", "10.0.0.1"), webSlice("web", "web-b", "10.0.0.2"))
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.1", "10.0.0.2")})
	// The Service may have been programmed without backends before its
	// slices arrived; from here on it always has ready endpoints.
	from := len(dp.allUpdates())

	// Slice a goes away and slice b's endpoint stops being ready while a new
	// one in b is: the service never has zero backends on the way.
	h.deleteSlice(ns, "web-a")
	h.update(endpointSlice(ns, "web-b", "web", discoveryv1.AddressTypeIPv4, slicePorts,
		endpoint("10.0.0.2", notReadyEP), endpoint("10.0.0.3", readyEP)))
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.3")})
	for i, u := range dp.allUpdates()[from:] {
		for _, s := range u.upserts {
			if s.ServiceKey == k && len(s.Backends) == 0 {
				t.Errorf("Update %d sent %s with no backends while it had ready endpoints", i, k)
			}
		}
	}

	// Without slices the service refuses connections: programmed empty, not
	// deleted.
	h.deleteSlice(ns, "web-b")
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10")})
	for i, u := range dp.allUpdates() {
		for _, d := range u.deletes {
			if d == k {
				t.Errorf("Update %d deleted %s while its Service existed", i, k)
			}
		}
	}

	h.deleteService(ns, "web")
	dp.waitForState(t, nil)
	ups := dp.allUpdates()
	if last := ups[len(ups)-1]; !cmp.Equal(last.deletes, []key{k}, netipComparers) || len(last.upserts) != 0 {
		t.Errorf("last Update = %+v, want only the delete of %s", last, k)
	}
	h.assertErrors(nil)
}

func TestCoalescing(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp, func(c *Config) { c.MinInterval = 5 * time.Millisecond })
	base := h.agent.events.Load()

	// The first change is held inside Update while the rest arrive.
	dp.mu.Lock()
	gate := make(chan struct{})
	dp.gate, dp.entered = gate, make(chan struct{}, 16)
	dp.mu.Unlock()
	first, _ := web("svc-0", "10.96.0.1")
	h.create(first)
	select {
	case <-dp.entered:
	case <-time.After(hang):
		t.Fatal("the first change never reached the datapath")
	}

	const n = 500
	var want []serviceproxy.Service
	for i := range n {
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		addr := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		svc, es := web(fmt.Sprintf("svc-%d", i), ip, addr)
		if i > 0 {
			h.create(svc)
		}
		h.create(es)
		want = append(want, webState(ip, addr))
	}
	events := int64(2 * n)
	eventually(t, "the agent has seen every event", func() bool { return h.agent.events.Load()-base >= events })
	close(gate)
	dp.waitForState(t, want)

	_, updates := dp.calls()
	t.Logf("%d events became %d Update calls", events, updates)
	// One Update held at the gate, one for everything that arrived meanwhile.
	if updates != 2 {
		t.Errorf("%d events made %d Update calls, want 2", events, updates)
	}
}

func TestRestartAdoptsDatapath(t *testing.T) {
	a, aSlice := web("a", "10.96.0.1", "10.0.0.1", "10.0.0.2")
	b, bSlice := web("b", "10.96.0.2", "10.0.0.3")
	c, cSlice := web("c", "10.96.0.3", "10.0.0.4")
	// d's endpoints are broken now; the datapath still has its last good state.
	d, _ := web("d", "10.96.0.4")
	dSlice := webSlice("d", "d-a", "10.0.0.x")
	client := fake.NewClientset([]runtime.Object{a, aSlice, b, bSlice, c, cSlice, d, dSlice}...)

	dp := newFakeDatapath(
		webState("10.96.0.1", "10.0.0.1"),               // a: stale backends
		webState("10.96.0.2", "10.0.0.3"),               // b: as desired
		webState("10.96.0.4", "10.0.0.8"),               // d: last good state
		webState("10.96.0.99", "10.0.0.9", "10.0.0.10"), // a Service deleted while the agent was away
	)
	h := start(t, client, dp)
	want := []serviceproxy.Service{
		webState("10.96.0.1", "10.0.0.1", "10.0.0.2"),
		webState("10.96.0.2", "10.0.0.3"),
		webState("10.96.0.3", "10.0.0.4"),
		webState("10.96.0.4", "10.0.0.8"),
	}
	syncs, updates := dp.calls()
	if syncs != 1 || updates != 0 {
		t.Fatalf("restart made %d Sync and %d Update calls, want 1 Sync", syncs, updates)
	}
	dp.mu.Lock()
	synced := dp.syncs[0]
	dp.mu.Unlock()
	if diff := cmp.Diff(normalized(want), normalized(synced), stateOptions); diff != "" {
		t.Errorf("Sync on start (-want +got):\n%s", diff)
	}
	dp.waitForState(t, want)
	h.assertErrors(map[string]float64{ReasonInvalidEndpoint: 1})
}

func TestSafety(t *testing.T) {
	webKey := sk("10.96.0.10:80", serviceproxy.TCP)
	// Each case starts with web (2 backends) and ok (1 backend) programmed,
	// breaks web, and then changes ok: ok's change landing shows that the break
	// has been processed (EndpointSlice events arrive in order).
	tests := []struct {
		name   string
		setup  func(*fakeDatapath)
		breakW func(*harness)
		reason string
	}{
		{
			name: "malformed address",
			breakW: func(h *harness) {
				h.update(webSlice("web", "web-a", "10.0.0.1", "10.0.0.2", "10.0.0.300"))
			},
			reason: ReasonInvalidEndpoint,
		},
		{
			name:  "more backends than a service holds",
			setup: func(dp *fakeDatapath) { dp.limits.PerService = 3 },
			breakW: func(h *harness) {
				h.update(webSlice("web", "web-a", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"))
			},
			reason: ReasonTooManyBackends,
		},
		{
			name: "full map in the datapath",
			setup: func(dp *fakeDatapath) {
				dp.refuse = func(s serviceproxy.Service) error {
					if s.ServiceKey == webKey && len(s.Backends) > 2 {
						return errors.New("the slots map is full")
					}
					return nil
				}
			},
			breakW: func(h *harness) {
				h.update(webSlice("web", "web-a", "10.0.0.1", "10.0.0.2", "10.0.0.3"))
			},
			reason: ReasonDatapath,
		},
		{
			name: "full map in the datapath, as the real one reports it",
			setup: func(dp *fakeDatapath) {
				dp.refuse = func(s serviceproxy.Service) error {
					if s.ServiceKey == webKey && len(s.Backends) > 2 {
						return &serviceproxy.ServiceError{Key: s.ServiceKey, Reason: serviceproxy.RefusedFull, Err: errors.New("the slots map is full (4)")}
					}
					return nil
				}
			},
			breakW: func(h *harness) {
				h.update(webSlice("web", "web-a", "10.0.0.1", "10.0.0.2", "10.0.0.3"))
			},
			reason: ReasonMapFull,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dp := newFakeDatapath()
			if tc.setup != nil {
				tc.setup(dp)
			}
			h := start(t, fake.NewClientset(), dp)
			w, wSlice := web("web", "10.96.0.10", "10.0.0.1", "10.0.0.2")
			ok, okSlice := web("ok", "10.96.0.11", "10.0.1.1")
			h.create(w, wSlice, ok, okSlice)
			good := webState("10.96.0.10", "10.0.0.1", "10.0.0.2")
			dp.waitForState(t, []serviceproxy.Service{good, webState("10.96.0.11", "10.0.1.1")})

			tc.breakW(h)
			h.update(webSlice("ok", "ok-a", "10.0.1.1", "10.0.1.2"))
			dp.waitForState(t, []serviceproxy.Service{good, webState("10.96.0.11", "10.0.1.1", "10.0.1.2")})
			// The state can show before the sync that made it has counted
			// its errors.
			eventually(t, "the error counted", func() bool { return h.errorCount(tc.reason) >= 1 })
			h.assertErrors(map[string]float64{tc.reason: 1})

			// A fix is programmed.
			dp.mu.Lock()
			dp.refuse = nil
			dp.mu.Unlock()
			h.update(webSlice("web", "web-a", "10.0.0.5"))
			dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.5"), webState("10.96.0.11", "10.0.1.1", "10.0.1.2")})
			h.assertErrors(map[string]float64{tc.reason: 1})
		})
	}
}

// A Service the datapath refused is tried again without a new event.
func TestDatapathRefusalRetried(t *testing.T) {
	webKey := sk("10.96.0.10:80", serviceproxy.TCP)
	dp := newFakeDatapath()
	full := true
	dp.refuse = func(s serviceproxy.Service) error {
		if s.ServiceKey == webKey && full {
			return errors.New("the services map is full")
		}
		return nil
	}
	h := start(t, fake.NewClientset(), dp, func(c *Config) { c.RetryInterval = 5 * time.Millisecond })
	w, wSlice := web("web", "10.96.0.10", "10.0.0.1")
	ok, okSlice := web("ok", "10.96.0.11", "10.0.1.1")
	h.create(w, wSlice, ok, okSlice)
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.11", "10.0.1.1")})
	eventually(t, "the refusal is counted", func() bool { return h.errorCount(ReasonDatapath) >= 1 })

	dp.mu.Lock()
	full = false
	dp.mu.Unlock()
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.1"), webState("10.96.0.11", "10.0.1.1")})
}

func TestUnknownServiceSlice(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp, func(c *Config) { c.RetryInterval = 5 * time.Millisecond })
	ok, okSlice := web("ok", "10.96.0.11", "10.0.1.1")
	h.create(ok, okSlice, webSlice("ghost", "ghost-a", "10.0.0.1"))
	eventually(t, "the orphaned slice is counted", func() bool { return h.errorCount(ReasonUnknownService) >= 1 })
	// Counted once per slice version, however many retry rounds pass.
	r := h.agent.retries.Load()
	eventually(t, "three more retry rounds", func() bool { return h.agent.retries.Load() >= r+3 })
	h.assertErrors(map[string]float64{ReasonUnknownService: 1})
	h.update(webSlice("ghost", "ghost-a", "10.0.0.2"))
	eventually(t, "the new slice version is counted", func() bool { return h.errorCount(ReasonUnknownService) >= 2 })

	// Its Service arrives: it is programmed, and nothing else was touched.
	ghost, _ := web("ghost", "10.96.0.12")
	h.create(ghost)
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.11", "10.0.1.1"), webState("10.96.0.12", "10.0.0.2")})
	h.assertErrors(map[string]float64{ReasonUnknownService: 2})
}

func TestDuplicateFrontend(t *testing.T) {
	dp := newFakeDatapath()
	h := start(t, fake.NewClientset(), dp)
	first, firstSlice := web("first", "10.96.0.10", "10.0.0.1")
	h.create(first, firstSlice)
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.1")})
	second, secondSlice := web("second", "10.96.0.10", "10.0.0.2")
	h.create(second, secondSlice)
	eventually(t, "the conflict is counted", func() bool { return h.errorCount(ReasonDuplicateFrontend) >= 1 })
	if diff := cmp.Diff(normalized([]serviceproxy.Service{webState("10.96.0.10", "10.0.0.1")}), dp.Services(), stateOptions); diff != "" {
		t.Errorf("after the conflict (-want +got):\n%s", diff)
	}
	// When the owner goes, the other Service gets the frontend.
	h.deleteService(ns, "first")
	dp.waitForState(t, []serviceproxy.Service{webState("10.96.0.10", "10.0.0.2")})
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func init() {
	// The fake clientset's watchers panic when more than this many events wait
	// for the informer; churn tests make thousands quickly.
	watch.DefaultChanSize = 1 << 16
}

// hang is the deadline for waits that only protect against a hung test.
const hang = 60 * time.Second

// fakeDatapath is a Datapath in memory that records every call. It follows the real
// one's error rule: a refused service keeps its state, the others are programmed.
type fakeDatapath struct {
	mu      sync.Mutex
	limits  serviceproxy.Limits
	svcs    map[key]serviceproxy.Service
	refuse  func(serviceproxy.Service) error // nil: accept everything
	syncs   [][]serviceproxy.Service
	updates []fakeUpdate
	gate    chan struct{} // when set, Update waits until it is closed
	entered chan struct{} // receives when an Update starts waiting at the gate
	changed chan struct{} // closed after every call
}

type fakeUpdate struct {
	upserts []serviceproxy.Service
	deletes []key
}

func newFakeDatapath(initial ...serviceproxy.Service) *fakeDatapath {
	f := &fakeDatapath{
		limits:  serviceproxy.DefaultLimits,
		svcs:    make(map[key]serviceproxy.Service),
		changed: make(chan struct{}),
	}
	for _, s := range initial {
		f.svcs[s.ServiceKey] = s
	}
	return f
}

func (f *fakeDatapath) put(ups []serviceproxy.Service) error {
	var errs []error
	for _, u := range ups {
		if f.refuse != nil {
			if err := f.refuse(u); err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", u.ServiceKey, err))
				continue
			}
		}
		if err := f.frontendTaken(u); err != nil {
			errs = append(errs, err)
			continue
		}
		u.Backends = slices.Clone(u.Backends)
		f.svcs[u.ServiceKey] = u
	}
	return errors.Join(errs...)
}

// frontendTaken refuses a frontend another service holds, as the real datapath
// does (which also applies upserts before deletes, as Update below).
func (f *fakeDatapath) frontendTaken(u serviceproxy.Service) error {
	for _, fe := range frontendKeys(u) {
		for k, s := range f.svcs {
			if k != u.ServiceKey && slices.Contains(frontendKeys(s), fe) {
				return fmt.Errorf("service %s: frontend %s belongs to service %s", u.ServiceKey, fe, k)
			}
		}
	}
	return nil
}

func (f *fakeDatapath) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeDatapath) Sync(desired []serviceproxy.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	f.syncs = append(f.syncs, cloneServices(desired))
	want := make(map[key]bool)
	for _, d := range desired {
		want[d.ServiceKey] = true
	}
	for k := range f.svcs {
		if !want[k] {
			delete(f.svcs, k)
		}
	}
	return f.put(desired)
}

func (f *fakeDatapath) Update(upserts []serviceproxy.Service, deletes []key) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		f.entered <- struct{}{}
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notify()
	f.updates = append(f.updates, fakeUpdate{cloneServices(upserts), slices.Clone(deletes)})
	// The real table applies upserts first, then deletes.
	err := f.put(upserts)
	for _, k := range deletes {
		delete(f.svcs, k)
	}
	return err
}

func (f *fakeDatapath) Services() []serviceproxy.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.servicesLocked()
}

func (f *fakeDatapath) servicesLocked() []serviceproxy.Service {
	out := make([]serviceproxy.Service, 0, len(f.svcs))
	for _, s := range f.svcs {
		s.Backends = slices.Clone(s.Backends)
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y serviceproxy.Service) int { return compareKeys(x.ServiceKey, y.ServiceKey) })
	return out
}

func (f *fakeDatapath) Stats() serviceproxy.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := serviceproxy.Stats{Services: len(f.svcs), Limits: f.limits}
	bes := make(map[netip.AddrPort]bool)
	for _, s := range f.svcs {
		st.Frontends += len(frontendKeys(s))
		st.Slots += len(s.Backends)
		for _, b := range s.Backends {
			bes[b] = true
		}
	}
	st.Backends = len(bes)
	return st
}

// calls returns how many Sync and Update calls were made.
func (f *fakeDatapath) calls() (syncs, updates int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.syncs), len(f.updates)
}

func (f *fakeDatapath) allUpdates() []fakeUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.updates)
}

// waitFor waits until cond holds for the programmed services.
func (f *fakeDatapath) waitFor(t *testing.T, what string, cond func([]serviceproxy.Service) bool) {
	t.Helper()
	deadline := time.After(hang)
	for {
		f.mu.Lock()
		ok := cond(f.servicesLocked())
		ch := f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("datapath never reached: %s; it holds:\n%v", what, f.Services())
		}
	}
}

// waitForState waits until the datapath holds exactly want.
func (f *fakeDatapath) waitForState(t *testing.T, want []serviceproxy.Service) {
	t.Helper()
	want = normalized(want)
	f.waitFor(t, fmt.Sprintf("%d services", len(want)), func(got []serviceproxy.Service) bool {
		return equalStates(normalized(got), want)
	})
}

func equalStates(a, b []serviceproxy.Service) bool {
	return slices.EqualFunc(a, b, sameService)
}

func cloneServices(in []serviceproxy.Service) []serviceproxy.Service {
	out := make([]serviceproxy.Service, len(in))
	for i, s := range in {
		s.Backends = slices.Clone(s.Backends)
		s.LocalBackends = slices.Clone(s.LocalBackends)
		s.ExternalIPs = slices.Clone(s.ExternalIPs)
		s.LoadBalancerIPs = slices.Clone(s.LoadBalancerIPs)
		out[i] = s
	}
	return out
}

// normalized sorts services by key and their backends.
func normalized(in []serviceproxy.Service) []serviceproxy.Service {
	out := cloneServices(in)
	for i := range out {
		out[i].Backends = sortedUnique(out[i].Backends)
	}
	slices.SortFunc(out, func(x, y serviceproxy.Service) int { return compareKeys(x.ServiceKey, y.ServiceKey) })
	return out
}

// testLogger writes to the test log until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}

// harness is an Agent running against a fake clientset and a datapath.
type harness struct {
	t      *testing.T
	client *fake.Clientset
	agent  *Agent
	reg    *prometheus.Registry
}

// start runs an agent over client and dp until the test ends, and returns once it
// has made its first Sync and its watches are open.
func start(t *testing.T, client *fake.Clientset, dp Datapath, tweak ...func(*Config)) *harness {
	t.Helper()
	watches := make(chan string, 16)
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		watches <- a.GetResource().Resource
		return false, nil, nil
	})
	reg := prometheus.NewRegistry()
	cfg := Config{Client: client, Datapath: dp, Logger: testLogger(t), Registerer: reg, MinInterval: time.Millisecond}
	for _, f := range tweak {
		f(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Objects created before both watches are open could be missed by the
	// fake (it replays only additions into a new watch).
	seen := map[string]bool{}
	deadline := time.After(hang)
	for !seen["services"] || !seen["endpointslices"] {
		select {
		case r := <-watches:
			seen[r] = true
		case err := <-done:
			t.Fatalf("Run returned before it was ready: %v", err)
		case <-deadline:
			t.Fatal("informers never started watching")
		}
	}
	select {
	case <-a.Ready():
	case <-deadline:
		t.Fatal("agent never made its first Sync")
	}
	return &harness{t: t, client: client, agent: a, reg: reg}
}

// fakeHealth records what the agent gives the health server.
type fakeHealth struct {
	mu      sync.Mutex
	last    []serviceproxy.Service
	calls   int
	changed chan struct{}
}

func newFakeHealth() *fakeHealth { return &fakeHealth{changed: make(chan struct{})} }

func (h *fakeHealth) Sync(svcs []serviceproxy.Service) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = cloneServices(svcs)
	h.calls++
	close(h.changed)
	h.changed = make(chan struct{})
	return nil
}

// waitFor waits until cond holds for the last Sync's services.
func (h *fakeHealth) waitFor(t *testing.T, what string, cond func([]serviceproxy.Service) bool) {
	t.Helper()
	deadline := time.After(hang)
	for {
		h.mu.Lock()
		ok := h.calls > 0 && cond(h.last)
		ch, last := h.changed, h.last
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("health server never got: %s; it has:\n%v", what, last)
		}
	}
}

// Object builders.

func ptr[T any](v T) *T { return &v }

func service(ns, name string, ips []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: ips, Ports: ports},
	}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	return s
}

func svcPort(name string, proto corev1.Protocol, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: port, TargetPort: target}
}

func epPort(name string, proto corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Protocol: ptr(proto), Port: ptr(port)}
}

// endpoint conditions: nil pointers mean "not set".
type cond struct{ ready, serving, terminating *bool }

var (
	readyEP       = cond{ready: ptr(true), serving: ptr(true), terminating: ptr(false)}
	notReadyEP    = cond{ready: ptr(false), serving: ptr(false), terminating: ptr(false)}
	terminatingEP = cond{ready: ptr(false), serving: ptr(true), terminating: ptr(true)}
	goneEP        = cond{ready: ptr(false), serving: ptr(false), terminating: ptr(true)}
)

func endpoint(addr string, c cond) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: c.ready, Serving: c.serving, Terminating: c.terminating}}
}

func endpointSlice(ns, name, svc string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
	if svc != "" {
		es.Labels[discoveryv1.LabelServiceName] = svc
	}
	return es
}

func sk(addrPort string, proto serviceproxy.Proto) key {
	ap := netip.MustParseAddrPort(addrPort)
	return key{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}

func backends(aps ...string) []netip.AddrPort {
	out := []netip.AddrPort{}
	for _, a := range aps {
		out = append(out, netip.MustParseAddrPort(a))
	}
	return out
}

// Clientset helpers that fail the test.

func (h *harness) create(objs ...runtime.Object) {
	h.t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = h.client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = h.client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			h.t.Fatalf("create %T: unsupported", o)
		}
		if err != nil {
			h.t.Fatalf("create: %v", err)
		}
	}
}

func (h *harness) update(objs ...runtime.Object) {
	h.t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = h.client.CoreV1().Services(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = h.client.DiscoveryV1().EndpointSlices(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
		default:
			h.t.Fatalf("update %T: unsupported", o)
		}
		if err != nil {
			h.t.Fatalf("update: %v", err)
		}
	}
}

func (h *harness) deleteService(ns, name string) {
	h.t.Helper()
	if err := h.client.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		h.t.Fatalf("delete Service %s/%s: %v", ns, name, err)
	}
}

func (h *harness) deleteSlice(ns, name string) {
	h.t.Helper()
	if err := h.client.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		h.t.Fatalf("delete EndpointSlice %s/%s: %v", ns, name, err)
	}
}

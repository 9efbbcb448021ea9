package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Config is what an Agent needs.
type Config struct {
	// Client reaches the Kubernetes API. Required.
	Client kubernetes.Interface
	// Datapath is programmed. Required.
	Datapath Datapath
	// Logger receives events; default discards them.
	Logger *slog.Logger
	// Registerer gets the agent's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// NodeName is this node's name: endpoints whose nodeName it is are
	// LocalBackends (never SNATed, the only ones externalTrafficPolicy Local
	// uses), and internalTrafficPolicy Local Services use only them. Empty: no
	// endpoint is local, and internalTrafficPolicy Local Services use all their
	// endpoints.
	NodeName string
	// Health, when set, is given the desired Services with a health-check node
	// port after every change to them: a *serviceproxy.HealthServer, which the
	// caller creates and closes.
	Health HealthSyncer
	// MinInterval is the least time between two datapath updates; events in
	// between are coalesced. Default DefaultMinInterval.
	MinInterval time.Duration
	// RetryInterval is how often Services the datapath refused are tried again.
	// Default DefaultRetryInterval.
	RetryInterval time.Duration
}

// Defaults for Config.
const (
	DefaultMinInterval   = 20 * time.Millisecond
	DefaultRetryInterval = 30 * time.Second
)

// serviceNameIndex indexes EndpointSlices by "namespace/service-name".
const serviceNameIndex = "kiln-service-name"

// Agent keeps a Datapath programmed with the cluster's Services.
type Agent struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	factory   informers.SharedInformerFactory
	services  corelisters.ServiceLister
	svcSynced cache.InformerSynced
	slices    cache.Indexer
	epSynced  cache.InformerSynced

	mu         sync.Mutex
	dirty      map[types.NamespacedName]struct{}
	firstEvent time.Time // of the oldest event in dirty
	kick       chan struct{}
	events     atomic.Int64 // handled informer events, for tests
	retries    atomic.Int64 // retry rounds made, for tests
	ready      chan struct{}
	running    atomic.Bool

	st *state // owned by the Run goroutine
}

// New builds an Agent and its informers; Run starts them.
func New(cfg Config) (*Agent, error) {
	if cfg.Client == nil {
		return nil, errors.New("agent: no Kubernetes client")
	}
	if cfg.Datapath == nil {
		return nil, errors.New("agent: no datapath")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	a := &Agent{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "serviceproxy-agent"),
		m:     m,
		dirty: make(map[types.NamespacedName]struct{}),
		kick:  make(chan struct{}, 1),
		ready: make(chan struct{}),
	}
	a.factory = informers.NewSharedInformerFactory(cfg.Client, 0)
	svcInf := a.factory.Core().V1().Services()
	epInf := a.factory.Discovery().V1().EndpointSlices()
	a.services = svcInf.Lister()
	a.svcSynced = svcInf.Informer().HasSynced
	if err := epInf.Informer().AddIndexers(cache.Indexers{serviceNameIndex: sliceIndex}); err != nil {
		return nil, fmt.Errorf("index EndpointSlices: %w", err)
	}
	a.slices = epInf.Informer().GetIndexer()
	a.epSynced = epInf.Informer().HasSynced
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.onService,
		UpdateFunc: func(_, obj any) { a.onService(obj) },
		DeleteFunc: a.onService,
	}); err != nil {
		return nil, fmt.Errorf("watch Services: %w", err)
	}
	if _, err := epInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: a.onSlice,
		UpdateFunc: func(old, obj any) {
			// A slice that moves to another Service leaves the old one.
			if o, n := sliceService(old), sliceService(obj); o != n {
				a.onSlice(old)
			}
			a.onSlice(obj)
		},
		DeleteFunc: a.onSlice,
	}); err != nil {
		return nil, fmt.Errorf("watch EndpointSlices: %w", err)
	}
	return a, nil
}

func sliceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

// sliceService is the Service an EndpointSlice event belongs to; zero without the
// label.
func sliceService(obj any) types.NamespacedName {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return types.NamespacedName{}
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return types.NamespacedName{}
	}
	return types.NamespacedName{Namespace: es.Namespace, Name: name}
}

func (a *Agent) onService(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	a.enqueue(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
}

func (a *Agent) onSlice(obj any) {
	n := sliceService(obj)
	if n.Name == "" {
		// Not managed for a Service (kube-proxy ignores these too).
		a.events.Add(1)
		return
	}
	a.enqueue(n)
}

func (a *Agent) enqueue(n types.NamespacedName) {
	a.mu.Lock()
	if len(a.dirty) == 0 {
		a.firstEvent = time.Now()
	}
	a.dirty[n] = struct{}{}
	a.mu.Unlock()
	a.events.Add(1)
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// takeDirty empties the dirty set.
func (a *Agent) takeDirty() ([]types.NamespacedName, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]types.NamespacedName, 0, len(a.dirty))
	for n := range a.dirty {
		names = append(names, n)
	}
	clear(a.dirty)
	return names, a.firstEvent
}

// Ready is closed once the first full Sync has been made.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run starts the informers, programs the full state once, and then follows changes
// until ctx is done. The datapath is left as it is: it keeps balancing with the
// last programmed state. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.factory.Start(ctx.Done())
	defer a.factory.Shutdown()

	a.log.Info("waiting for Service and EndpointSlice caches")
	if !cache.WaitForCacheSync(ctx.Done(), a.svcSynced, a.epSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("agent: informer caches did not sync")
	}
	a.st = newState(a)
	_, first := a.takeDirty() // the full sync below covers them
	a.st.fullSync(first)
	close(a.ready)

	retry := time.NewTicker(a.cfg.RetryInterval)
	defer retry.Stop()
	var last time.Time
	for {
		doRetry := false
		select {
		case <-ctx.Done():
			a.log.Info("stopping; the datapath keeps its state")
			return nil
		case <-a.kick:
		case <-retry.C:
			doRetry = true
		}
		if wait := a.cfg.MinInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		names, first := a.takeDirty()
		a.st.flush(names, first, doRetry)
		last = time.Now()
		if doRetry {
			a.retries.Add(1)
		}
	}
}

// listAll is every Service name the caches know, and every name EndpointSlices
// point at.
func (a *Agent) listAll() ([]types.NamespacedName, error) {
	svcs, err := a.services.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list Services: %w", err)
	}
	seen := make(map[types.NamespacedName]bool, len(svcs))
	var out []types.NamespacedName
	for _, s := range svcs {
		n := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		seen[n] = true
		out = append(out, n)
	}
	for _, k := range a.slices.ListIndexFuncValues(serviceNameIndex) {
		ns, name, err := cache.SplitMetaNamespaceKey(k)
		if err != nil {
			continue
		}
		n := types.NamespacedName{Namespace: ns, Name: name}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// get returns the Service (nil if it does not exist) and its EndpointSlices.
func (a *Agent) get(n types.NamespacedName) (*corev1.Service, []*discoveryv1.EndpointSlice, error) {
	objs, err := a.slices.ByIndex(serviceNameIndex, n.Namespace+"/"+n.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("EndpointSlices of %s: %w", n, err)
	}
	eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			eps = append(eps, es)
		}
	}
	svc, err := a.services.Services(n.Namespace).Get(n.Name)
	if apierrors.IsNotFound(err) {
		return nil, eps, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("Service %s: %w", n, err)
	}
	return svc, eps, nil
}

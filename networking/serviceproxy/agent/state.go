package agent

import (
	"cmp"
	"log/slog"
	"slices"
	"time"

	"github.com/kiln-os/kiln/networking/serviceproxy"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

type key = serviceproxy.ServiceKey

// wantEntry is the desired state of one ServiceKey and the Service that asks for it.
type wantEntry struct {
	owner types.NamespacedName
	svc   serviceproxy.Service
	held  bool // the last good state of a Service whose translation failed
}

// state is the desired state, the mirror of the datapath and the diff between them.
// Only the Run goroutine uses it.
type state struct {
	a    *Agent
	log  *slog.Logger
	dp   Datapath
	opts translateOptions

	programmed map[key]serviceproxy.Service // mirror of the datapath
	want       map[key]wantEntry
	owned      map[types.NamespacedName][]key
	// conflicts are the Services that also asked for a key someone else owns:
	// they are recomputed when the owner lets go.
	conflicts map[key]map[types.NamespacedName]bool
	// feOwner and feOwned are who serves each frontend (NodePort, externalIP,
	// load balancer IP); feConflicts, like conflicts, are the Services that also
	// asked for one and were programmed without it.
	feOwner     map[key]types.NamespacedName
	feOwned     map[types.NamespacedName][]key
	feConflicts map[key]map[types.NamespacedName]bool
	// health are the keys last given to the health server; healthFailed is set
	// while it could not open some port.
	health       map[key]bool
	healthFailed bool
	failed       map[key]serviceproxy.Service // desired states the datapath refused, until retried
	retry        map[key]bool                 // deletes that did not happen
	// unknown are Service names that EndpointSlices point at but that do not
	// exist. The EndpointSlice controller creates slices after their Service
	// and the garbage collector removes them after it, and the two informers do
	// not see events in one order: only a slice still orphaned after
	// RetryInterval is reported.
	unknown map[types.NamespacedName]*orphans
	// untranslatable holds, per Service, the last translation failure counted: the
	// same failure seen again (the Service recomputed for an unrelated event) is
	// not counted twice.
	untranslatable map[types.NamespacedName]string
}

// orphans are the EndpointSlices of one missing Service.
type orphans struct {
	since time.Time
	// reported are the slice objects already counted. A new version of a slice
	// is a new object in the informer's cache.
	reported map[string]*discoveryv1.EndpointSlice
}

// newState adopts what the datapath holds.
func newState(a *Agent) *state {
	dp := a.cfg.Datapath
	s := &state{
		a:              a,
		log:            a.log,
		dp:             dp,
		opts:           translateOptions{nodeName: a.cfg.NodeName, perService: int(dp.Stats().Limits.PerService), log: a.log},
		programmed:     make(map[key]serviceproxy.Service),
		want:           make(map[key]wantEntry),
		owned:          make(map[types.NamespacedName][]key),
		conflicts:      make(map[key]map[types.NamespacedName]bool),
		feOwner:        make(map[key]types.NamespacedName),
		feOwned:        make(map[types.NamespacedName][]key),
		feConflicts:    make(map[key]map[types.NamespacedName]bool),
		health:         make(map[key]bool),
		failed:         make(map[key]serviceproxy.Service),
		retry:          make(map[key]bool),
		unknown:        make(map[types.NamespacedName]*orphans),
		untranslatable: make(map[types.NamespacedName]string),
	}
	for _, svc := range dp.Services() {
		s.programmed[svc.ServiceKey] = svc
	}
	return s
}

// fullSync computes the whole desired state and programs it with one Sync, which
// also removes whatever the datapath holds that is no longer wanted.
func (s *state) fullSync(first time.Time) {
	adopted := len(s.programmed)
	names, err := s.a.listAll()
	if err != nil {
		s.log.Error("list cached objects", "error", err)
	}
	s.recomputeAll(names, make(map[key]bool))
	desired := make([]serviceproxy.Service, 0, len(s.want))
	for _, w := range s.want {
		desired = append(desired, w.svc)
	}
	slices.SortFunc(desired, func(x, y serviceproxy.Service) int { return compareKeys(x.ServiceKey, y.ServiceKey) })
	var stale []key
	for k := range s.programmed {
		if _, ok := s.want[k]; !ok {
			stale = append(stale, k)
		}
	}
	start := time.Now()
	err = s.dp.Sync(desired)
	s.a.m.callDuration.WithLabelValues("sync").Observe(time.Since(start).Seconds())
	if err != nil {
		s.afterError("sync", err, desired, stale)
	} else {
		clear(s.programmed)
		for _, d := range desired {
			s.programmed[d.ServiceKey] = d
		}
	}
	if first.IsZero() {
		first = start
	}
	s.a.m.syncLatency.Observe(time.Since(first).Seconds())
	s.a.m.setStats(s.dp.Stats())
	s.syncHealth()
	s.log.Info("programmed the full service state", "services", len(desired), "adopted", adopted,
		"removed", len(stale), "kubernetes_services", len(s.owned), "duration", time.Since(start))
}

// flush recomputes the named Services and programs what changed. With retry, the
// Services the datapath refused are tried again.
func (s *state) flush(names []types.NamespacedName, first time.Time, retry bool) {
	changed := make(map[key]bool)
	s.recomputeAll(names, changed)
	if retry {
		for k := range s.failed {
			changed[k] = true
		}
		for k := range s.retry {
			changed[k] = true
		}
		clear(s.failed)
		clear(s.retry)
		s.reportOrphans(s.a.cfg.RetryInterval)
	}
	ups, dels := s.diff(changed)
	// The datapath applies upserts before deletes and refuses a frontend that
	// another service still holds: the upserts that gain a frontend go in a
	// second Update, after the deletes and upserts that may free it.
	var later []serviceproxy.Service
	if len(ups) > 0 {
		now := ups[:0:0]
		for _, u := range ups {
			if addsFrontend(u, s.programmed[u.ServiceKey]) && (len(dels) > 0 || len(ups) > 1) {
				later = append(later, u)
			} else {
				now = append(now, u)
			}
		}
		ups = now
	}
	s.update(ups, dels, len(names))
	s.update(later, nil, len(names))
	if len(names) > 0 {
		s.a.m.syncLatency.Observe(time.Since(first).Seconds())
	}
	s.a.m.setStats(s.dp.Stats())
	if retry && s.healthFailed {
		s.syncHealth()
		return
	}
	for k := range changed {
		if s.health[k] || s.want[k].svc.HealthCheckNodePort != 0 {
			s.syncHealth()
			break
		}
	}
}

// update programs ups and dels with one Update and mirrors the result.
func (s *state) update(ups []serviceproxy.Service, dels []key, names int) {
	if len(ups)+len(dels) == 0 {
		return
	}
	start := time.Now()
	err := s.dp.Update(ups, dels)
	s.a.m.callDuration.WithLabelValues("update").Observe(time.Since(start).Seconds())
	if err != nil {
		s.afterError("update", err, ups, dels)
	} else {
		for _, u := range ups {
			s.programmed[u.ServiceKey] = u
		}
		for _, k := range dels {
			delete(s.programmed, k)
		}
	}
	s.log.Debug("updated the datapath", "services", names, "upserts", len(ups), "deletes", len(dels), "duration", time.Since(start))
}

// syncHealth gives the health server every wanted Service with a health-check
// node port.
func (s *state) syncHealth() {
	h := s.a.cfg.Health
	if h == nil {
		return
	}
	var svcs []serviceproxy.Service
	clear(s.health)
	for k, w := range s.want {
		if w.svc.HealthCheckNodePort != 0 {
			svcs = append(svcs, w.svc)
			s.health[k] = true
		}
	}
	slices.SortFunc(svcs, func(x, y serviceproxy.Service) int { return compareKeys(x.ServiceKey, y.ServiceKey) })
	ports := map[uint16]bool{}
	for _, svc := range svcs {
		ports[svc.HealthCheckNodePort] = true
	}
	s.a.m.healthPorts.Set(float64(len(ports)))
	err := h.Sync(svcs)
	s.healthFailed = err != nil
	if err != nil {
		s.a.m.errors.WithLabelValues(ReasonHealthCheck).Inc()
		s.log.Error("health-check node ports; retrying", "error", err)
	}
}

// diff lists what must change in the datapath for the keys in changed.
func (s *state) diff(changed map[key]bool) (ups []serviceproxy.Service, dels []key) {
	for k := range changed {
		w, wanted := s.want[k]
		p, programmed := s.programmed[k]
		switch {
		case wanted && programmed && sameService(w.svc, p):
			delete(s.failed, k)
		case wanted:
			if f, ok := s.failed[k]; ok && sameService(f, w.svc) {
				continue // refused as it is; wait for the retry
			}
			delete(s.failed, k)
			ups = append(ups, w.svc)
		case programmed:
			dels = append(dels, k)
		}
	}
	slices.SortFunc(ups, func(x, y serviceproxy.Service) int { return compareKeys(x.ServiceKey, y.ServiceKey) })
	slices.SortFunc(dels, compareKeys)
	return ups, dels
}

// afterError reads back what the datapath holds after it refused some of ups or
// dels: those keep their last good state, are logged with the datapath's reason,
// counted by it, and wait for a retry.
func (s *state) afterError(op string, err error, ups []serviceproxy.Service, dels []key) {
	refusals := map[key]*serviceproxy.ServiceError{}
	for _, se := range serviceproxy.ServiceErrors(err) {
		refusals[se.Key] = se
	}
	if !serviceproxy.RefusalsOnly(err) {
		s.log.Error("the datapath refused some services; they keep their last good state", "op", op, "error", err)
	}
	clear(s.programmed)
	for _, svc := range s.dp.Services() {
		s.programmed[svc.ServiceKey] = svc
	}
	n := 0
	count := func(k key) {
		n++
		reason, detail := ReasonDatapath, "" // no refusal of its own: a map write failed
		if se, ok := refusals[k]; ok {
			reason, detail = refusalReason(se.Reason), se.Err.Error()
		}
		s.a.m.errors.WithLabelValues(reason).Inc()
		s.log.Warn("service not programmed; it keeps its last good state", "op", op, "service", k.String(),
			"owner", s.want[k].owner.String(), "reason", reason, "error", detail)
	}
	for _, u := range ups {
		if p, ok := s.programmed[u.ServiceKey]; ok && sameService(p, u) {
			continue
		}
		s.failed[u.ServiceKey] = u
		count(u.ServiceKey)
	}
	for _, k := range dels {
		if _, ok := s.programmed[k]; ok {
			s.retry[k] = true
			count(k)
		}
	}
	if n == 0 {
		// The error named no service we can find: count it once.
		s.a.m.errors.WithLabelValues(ReasonDatapath).Inc()
	}
}

// recomputeAll recomputes the named Services, and those waiting for a key one of
// them lets go.
func (s *state) recomputeAll(names []types.NamespacedName, changed map[key]bool) {
	queue := slices.Clone(names)
	slices.SortFunc(queue, func(x, y types.NamespacedName) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		s.recompute(n, changed, func(w types.NamespacedName) { queue = append(queue, w) })
	}
}

// recompute replaces what Service n wants.
func (s *state) recompute(n types.NamespacedName, changed map[key]bool, requeue func(types.NamespacedName)) {
	old := s.owned[n]
	for _, k := range old {
		changed[k] = true
		if w, ok := s.want[k]; ok && w.owner == n {
			delete(s.want, k)
			for c := range s.conflicts[k] {
				if c != n {
					requeue(c)
				}
			}
			delete(s.conflicts, k)
		}
	}
	delete(s.owned, n)
	for _, f := range s.feOwned[n] {
		if s.feOwner[f] == n {
			delete(s.feOwner, f)
			for c := range s.feConflicts[f] {
				if c != n {
					requeue(c)
				}
			}
			delete(s.feConflicts, f)
		}
	}
	delete(s.feOwned, n)

	log := s.log.With("service", n.String())
	svc, eps, err := s.a.get(n)
	if err != nil {
		log.Error("read cached objects", "error", err)
		s.hold(n, old, changed)
		return
	}
	if svc == nil {
		delete(s.untranslatable, n)
		if len(eps) == 0 {
			delete(s.unknown, n)
		} else if s.unknown[n] == nil {
			s.unknown[n] = &orphans{since: time.Now(), reported: map[string]*discoveryv1.EndpointSlice{}}
		}
		return
	}
	delete(s.unknown, n)

	tr, terr := translate(svc, eps, s.opts.withLog(log))
	if terr != nil {
		if what := terr.reason + ": " + terr.err.Error(); s.untranslatable[n] != what {
			s.untranslatable[n] = what
			s.a.m.errors.WithLabelValues(terr.reason).Inc()
			log.Error("cannot program service; it keeps its last good state", "reason", terr.reason, "error", terr.err)
		} else {
			log.Debug("still cannot program service", "reason", terr.reason, "error", terr.err)
		}
		s.hold(n, append(old, tr.keys...), changed)
		return
	}
	delete(s.untranslatable, n)
	if tr.skipped != "" {
		log.Debug("service not balanced", "why", tr.skipped)
		return
	}
	for _, svc := range tr.services {
		k := svc.ServiceKey
		changed[k] = true
		if w, ok := s.want[k]; ok && w.owner != n {
			if s.conflicts[k] == nil {
				s.conflicts[k] = make(map[types.NamespacedName]bool)
			}
			s.conflicts[k][n] = true
			s.a.m.errors.WithLabelValues(ReasonDuplicateFrontend).Inc()
			log.Error("frontend already belongs to another service", "frontend", k.String(), "owner", w.owner.String())
			continue
		}
		s.want[k] = wantEntry{owner: n, svc: s.claimFrontends(n, svc, log)}
		s.owned[n] = append(s.owned[n], k)
	}
}

// claimFrontends gives Service n the frontends of svc that no other Service
// serves, and returns svc without the others.
func (s *state) claimFrontends(n types.NamespacedName, svc serviceproxy.Service, log *slog.Logger) serviceproxy.Service {
	for _, f := range frontendKeys(svc) {
		owner, taken := s.feOwner[f]
		if taken && owner != n {
			if s.feConflicts[f] == nil {
				s.feConflicts[f] = make(map[types.NamespacedName]bool)
			}
			s.feConflicts[f][n] = true
			s.a.m.errors.WithLabelValues(ReasonDuplicateFrontend).Inc()
			log.Error("frontend already belongs to another service; serving the service without it", "frontend", f.String(), "owner", owner.String())
			svc = withoutFrontend(svc, f)
			continue
		}
		if !taken {
			s.feOwner[f] = n
			s.feOwned[n] = append(s.feOwned[n], f)
		}
	}
	return svc
}

// hold keeps the programmed state of keys for Service n.
func (s *state) hold(n types.NamespacedName, keys []key, changed map[key]bool) {
	for _, k := range keys {
		changed[k] = true
		p, ok := s.programmed[k]
		if !ok {
			continue
		}
		if _, taken := s.want[k]; taken {
			continue
		}
		s.want[k] = wantEntry{owner: n, svc: s.claimFrontends(n, p, s.log.With("service", n.String())), held: true}
		s.owned[n] = append(s.owned[n], k)
	}
}

// reportOrphans counts, once per slice version, EndpointSlices whose Service has
// been missing for at least grace.
func (s *state) reportOrphans(grace time.Duration) {
	for n, o := range s.unknown {
		if time.Since(o.since) < grace {
			continue
		}
		svc, eps, err := s.a.get(n)
		if err != nil || svc != nil || len(eps) == 0 {
			// The Service (or the slices' removal) has arrived; its event
			// recomputes it.
			delete(s.unknown, n)
			continue
		}
		now := make(map[string]*discoveryv1.EndpointSlice, len(eps))
		for _, es := range eps {
			now[es.Name] = es
			if o.reported[es.Name] == es {
				continue
			}
			s.a.m.errors.WithLabelValues(ReasonUnknownService).Inc()
			s.log.Warn("EndpointSlice for a Service that does not exist", "slice", es.Namespace+"/"+es.Name, "service", n.String())
		}
		o.reported = now
	}
}

func (o translateOptions) withLog(l *slog.Logger) translateOptions {
	o.log = l
	return o
}

func compareKeys(x, y key) int {
	if c := x.Addr.Compare(y.Addr); c != 0 {
		return c
	}
	if x.Port != y.Port {
		return int(x.Port) - int(y.Port)
	}
	return int(x.Proto) - int(y.Proto)
}

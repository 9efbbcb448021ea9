package agent

import (
	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus collectors, registered on the registry the
// caller gives (never the global one).
type metrics struct {
	services     prometheus.Gauge
	backends     prometheus.Gauge
	mapEntries   *prometheus.GaugeVec
	mapFill      *prometheus.GaugeVec
	syncLatency  prometheus.Histogram
	callDuration *prometheus.HistogramVec
	errors       *prometheus.CounterVec
	healthPorts  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_proxy_programmed_services",
			Help: "Service ports (ClusterIP:port/protocol) programmed in the datapath.",
		}),
		backends: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_proxy_programmed_backends",
			Help: "Distinct backend addresses programmed in the datapath.",
		}),
		mapEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_proxy_map_entries",
			Help: "Entries in each datapath map.",
		}, []string{"map"}),
		mapFill: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_proxy_map_fill_ratio",
			Help: "Entries in each datapath map divided by its size (1 is full).",
		}, []string{"map"}),
		syncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kiln_proxy_sync_latency_seconds",
			Help:    "Time from the oldest Service or EndpointSlice event of a flush to the datapath having been programmed.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. 16 s
		}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_proxy_datapath_call_duration_seconds",
			Help:    "Duration of datapath Sync and Update calls.",
			Buckets: prometheus.ExponentialBuckets(0.00002, 2, 18), // 20 µs .. 2.6 s
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_proxy_errors_total",
			Help: "Services not programmed as desired, by reason; each keeps its last good state.",
		}, []string{"reason"}),
		healthPorts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_proxy_health_check_node_ports",
			Help: "Health-check node ports of externalTrafficPolicy Local Services given to the health server.",
		}),
	}
	for _, r := range reasons {
		m.errors.WithLabelValues(r)
	}
	for _, op := range []string{"sync", "update"} {
		m.callDuration.WithLabelValues(op)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.services, m.backends, m.mapEntries, m.mapFill, m.syncLatency, m.callDuration, m.errors, m.healthPorts} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) setStats(st serviceproxy.Stats) {
	m.services.Set(float64(st.Services))
	m.backends.Set(float64(st.Backends))
	for _, x := range []struct {
		name  string
		n     int
		limit uint32
	}{
		{"services", st.Services, st.Limits.Services},
		{"backends", st.Backends, st.Limits.Backends},
		{"slots", st.Slots, st.Limits.Slots},
		{"frontends", st.Frontends, st.Limits.Frontends},
	} {
		m.mapEntries.WithLabelValues(x.name).Set(float64(x.n))
		if x.limit > 0 {
			m.mapFill.WithLabelValues(x.name).Set(float64(x.n) / float64(x.limit))
		}
	}
}

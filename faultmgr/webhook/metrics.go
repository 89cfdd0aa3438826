package webhook

import "github.com/prometheus/client_golang/prometheus"

// metrics are the delivery metrics; the lag is computed at each scrape
// from the running workers' cursors and the log's head.
type metrics struct {
	m          *Manager
	deliveries *prometheus.CounterVec
	duration   prometheus.Histogram
	lag        *prometheus.Desc
}

func newMetrics(m *Manager) *metrics {
	return &metrics{
		m: m,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_webhook_deliveries_total",
			Help: "Webhook delivery attempts by webhook and result (ok: 2xx; failed: anything else, retried).",
		}, []string{"webhook", "result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "petrel_webhook_delivery_duration_seconds",
			Help:    "Time from sending a webhook delivery to its answer (or failure).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		lag: prometheus.NewDesc("petrel_webhook_lag_events",
			"Events in the log after a running webhook's cursor (not yet delivered or skipped).", []string{"webhook"}, nil),
	}
}

func (x *metrics) ok(id string)     { x.deliveries.WithLabelValues(id, "ok").Inc() }
func (x *metrics) failed(id string) { x.deliveries.WithLabelValues(id, "failed").Inc() }

// forget drops a deleted webhook's series.
func (x *metrics) forget(id string) {
	x.deliveries.DeleteLabelValues(id, "ok")
	x.deliveries.DeleteLabelValues(id, "failed")
}

func (x *metrics) Describe(ch chan<- *prometheus.Desc) {
	x.deliveries.Describe(ch)
	x.duration.Describe(ch)
	ch <- x.lag
}

func (x *metrics) Collect(ch chan<- prometheus.Metric) {
	x.deliveries.Collect(ch)
	x.duration.Collect(ch)
	head, _ := x.m.cfg.Log.Watch()
	x.m.mu.Lock()
	defer x.m.mu.Unlock()
	for id, wk := range x.m.workers {
		lag := uint64(0)
		if c := wk.cursor.Load(); head > c {
			lag = head - c
		}
		ch <- prometheus.MustNewConstMetric(x.lag, prometheus.GaugeValue, float64(lag), id)
	}
}

// Package prometheus exports the restarts, workers and requests of a
// graceful.Server as Prometheus metrics. It is a module of its own, so
// that the graceful module itself depends on no Prometheus code.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(gracefulprom.NewCollector(srv))
//	srv.Extra = append(srv.Extra, &http.Server{
//		Addr:    "127.0.0.1:9100",
//		Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
//	})
//
// The collector reads the server's [graceful.Server.TreeStatus] at each
// scrape, so its numbers are those `gracectl stats` prints. In a cluster,
// the master serves nothing: the scrape reaches a worker, which asks its
// master over the control socket, so set Control; the numbers then cover
// the whole tree. Without Control, a worker exports only graceful_up and
// its own request metrics.
//
// Restart and respawn counters carry on across hot restarts; request
// counters are those of the serving process (a cluster's master) and
// start again at 0 in its successor, which Prometheus's rate and increase
// take as a counter reset.
package prometheus

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gograceful/graceful"
)

// The metrics, by name.
var (
	restartsDesc = prometheus.NewDesc("graceful_restarts_total",
		"Restarts by kind (hot: the process or the whole tree replaced; phased: the workers replaced one at a time) and outcome (ok, failed), since the service started.",
		[]string{"kind", "outcome"}, nil)
	lastRestartDesc = prometheus.NewDesc("graceful_last_restart_duration_seconds",
		"How long the last restart of the kind took; 0 when there was none.",
		[]string{"kind"}, nil)
	drainDesc = prometheus.NewDesc("graceful_drain_duration_seconds",
		"How long the last worker drain took, from the master's order to the worker's exit (cluster mode).",
		nil, nil)
	workersDesc = prometheus.NewDesc("graceful_workers",
		"Worker processes by state: booting, ready or draining (cluster mode).",
		[]string{"state"}, nil)
	workersWantedDesc = prometheus.NewDesc("graceful_workers_wanted",
		"The number of workers the master keeps running (cluster mode).",
		nil, nil)
	respawnsDesc = prometheus.NewDesc("graceful_worker_respawns_total",
		"Workers started in place of one that died, missed its heartbeat or failed to boot (cluster mode).",
		nil, nil)
	generationDesc = prometheus.NewDesc("graceful_generation",
		"Phased restarts the master has begun since it started (cluster mode).",
		nil, nil)
	inFlightDesc = prometheus.NewDesc("graceful_requests_in_flight",
		"Requests being served now; in a cluster, by every worker as of its last heartbeat.",
		nil, nil)
	requestsDesc = prometheus.NewDesc("graceful_requests_total",
		"Requests served by this process; in a cluster, by the master's workers, present and past.",
		nil, nil)
	upDesc = prometheus.NewDesc("graceful_up",
		"1 if the server's status could be read, else 0.",
		nil, nil)
)

// scrapeTimeout bounds the reading of the status at a scrape.
const scrapeTimeout = 5 * time.Second

// collector is the prometheus.Collector of a graceful.Server.
type collector struct {
	srv *graceful.Server
}

// NewCollector returns a collector of srv's metrics. Register it once,
// with a registry that a handler of srv (or of one of its Extra servers)
// serves.
func NewCollector(srv *graceful.Server) prometheus.Collector {
	return &collector{srv: srv}
}

// Describe sends the descriptions of every metric the collector exports.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{restartsDesc, lastRestartDesc, drainDesc, workersDesc, workersWantedDesc,
		respawnsDesc, generationDesc, inFlightDesc, requestsDesc, upDesc} {
		ch <- d
	}
}

// Collect reads the server's status and sends its metrics. When the status
// cannot be read (the server is not serving, or a worker cannot reach its
// master), only graceful_up, 0, is sent.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	st, err := c.srv.TreeStatus(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(inFlightDesc, float64(st.RequestsInFlight))
	counter(requestsDesc, st.RequestsTotal)
	if st.Mode == "worker" {
		// A worker that cannot ask its master (no Control): its own
		// requests only; the restarts are the master's to count.
		return
	}
	counter(restartsDesc, st.HotRestartsOK, "hot", "ok")
	counter(restartsDesc, st.HotRestartsFailed, "hot", "failed")
	gauge(lastRestartDesc, st.LastHotRestartSeconds, "hot")
	if st.Mode != "cluster" {
		return
	}
	counter(restartsDesc, st.PhasedRestartsOK, "phased", "ok")
	counter(restartsDesc, st.PhasedRestartsFailed, "phased", "failed")
	gauge(lastRestartDesc, st.LastPhasedRestartSeconds, "phased")
	gauge(drainDesc, st.LastDrainSeconds)
	counter(respawnsDesc, st.WorkerRespawns)
	gauge(workersWantedDesc, float64(st.WorkersWanted))
	gauge(generationDesc, float64(st.Generation))
	states := map[string]int{"booting": 0, "ready": 0, "draining": 0}
	for _, w := range st.Workers {
		states[w.State]++
	}
	for state, n := range states {
		gauge(workersDesc, float64(n), state)
	}
}

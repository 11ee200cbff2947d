package cluster

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics/compat"
	promsink "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsPrefix is the prefix of every metric raft, raft-boltdb and
// memberlist emit through go-metrics, as Prometheus names them:
// cube_raft_apply, cube_memberlist_gossip, ...
const MetricsPrefix = "cube"

// goMetricsRetention is how long a go-metrics series not updated stays in
// /metrics. Longer than any usual scrape interval, so a counter that moves
// rarely is not lost between scrapes; short enough that the gauges only a
// leader sets (raft's commit time, oldest log age) leave the output of a
// manager that no longer leads.
const goMetricsRetention = 2 * time.Minute

// goMetrics is the one go-metrics sink of the process.
var goMetrics struct {
	once sync.Once
	reg  *prometheus.Registry
	err  error
}

// GoMetrics returns the metrics raft, raft-boltdb and memberlist emit, as a
// Prometheus Gatherer, and installs on first use the go-metrics sink that
// collects them.
//
// The sink is process-wide: those libraries emit through go-metrics'
// global functions (raft v1.7.3 and memberlist v0.6.0 import
// hashicorp/go-metrics/compat, which forwards to armon/go-metrics unless
// the build tag hashicorpmetrics picks hashicorp/go-metrics; the compat
// packages used here follow the same tag, so the sink always sits where
// they emit). One process runs one node in production; where tests run
// several, raft's series are their sum, and memberlist's carry a node
// label (GossipConfig.Name) that tells them apart. Each node's own
// metrics live in a registry of its own.
func GoMetrics() (prometheus.Gatherer, error) {
	goMetrics.once.Do(func() {
		reg := prometheus.NewRegistry()
		sink, err := promsink.NewPrometheusSinkFrom(promsink.PrometheusOpts{
			Name:       "cube_go_metrics_sink",
			Expiration: goMetricsRetention,
			Registerer: reg,
		})
		if err != nil {
			goMetrics.err = fmt.Errorf("go-metrics prometheus sink: %w", err)
			return
		}
		conf := metrics.DefaultConfig(MetricsPrefix)
		conf.EnableHostname = false       // the scraper labels the target
		conf.EnableRuntimeMetrics = false // each node registers Go's own collector
		if _, err := metrics.NewGlobal(conf, sink); err != nil {
			goMetrics.err = fmt.Errorf("go-metrics global sink: %w", err)
			return
		}
		goMetrics.reg = reg
	})
	return goMetrics.reg, goMetrics.err
}

// MetricsHandler serves GET /metrics of one node in Prometheus' text
// format: the node's own series (node, its registry) and those of raft,
// raft-boltdb and memberlist (GoMetrics). Scrapes are bounded in time and
// in number at once; an error in one series is logged and the others are
// still served.
func MetricsHandler(node prometheus.Gatherer, logger hclog.Logger) (http.Handler, error) {
	lib, err := GoMetrics()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return promhttp.HandlerFor(prometheus.Gatherers{node, lib}, promhttp.HandlerOpts{
		ErrorLog:            metricsErrorLog{logger.Named("metrics")},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}), nil
}

// metricsErrorLog passes promhttp's errors to hclog.
type metricsErrorLog struct{ log hclog.Logger }

// Println implements promhttp.Logger.
func (l metricsErrorLog) Println(v ...any) {
	l.log.Warn("serving metrics", "error", fmt.Sprint(v...))
}

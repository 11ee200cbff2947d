package worker

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// agentMetrics are a worker agent's own Prometheus series, in a registry of
// its own (no global state: tests run several agents in one process).
type agentMetrics struct {
	reg     *prometheus.Registry
	calls   *prometheus.HistogramVec
	reports *prometheus.CounterVec
}

// newAgentMetrics returns the metrics of an agent; tasks lists the
// worker's task records at each scrape, runtimeUp reports whether the
// engine answered its last ping.
func newAgentMetrics(tasks func() []api.Task, runtimeUp func() bool) *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cube_worker_runtime_call_seconds",
			Help:    "Duration of the worker's calls to its container engine (Docker), by operation and result (ok or error).",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"op", "result"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cube_worker_reports_total",
			Help: "Reports of task changes the worker sent to the managers, by result (ok, or error: retried).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.calls, m.reports,
		&taskCollector{tasks: tasks},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cube_worker_runtime_up",
			Help: "1 if the worker can run containers: its container engine answered the last ping and its task records could be written, else 0.",
		}, func() float64 {
			if runtimeUp() {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, r := range []string{"ok", "error"} {
		m.reports.WithLabelValues(r) // present at 0 from the start
	}
	return m
}

// report counts one report sent with the result err.
func (m *agentMetrics) report(err error) {
	m.reports.WithLabelValues(result(err)).Inc()
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

var descWorkerTasks = prometheus.NewDesc("cube_worker_tasks",
	"Task records this worker holds, by state (pending, scheduled, running, completed, failed).", []string{"state"}, nil)

// taskCollector counts the worker's task records at each scrape.
type taskCollector struct {
	tasks func() []api.Task
}

// Describe implements prometheus.Collector.
func (c *taskCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descWorkerTasks }

// Collect implements prometheus.Collector.
func (c *taskCollector) Collect(ch chan<- prometheus.Metric) {
	var n [api.Failed + 1]int
	for _, t := range c.tasks() {
		if t.State.Valid() {
			n[t.State]++
		}
	}
	for s, v := range n {
		ch <- prometheus.MustNewConstMetric(descWorkerTasks, prometheus.GaugeValue, float64(v), strings.ToLower(api.State(s).String()))
	}
}

// timedRuntime is a Runtime that times every call to the one it wraps
// (cube_worker_runtime_call_seconds). Watch is a stream, not a call: it is
// passed through untimed.
type timedRuntime struct {
	rt    Runtime
	calls *prometheus.HistogramVec
}

var _ Runtime = (*timedRuntime)(nil)

// observe records a call of op that began at start and ended with err. A
// call its caller cancelled says nothing of the engine and is not counted.
func (r *timedRuntime) observe(op string, start time.Time, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	r.calls.WithLabelValues(op, result(err)).Observe(time.Since(start).Seconds())
}

func (r *timedRuntime) Ping(ctx context.Context) error {
	start := time.Now()
	err := r.rt.Ping(ctx)
	r.observe("ping", start, err)
	return err
}

func (r *timedRuntime) EnsureImage(ctx context.Context, image string) error {
	start := time.Now()
	err := r.rt.EnsureImage(ctx, image)
	r.observe("ensure_image", start, err)
	return err
}

func (r *timedRuntime) Create(ctx context.Context, spec Spec) (string, error) {
	start := time.Now()
	id, err := r.rt.Create(ctx, spec)
	r.observe("create", start, err)
	return id, err
}

func (r *timedRuntime) Start(ctx context.Context, containerID string) error {
	start := time.Now()
	err := r.rt.Start(ctx, containerID)
	r.observe("start", start, err)
	return err
}

func (r *timedRuntime) Stop(ctx context.Context, containerID string, grace time.Duration) error {
	start := time.Now()
	err := r.rt.Stop(ctx, containerID, grace)
	r.observe("stop", start, err)
	return err
}

func (r *timedRuntime) Remove(ctx context.Context, containerID string) error {
	start := time.Now()
	err := r.rt.Remove(ctx, containerID)
	r.observe("remove", start, err)
	return err
}

func (r *timedRuntime) Inspect(ctx context.Context, containerID string) (ContainerStatus, error) {
	start := time.Now()
	st, err := r.rt.Inspect(ctx, containerID)
	r.observe("inspect", start, err)
	return st, err
}

func (r *timedRuntime) List(ctx context.Context, labels map[string]string) ([]ContainerStatus, error) {
	start := time.Now()
	cs, err := r.rt.List(ctx, labels)
	r.observe("list", start, err)
	return cs, err
}

func (r *timedRuntime) Logs(ctx context.Context, containerID string, opts api.LogOptions) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := r.rt.Logs(ctx, containerID, opts)
	r.observe("logs", start, err)
	return rc, err
}

func (r *timedRuntime) Watch(ctx context.Context, labels map[string]string) <-chan Event {
	return r.rt.Watch(ctx, labels)
}

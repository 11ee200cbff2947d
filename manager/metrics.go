package manager

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are a manager's own Prometheus series, in a registry of its own
// (no global state: tests run several managers in one process). Every
// manager reports the replicated state it holds (tasks by state, pending
// reasons, workers); the counters and histograms of the control loop move
// on the leader only.
type metrics struct {
	reg *prometheus.Registry

	placements     prometheus.Counter
	restarts       *prometheus.CounterVec
	crashToRunning prometheus.Histogram
	passDuration   prometheus.Histogram
	rests          prometheus.Counter
	fullPasses     prometheus.Counter
	reportLag      prometheus.Histogram
	// lastPass is when the leader's last pass ended, nil before the first.
	// A time.Time, with its monotonic reading: a UnixNano read against the
	// wall clock made the age negative or minutes long, until the next
	// pass, when the clock was stepped.
	lastPass atomic.Pointer[time.Time]
}

// Reasons a task waits Pending, as the label of cube_tasks_pending: the
// scheduler's reasons name workers and sizes, too many values for a label,
// so each is filed under the kind of thing it waits for.
const (
	pendingNew        = "new"         // not yet considered by the leader
	pendingNoWorker   = "no_worker"   // no live worker at all
	pendingNoRoom     = "no_room"     // cpu, memory or disk
	pendingHostPort   = "host_port"   // its static host ports are taken
	pendingNotAllowed = "not_allowed" // no worker allows what it asks (privileged, mounts, ...)
	pendingRequeued   = "requeued"    // back to Pending: no room after a failure, a worker that lost it, ...
	pendingOther      = "other"
)

// pendingClass files a Pending task's Reason under one of the labels above.
func pendingClass(reason string) string {
	switch {
	case reason == "":
		return pendingNew
	case reason == "waiting for a live worker":
		return pendingNoWorker
	case strings.HasPrefix(reason, "no worker has room"):
		return pendingNoRoom
	case strings.HasPrefix(reason, "no worker allows"):
		return pendingNotAllowed
	case strings.HasPrefix(reason, "waiting for a worker with room after"), strings.Contains(reason, "has no record of it"),
		strings.Contains(reason, "placed again"):
		return pendingRequeued
	case strings.Contains(reason, "host port"):
		return pendingHostPort
	}
	return pendingOther
}

// newMetrics returns the metrics of a manager whose state is f; leading
// reports whether its control loop runs.
func newMetrics(f *fsm.FSM, leading func() bool) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		placements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cube_placements_total",
			Help: "Tasks the leader placed on a worker (a first placement, a re-placement after a lost worker, or a move off a draining worker); restarts are counted apart.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cube_restarts_total",
			Help: "Restarts the leader committed, by cause: exit (the container ended) or unhealthy (its health check failed).",
		}, []string{"cause"}),
		crashToRunning: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cube_crash_to_running_seconds",
			Help:    "From a container's end (its FinishTime) to its task running again (the new container's StartTime), by the workers' clocks, for tasks the leader restarted.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300},
		}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cube_leader_pass_seconds",
			Help:    "Duration of one pass of the leader's control loop.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		rests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cube_leader_pass_rests_total",
			Help: "Pauses the leader's control loop took after a pass over changed tasks that cost more than 2 ms, as long as the pass (at most 250 ms), so that passes take at most half a core.",
		}),
		fullPasses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cube_leader_full_passes_total",
			Help: "Passes of the leader's control loop that read every live task; the others read only the tasks changed since the previous pass (manager/passes.go).",
		}),
		reportLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cube_report_lag_seconds",
			Help:    "From a task's change on its worker (StartTime or FinishTime, the worker's clock) to the leader committing the report of it.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
	}
	m.reg.MustRegister(m.placements, m.restarts, m.crashToRunning, m.passDuration, m.rests, m.fullPasses, m.reportLag,
		&stateCollector{fsm: f},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cube_leader",
			Help: "1 while this manager runs the leader's control loop, else 0.",
		}, func() float64 {
			if leading() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cube_leader_last_pass_age_seconds",
			Help: "Time since the leader's control loop last finished a pass (0 on a manager that does not lead). It grows without bound when the loop is stuck.",
		}, func() float64 {
			last := m.lastPass.Load()
			if last == nil || !leading() {
				return 0
			}
			return time.Since(*last).Seconds()
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, cause := range []string{causeExit, causeUnhealthy} {
		m.restarts.WithLabelValues(cause) // present at 0 from the start, so rate() sees the first one
	}
	return m
}

// The causes of cube_restarts_total.
const (
	causeExit      = "exit"
	causeUnhealthy = "unhealthy"
)

// pass records one pass of the control loop that began at start.
func (m *metrics) pass(start time.Time) {
	now := time.Now()
	m.passDuration.Observe(now.Sub(start).Seconds())
	m.lastPass.Store(&now)
}

// reported records the report that moved a task from state prev to t.State.
func (m *metrics) reported(prev api.State, t api.Task, now time.Time) {
	if prev == t.State {
		return
	}
	var at time.Time
	switch {
	case t.State == api.Running:
		at = t.StartTime
	case t.State.Terminal():
		at = t.FinishTime
	}
	if at.IsZero() {
		return
	}
	m.reportLag.Observe(max(0, now.Sub(at).Seconds()))
}

// stateCollector reports the replicated state at each scrape: tasks by
// state, Pending tasks by reason, workers by liveness. One pass over the
// tasks under the FSM's read lock, no copy.
type stateCollector struct {
	fsm *fsm.FSM
}

var (
	descTasks = prometheus.NewDesc("cube_tasks",
		"Tasks in the replicated state, by state (pending, scheduled, running, completed, failed).", []string{"state"}, nil)
	descPending = prometheus.NewDesc("cube_tasks_pending",
		"Tasks waiting to be placed, by the kind of thing they wait for (new, no_worker, no_room, host_port, not_allowed, requeued, other).", []string{"reason"}, nil)
	descWorkers = prometheus.NewDesc("cube_workers",
		"Workers in the replicated state, by liveness (alive, suspect, dead, left).", []string{"state"}, nil)
	descServices = prometheus.NewDesc("cube_services",
		"Services in the replicated state, by the state of their last rollout (none, running, completed, failed, rolled-back).", []string{"rollout"}, nil)
)

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTasks
	ch <- descPending
	ch <- descWorkers
	ch <- descServices
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var byState [api.Failed + 1]int
	pending := map[string]int{}
	c.fsm.ScanTasks(func(t *api.Task) {
		if t.State.Valid() {
			byState[t.State]++
		}
		if t.State == api.Pending && t.DesiredState == api.Running {
			pending[pendingClass(t.Reason)]++
		}
	})
	for s, n := range byState {
		ch <- prometheus.MustNewConstMetric(descTasks, prometheus.GaugeValue, float64(n), strings.ToLower(api.State(s).String()))
	}
	for _, r := range []string{pendingNew, pendingNoWorker, pendingNoRoom, pendingHostPort, pendingNotAllowed, pendingRequeued, pendingOther} {
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(pending[r]), r)
	}
	workers := c.fsm.WorkerStates()
	for _, s := range []string{api.NodeAlive, api.NodeSuspect, api.NodeDead, api.NodeLeft} {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(workers[s]), s)
	}
	services := map[string]int{}
	for _, sv := range c.fsm.Services() {
		state := "none"
		if sv.Rollout != nil {
			state = sv.Rollout.State
		}
		services[state]++
	}
	for _, s := range []string{"none", api.RolloutRunning, api.RolloutCompleted, api.RolloutFailed, api.RolloutRolledBack} {
		ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(services[s]), s)
	}
}

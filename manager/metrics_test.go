package manager

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// sample is one series of a gathered registry: its value (a histogram's
// count, with its sum).
type sample struct {
	value, sum float64
	found      bool
}

// gather returns the series name{labels} of reg.
func gather(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return valueOf(mf.GetType(), m)
		}
	}
	return sample{}
}

func valueOf(typ dto.MetricType, m *dto.Metric) sample {
	switch typ {
	case dto.MetricType_COUNTER:
		return sample{value: m.GetCounter().GetValue(), found: true}
	case dto.MetricType_GAUGE:
		return sample{value: m.GetGauge().GetValue(), found: true}
	case dto.MetricType_HISTOGRAM:
		return sample{value: float64(m.GetHistogram().GetSampleCount()), sum: m.GetHistogram().GetSampleSum(), found: true}
	}
	return sample{value: m.GetUntyped().GetValue(), found: true}
}

// wantSample checks that name{labels} is present with value want.
func wantSample(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string, want float64) sample {
	t.Helper()
	s := gather(t, reg, name, labels)
	if !s.found || s.value != want {
		t.Fatalf("%s%v = %v (found %v), want %v", name, labels, s.value, s.found, want)
	}
	return s
}

// TestMetrics_LeaderSeries drives the leader loop through a placement, a
// task waiting for room, a crash and its restart, and a report, and reads
// each series move in the manager's own registry.
func TestMetrics_LeaderSeries(t *testing.T) {
	h := newHarness(t, nil)
	reg := h.m.Metrics()
	h.worker("w1")

	wantSample(t, reg, "cube_placements_total", nil, 0)
	wantSample(t, reg, "cube_restarts_total", map[string]string{"cause": "exit"}, 0)
	h.submit("a", nil)
	h.submit("big", func(t *api.Task) { t.Memory = 4 << 30 })
	wantSample(t, reg, "cube_tasks", map[string]string{"state": "pending"}, 2)
	wantSample(t, reg, "cube_tasks_pending", map[string]string{"reason": "new"}, 2)
	h.pass()
	wantSample(t, reg, "cube_placements_total", nil, 1)
	wantSample(t, reg, "cube_tasks", map[string]string{"state": "scheduled"}, 1)
	wantSample(t, reg, "cube_tasks", map[string]string{"state": "pending"}, 1)
	wantSample(t, reg, "cube_tasks_pending", map[string]string{"reason": "no_room"}, 1)
	wantSample(t, reg, "cube_tasks_pending", map[string]string{"reason": "new"}, 0)
	wantSample(t, reg, "cube_workers", map[string]string{"state": "alive"}, 1)
	if s := gather(t, reg, "cube_leader_pass_seconds", nil); s.value < 1 {
		t.Fatalf("cube_leader_pass_seconds count %v after a pass, want at least 1", s.value)
	}

	// A crash: the container of c ended; the leader restarts it, and the
	// time from its end to the new container's start is observed once the
	// new generation runs.
	crashed := h.placed("c", "w1", 1, api.Failed, nil)
	h.pass()
	wantSample(t, reg, "cube_restarts_total", map[string]string{"cause": "exit"}, 1)
	wantSample(t, reg, "cube_crash_to_running_seconds", nil, 0)
	cur := h.task("c")
	if cur.Generation != 2 {
		t.Fatalf("c at generation %d after its crash, want 2 (restarted)", cur.Generation)
	}
	run := cur
	run.State, run.ContainerID = api.Running, "c-c2"
	run.StartTime = crashed.FinishTime.Add(300 * time.Millisecond)
	h.seed(fsm.ReportTask{Task: run})
	h.pass()
	s := wantSample(t, reg, "cube_crash_to_running_seconds", nil, 1)
	if math.Abs(s.sum-0.3) > 1e-6 {
		t.Fatalf("cube_crash_to_running_seconds sum %v, want 0.3", s.sum)
	}
	h.pass()
	wantSample(t, reg, "cube_crash_to_running_seconds", nil, 1) // observed once

	// A report that changes a task's state is observed in the report lag,
	// from the worker's StartTime; a duplicate of it is not.
	a := h.task("a")
	rep := a
	rep.State, rep.ContainerID, rep.StartTime = api.Running, "c-a", time.Now().Add(-2*time.Second)
	if err := h.m.ReportTask(context.Background(), rep); err != nil {
		t.Fatal(err)
	}
	if err := h.m.ReportTask(context.Background(), rep); err != nil {
		t.Fatal(err)
	}
	s = wantSample(t, reg, "cube_report_lag_seconds", nil, 1)
	if s.sum < 2 || s.sum > 60 {
		t.Fatalf("cube_report_lag_seconds sum %v, want about 2", s.sum)
	}
	wantSample(t, reg, "cube_tasks", map[string]string{"state": "running"}, 2)
}

// TestPendingClass files each reason the manager writes under its label.
func TestPendingClass(t *testing.T) {
	for _, tc := range []struct{ reason, want string }{
		{"", pendingNew},
		{"waiting for a live worker", pendingNoWorker},
		{"no worker has room for cpu 1.00, memory 10, disk 0 (w1: 5 bytes of memory free)", pendingNoRoom},
		{"host port 7777/tcp is taken on every live worker (w1: task 6f0c)", pendingHostPort},
		{"its host ports 7777/tcp are taken on every live worker (w1: ...)", pendingHostPort},
		{"host port 7777/tcp was taken on worker w1; placing it on another worker", pendingHostPort},
		{"no worker allows privileged mode (start a worker with --allow-privileged)", pendingNotAllowed},
		{"waiting for a worker with room after: health check failed: host port closed", pendingRequeued},
		{"worker w1 has no record of it (its data may have been lost)", pendingRequeued},
		{"worker w1 held generation 7 of it, from an earlier cluster or leader; placed again above it", pendingRequeued},
		{"something new", pendingOther},
	} {
		if got := pendingClass(tc.reason); got != tc.want {
			t.Errorf("pendingClass(%q) = %q, want %q", tc.reason, got, tc.want)
		}
	}
}

// laggingRaft is the harness's raft with a commit index ahead of what the
// FSM applied: a manager replaying its log.
type laggingRaft struct {
	*memRaft
	ahead uint64
}

func (r laggingRaft) CommitIndex() uint64 { return r.f.AppliedIndex() + r.ahead }

// TestManager_Ready: ready with a leader and the log applied; not ready,
// saying why, without a leader or while far behind the commit index.
func TestManager_Ready(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	if err := h.m.Ready(ctx); err != nil {
		t.Fatalf("Ready with a leader and nothing to apply: %v", err)
	}
	lag := newManager(h.m.cfg, laggingRaft{memRaft: h.raft, ahead: readyMaxLag + 1}, h.f, h.gossip, h.workers, nil)
	if err := lag.Ready(ctx); err == nil || !strings.Contains(err.Error(), "not applied yet") {
		t.Fatalf("Ready %d entries behind: %v, want not ready, catching up", readyMaxLag+1, err)
	}
	near := newManager(h.m.cfg, laggingRaft{memRaft: h.raft, ahead: readyMaxLag}, h.f, h.gossip, h.workers, nil)
	if err := near.Ready(ctx); err != nil {
		t.Fatalf("Ready %d entries behind: %v, want ready", readyMaxLag, err)
	}
	h.raft.setLeader(false)
	if err := h.m.Ready(ctx); err == nil || !strings.Contains(err.Error(), "no raft leader known") {
		t.Fatalf("Ready without a leader: %v, want not ready naming the missing leader", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	h.raft.setLeader(true)
	if err := h.m.Ready(cancelled); err == nil {
		t.Fatalf("Ready with a done context: nil, want its error")
	}
}

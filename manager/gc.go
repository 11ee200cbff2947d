package manager

import (
	"context"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
)

// gcBatch bounds the IDs of one CollectGarbage command, so that a log entry
// stays small (about 40 bytes per task) however much there is to collect.
const gcBatch = 1000

var _ api.GarbageCollector = (*Manager)(nil)

// CollectGarbage removes now every finished task and departed worker that
// qualifies, whatever its age: the forced collection of POST /system/gc.
func (m *Manager) CollectGarbage(ctx context.Context) (api.GCResult, error) {
	if !m.raft.IsLeader() {
		return api.GCResult{}, api.ErrNotLeader
	}
	res, err := m.collect(ctx, time.Time{}, time.Time{})
	if err == nil {
		m.log.Info("garbage collected on request", "tasks", res.Tasks, "workers", res.Workers)
	}
	return res, err
}

// collectDue is the periodic collection: finished tasks that ended before
// TaskGCThreshold ago, workers departed before WorkerGCThreshold ago.
func (m *Manager) collectDue(ctx context.Context, now time.Time) {
	// A zero cutoff would mean "everything"; a zero threshold means "as
	// soon as it qualifies", which now expresses.
	res, err := m.collect(ctx, now.Add(-m.cfg.TaskGCThreshold), now.Add(-m.cfg.WorkerGCThreshold))
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.Warn("garbage collection", "error", err)
	case res.Tasks+res.Workers > 0:
		m.log.Info("garbage collected", "tasks", res.Tasks, "workers", res.Workers)
	}
}

// collect removes what fsm.Garbage names for the cutoffs, in batches of
// gcBatch IDs. What to remove is the leader's choice (ages read on its
// clock); whether each may go is checked again by the FSM when the command
// applies, so a task that changed meanwhile stays.
func (m *Manager) collect(ctx context.Context, taskCutoff, workerCutoff time.Time) (api.GCResult, error) {
	m.gcMu.Lock()
	defer m.gcMu.Unlock()
	g := m.fsm.Garbage(taskCutoff, workerCutoff)
	var total api.GCResult
	for len(g.Tasks) > 0 || len(g.Workers) > 0 {
		var c fsm.CollectGarbage
		n := min(len(g.Tasks), gcBatch)
		c.Tasks, g.Tasks = g.Tasks[:n], g.Tasks[n:]
		if n < gcBatch {
			w := min(len(g.Workers), gcBatch-n)
			c.Workers, g.Workers = g.Workers[:w], g.Workers[w:]
		}
		res, err := m.apply(ctx, c)
		if err != nil {
			return total, err
		}
		total.Tasks += res.Collected.Tasks
		total.Workers += res.Collected.Workers
	}
	return total, nil
}

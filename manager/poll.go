package manager

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// The poll: the leader lists each live worker's task records now and then
// (PollInterval), the safety net behind the reports workers push. It commits
// what changed, stops the copies the cluster no longer wants, and finds the
// two cases no report can tell: a worker holding a task (or a generation of
// one) the cluster does not know, and a worker without a record of a task it
// should run.

// pollWorker is one worker to poll, with the tasks it must hold a record of,
// read from the FSM before the worker is asked: those it acknowledged (Running
// there, or Scheduled there and delivered by this leader) at their current
// generation.
type pollWorker struct {
	node   api.Node
	expect []api.Task
	// confirm: tasks given up on while placed here, whose container's end
	// the worker has not confirmed yet (fsm.UnconfirmedTasks); garbage
	// collection keeps them until it does.
	confirm []api.Task
}

// pollResult is what a poll found that needs a placement decision, which only
// the loop's goroutine takes (pollFinished).
type pollResult struct {
	// above: tasks whose worker holds a newer generation than the cluster's
	// (the task as the FSM had it, and the worker's generation).
	above []heldNewer
	// missing: tasks their worker has no record of.
	missing []api.Task
}

type heldNewer struct {
	task      api.Task
	workerGen uint64
}

// pollSpacing: a poll runs at most a fifth of the time (pollDue).
const pollSpacing = 5

// pollDue says whether the next poll may start: PollInterval after the last
// one started, and pollSpacing times the last poll's length, whichever is
// later. A poll reads every live task's record from its worker: with 100,000
// tasks on 100 workers, about a second of the leader's CPU, most of it
// decoding the lists (bench/scale/SCALE.md), every PollInterval (2 s in the
// fast profile) would keep half a core busy with the safety net alone; spaced
// by its cost it takes at most a fifth, and on a small cluster, where a poll
// takes milliseconds, it still comes every PollInterval. A new leader's first
// poll comes one PollInterval after its loop starts, not at once: its first
// seconds are owed to the placements and restarts the failover held up (the
// first restart after a failover with 100,000 tasks came 1.3 s after the
// election while the new leader's poll took a third of its CPU), and the
// reports a poll would find are retried by their workers until a leader
// takes them.
func (l *loop) pollDue(now time.Time) bool {
	return !l.polling && now.Sub(l.lastPoll) >= max(l.m.cfg.PollInterval, pollSpacing*l.pollCost)
}

// startPoll reads, on the loop's goroutine, which tasks each live worker must
// hold, then lists the workers on a goroutine of its own.
func (l *loop) startPoll(ctx context.Context, nodes []api.Node, tasks []*api.Task) {
	plan := l.pollPlan(nodes, tasks)
	l.lastPoll = time.Now()
	l.polling = true
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		res := l.poll(ctx, plan)
		select {
		case l.pollDone <- res:
		case <-ctx.Done():
		}
	}()
}

// pollPlan lists the live workers and, for each, the tasks it has
// acknowledged at their current generation. A task dispatched after this
// read is not expected: its record may still be on its way.
func (l *loop) pollPlan(nodes []api.Node, tasks []*api.Task) []pollWorker {
	idx := make(map[string]int, len(nodes))
	var plan []pollWorker
	for _, n := range nodes {
		if n.State == api.NodeAlive && n.API != "" {
			idx[n.Name] = len(plan)
			plan = append(plan, pollWorker{node: n})
		}
	}
	for _, t := range tasks {
		i, ok := idx[t.Worker]
		acked := t.State == api.Running || (t.State == api.Scheduled && l.sent[t.ID] == t.Generation)
		if ok && t.DesiredState == api.Running && acked {
			plan[i].expect = append(plan[i].expect, *t)
		}
	}
	for _, t := range l.m.fsm.UnconfirmedTasks() {
		if i, ok := idx[t.Worker]; ok {
			plan[i].confirm = append(plan[i].confirm, t)
		}
	}
	return plan
}

// pollFinished acts on a finished poll: places above the generation a worker
// holds, and requeues the tasks their worker has no record of.
func (l *loop) pollFinished(ctx context.Context, res pollResult) {
	l.polling = false
	l.pollCost = time.Since(l.lastPoll)
	for _, h := range res.above {
		l.placeAbove(ctx, h.task.ID, h.task.Worker, h.task.Generation, h.workerGen)
	}
	for _, t := range res.missing {
		l.requeueLost(ctx, t)
	}
}

// poll lists every planned worker's tasks and reconciles each record with
// the replicated state.
func (l *loop) poll(ctx context.Context, plan []pollWorker) pollResult {
	var res pollResult
	for _, pw := range plan {
		if ctx.Err() != nil {
			break
		}
		n := pw.node
		recs, err := l.m.workers.Tasks(ctx, n.API)
		if err != nil {
			l.log.Debug("poll worker", "worker", n.Name, "error", err)
			continue
		}
		held := make(map[uuid.UUID]bool, len(recs))
		var newer []api.Task
		for _, rec := range recs {
			held[rec.ID] = true
			cur, err := l.m.fsm.Task(rec.ID)
			if err != nil && rec.State.Terminal() {
				// An ended record of a task the cluster does not hold (it
				// was garbage-collected): nothing runs, nothing to judge.
				continue
			}
			if err != nil || rec.Generation > cur.Generation {
				newer = append(newer, rec)
				continue
			}
			l.reconcileRecord(ctx, n, rec, cur)
		}
		res.above = append(res.above, l.judgeNewer(ctx, n, newer)...)
		for _, t := range pw.expect {
			if !held[t.ID] {
				res.missing = append(res.missing, t)
			}
		}
		for _, t := range pw.confirm {
			if !held[t.ID] {
				// The worker holds no copy at this placement to
				// confirm: the report at the task's placement lets
				// garbage collection have it. Should a container of it
				// turn up later (a worker that lost its records), the
				// leader stops it as unknown to the cluster.
				l.report(ctx, t)
			}
		}
	}
	sort.Slice(res.missing, func(i, j int) bool { return res.missing[i].ID.String() < res.missing[j].ID.String() })
	return res
}

// reconcileRecord handles a worker's record of a task at a generation the
// cluster knows: its current placement (commit what changed; stop it if the
// task ended), or an older one (stop it).
func (l *loop) reconcileRecord(ctx context.Context, n api.Node, rec, cur api.Task) {
	switch {
	case cur.Worker == n.Name && cur.Generation == rec.Generation:
		if !cur.State.Terminal() && (cur.State != rec.State || cur.ContainerID != rec.ContainerID) {
			l.reportUnlessBehind(ctx, rec) // listed before a report committed since
		}
		if cur.State.Terminal() && rec.State.Terminal() && l.m.fsm.Unconfirmed(rec.ID) {
			l.report(ctx, rec) // the container of a task given up on ended
		}
		if cur.State.Terminal() && !rec.State.Terminal() {
			l.stopCopy(ctx, n.Name, rec.ID, rec.Generation, "the task already ended")
		}
	case rec.State.Terminal():
	default:
		l.stopCopy(ctx, n.Name, rec.ID, rec.Generation, fmt.Sprintf("superseded by generation %d on %s", cur.Generation, cur.Worker))
	}
}

// judgeNewer handles the records of worker n that this manager's view does
// not explain: a task it does not know, or a generation higher than its own.
// Either its view is behind (a deposed leader, or one still applying) — then
// it must not act — or the worker outlived its cluster (a rebuilt cluster
// facing its old workers). So it first confirms, after the listing, that it
// leads and has applied every committed entry (a consistent read), and only
// then reads the FSM again:
//   - a task the cluster never heard of: its copy is stopped, since nothing
//     may run unmanaged;
//   - a newer generation on the worker the task is placed on: the task is to
//     be placed again there above it (returned for the loop to commit), so
//     the next dispatch replaces the old copy;
//   - a newer generation anywhere else, or of a task not to run: stopped.
func (l *loop) judgeNewer(ctx context.Context, n api.Node, recs []api.Task) []heldNewer {
	if len(recs) == 0 {
		return nil
	}
	if err := l.m.raft.ConsistentRead(ctx); err != nil {
		l.log.Debug("worker holds tasks this manager's view does not explain; not acting without a consistent read",
			"worker", n.Name, "records", len(recs), "error", err)
		return nil
	}
	var above []heldNewer
	for _, rec := range recs {
		cur, err := l.m.fsm.Task(rec.ID)
		switch {
		case err != nil:
			if !rec.State.Terminal() {
				l.log.Warn("worker runs a task this cluster has no record of; stopping it", "task_id", rec.ID, "worker", n.Name, "generation", rec.Generation)
				l.stopCopy(ctx, n.Name, rec.ID, rec.Generation, "the cluster has no record of this task")
			}
		case rec.Generation <= cur.Generation:
			l.reconcileRecord(ctx, n, rec, cur) // the view caught up meanwhile
		case cur.Worker == n.Name && cur.DesiredState == api.Running && (cur.State == api.Scheduled || cur.State == api.Running):
			above = append(above, heldNewer{task: cur, workerGen: rec.Generation})
		case !rec.State.Terminal():
			l.stopCopy(ctx, n.Name, rec.ID, rec.Generation,
				fmt.Sprintf("the cluster has the task at generation %d on %q (%s, desired %s); this copy is from an earlier cluster", cur.Generation, cur.Worker, cur.State, cur.DesiredState))
		}
	}
	return above
}

// placeAbove commits a new placement of a task on the same worker at a
// generation above the one the worker holds, not counted as a restart, and
// dispatches it: the worker then replaces its old copy. It acts only if the
// task is still placed where it was seen (worker, gen) and to run.
func (l *loop) placeAbove(ctx context.Context, id uuid.UUID, worker string, gen, workerGen uint64) {
	cur, err := l.m.fsm.Task(id)
	if err != nil || cur.Worker != worker || cur.Generation != gen || cur.DesiredState != api.Running ||
		(cur.State != api.Scheduled && cur.State != api.Running) {
		return
	}
	next := max(workerGen, cur.Generation) + 1
	res, err := l.m.apply(ctx, fsm.RestartTask{ID: id, Worker: worker, Generation: next,
		Reason: fmt.Sprintf("worker %s held generation %d of it, from an earlier cluster or leader; placed again above it", worker, workerGen),
		Time:   time.Now().UTC()})
	if err != nil {
		l.log.Warn("place a task above the generation its worker holds", "task_id", id, "worker", worker, "error", err)
		return
	}
	l.log.Warn("task placed above the generation its worker holds", "task_id", id, "worker", worker,
		"worker_generation", workerGen, "generation", res.Task.Generation)
	l.ensureOp(ctx, res.Task, opDispatch)
}

// requeueLost sends back to Pending (not counted as a restart) a task whose
// worker has no record of it although it acknowledged it — a worker back with
// an empty data directory on which the task's container no longer runs (a
// running one it would have recorded and reported) — so that the
// scheduler places it again at a higher generation. Without this, a task
// without a health check would stay Running with no container anywhere.
func (l *loop) requeueLost(ctx context.Context, t api.Task) {
	cur, err := l.m.fsm.Task(t.ID)
	if err != nil || cur.Worker != t.Worker || cur.Generation != t.Generation || cur.DesiredState != api.Running ||
		(cur.State != api.Scheduled && cur.State != api.Running) {
		return
	}
	reason := fmt.Sprintf("worker %s has no record of it (its data may have been lost)", t.Worker)
	if _, err := l.m.apply(ctx, fsm.RequeueTask{ID: t.ID, Reason: reason, Time: time.Now().UTC()}); err != nil {
		l.log.Warn("requeue a task its worker has no record of", "task_id", t.ID, "worker", t.Worker, "error", err)
		return
	}
	l.log.Warn("task requeued: its worker has no record of it", "task_id", t.ID, "worker", t.Worker, "generation", t.Generation)
}

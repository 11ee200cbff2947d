package manager

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// loop is the leader's control loop. One goroutine (run) owns its state and
// makes every decision; talking to workers happens on op goroutines it starts
// and tracks, so a slow worker never delays scheduling. Every decision is
// committed through raft before it is acted on: assignment first, then
// dispatch; stop request first, then the worker's DELETE.
type loop struct {
	m     *Manager
	log   hclog.Logger
	sched Scheduler

	ops    map[uuid.UUID]*op // at most one worker call in flight per task
	opDone chan *op
	// sent remembers the generation each task was last handed to its worker
	// by this leader, so a Scheduled task is not re-sent on every pass while
	// the worker starts it. A new leader starts empty and sends once more,
	// which the worker's idempotence makes harmless.
	sent map[uuid.UUID]uint64
	// restarts and probed are soft recovery state (see recovery.go).
	restarts map[uuid.UUID]*restartState
	probed   map[uuid.UUID]time.Time
	specErr  map[uuid.UUID]uint64 // generation whose bad health spec was logged
	stuck    map[uuid.UUID]uint64 // generation logged as unable to leave its draining worker
	checker  *health.Checker
	healthCh chan health.Result
	lastPoll time.Time
	polling  bool
	pollDone chan struct{}
	wg       sync.WaitGroup
}

// op is a worker call in flight for one task placement.
type op struct {
	id     uuid.UUID
	kind   string // "dispatch" or "stop"
	gen    uint64
	cancel context.CancelFunc
	ok     bool   // set by the op before it signals done: delivered / still answers
	detail string // probe ops: what was found
}

func newLoop(m *Manager) *loop {
	s, _ := NewScheduler(m.cfg.Scheduler) // validated in New
	return &loop{
		m:        m,
		log:      m.log.Named("leader"),
		sched:    s,
		ops:      make(map[uuid.UUID]*op),
		opDone:   make(chan *op, 64),
		sent:     make(map[uuid.UUID]uint64),
		pollDone: make(chan struct{}, 1),
		restarts: make(map[uuid.UUID]*restartState),
		probed:   make(map[uuid.UUID]time.Time),
		specErr:  make(map[uuid.UUID]uint64),
		stuck:    make(map[uuid.UUID]uint64),
		healthCh: make(chan health.Result, 256),
	}
}

// run reconciles until ctx ends (leadership lost or shutdown), then cancels
// and waits for every op it started: a deposed leader stops acting.
func (l *loop) run(ctx context.Context) {
	// Health checks run on the leader only, each on its own timer; verdicts
	// come back to this goroutine, which alone decides.
	l.checker = health.NewChecker(func(r health.Result) {
		select {
		case l.healthCh <- r:
		case <-ctx.Done():
		}
	}, l.log)
	defer func() {
		l.checker.Stop()
		for _, o := range l.ops {
			o.cancel()
		}
		l.wg.Wait()
	}()
	tick := time.NewTicker(l.m.cfg.Tick)
	defer tick.Stop()
	for {
		l.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.m.fsm.Changed():
		case <-l.m.cfg.GossipChanges:
		case o := <-l.opDone:
			if l.ops[o.id] == o {
				delete(l.ops, o.id)
			}
			if o.ok && o.kind == "dispatch" {
				l.sent[o.id] = o.gen
			}
			if o.kind == "probe" {
				l.orphanVerdict(ctx, o)
			}
		case r := <-l.healthCh:
			if r.Healthy {
				l.healthy(r)
			} else {
				l.unhealthy(ctx, r)
			}
		case <-l.pollDone:
			l.polling = false
		}
	}
}

// reconcile is one pass: bring the replicated worker list in line with
// gossip, place Pending tasks, make sure every placement and stop is being
// carried out, and now and then poll the workers.
func (l *loop) reconcile(ctx context.Context) {
	if ctx.Err() != nil || !l.m.raft.IsLeader() {
		return
	}
	l.syncWorkers(ctx)
	nodes := l.m.fsm.Nodes()
	tasks := l.m.fsm.Tasks()
	var pending, drained []api.Task
	for _, t := range tasks {
		if ctx.Err() != nil {
			return
		}
		lost, why := false, ""
		if t.DesiredState == api.Running && (t.State == api.Scheduled || t.State == api.Running) {
			lost, why = lostWorker(nodes, t.Worker)
		}
		rs, unhealthy := l.dueUnhealthy(t)
		switch {
		case lost:
			l.checkOrphan(ctx, t, why)
		case unhealthy:
			l.restart(ctx, t, nodes, rs)
		case t.DesiredState == api.Running && t.State.Terminal():
			l.recoverEnded(ctx, t, nodes)
		case t.DesiredState == api.Running && t.State == api.Pending:
			pending = append(pending, t)
		case t.DesiredState == api.Running && (t.State == api.Scheduled || t.State == api.Running) && draining(nodes, t.Worker):
			drained = append(drained, t)
		case t.DesiredState == api.Running && t.State == api.Scheduled && l.sent[t.ID] != t.Generation:
			l.ensureOp(ctx, t, "dispatch")
		case t.DesiredState == api.Completed && !t.State.Terminal() && t.Worker != "":
			l.ensureOp(ctx, t, "stop")
		}
	}
	l.placeAll(ctx, pending, nodes)
	l.moveOff(ctx, drained, nodes)
	l.checker.Sync(l.healthSpecs(tasks, nodes))
	l.prune(tasks)
	if !l.polling && time.Since(l.lastPoll) >= l.m.cfg.PollInterval {
		l.lastPoll = time.Now()
		l.polling = true
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.poll(ctx)
			l.pollDone <- struct{}{}
		}()
	}
}

// prune forgets the soft state of tasks that are no longer to run, so the
// leader's memory does not grow with the history of the cluster.
func (l *loop) prune(tasks []api.Task) {
	active := make(map[uuid.UUID]bool, len(tasks))
	for _, t := range tasks {
		if t.DesiredState == api.Running {
			active[t.ID] = true
		}
	}
	for id := range l.sent {
		if !active[id] {
			delete(l.sent, id)
		}
	}
	for id := range l.restarts {
		if !active[id] {
			delete(l.restarts, id)
		}
	}
	for id := range l.probed {
		if !active[id] {
			delete(l.probed, id)
		}
	}
	for _, m := range []map[uuid.UUID]uint64{l.specErr, l.stuck} {
		for id := range m {
			if !active[id] {
				delete(m, id)
			}
		}
	}
}

// syncWorkers commits the gossip view of each worker (address, capacity,
// liveness) when it differs from the replicated one.
func (l *loop) syncWorkers(ctx context.Context) {
	known := make(map[string]api.Node)
	for _, n := range l.m.fsm.Nodes() {
		n.AllocatedCpu, n.AllocatedMemory, n.AllocatedDisk, n.TaskCount = 0, 0, 0, 0
		known[n.Name] = n
	}
	for _, mem := range l.m.gossip.Members() {
		if mem.Meta.Role != cluster.RoleWorker {
			continue
		}
		n := api.Node{
			Name:             mem.Name,
			API:              mem.Meta.API,
			State:            string(mem.State),
			RuntimeAvailable: !mem.Meta.RuntimeDown,
			Cpu:              mem.Meta.Cpu,
			Memory:           mem.Meta.Memory,
			Disk:             mem.Meta.Disk,
		}
		cur, ok := known[n.Name]
		if ok {
			n.Since, n.Drain = cur.Since, cur.Drain
		}
		if !ok || cur.State != n.State {
			n.Since = time.Now().UTC()
		}
		if ok && cur == n {
			continue
		}
		if _, err := l.m.apply(ctx, fsm.UpsertWorker{Node: n}); err != nil {
			l.log.Warn("record worker", "worker", n.Name, "error", err)
			continue
		}
		l.log.Info("worker recorded", "worker", n.Name, "state", n.State, "api", n.API)
	}
}

// placeAll places the Pending tasks of one pass. The decisions are made in
// order, each counting against its node (PlaceAll), and then committed
// concurrently, so that raft batches them into a few log appends: a burst of
// 100 submissions is assigned in one or two commit round trips instead of
// 100 (measured by `make bench`: ~9 ms per sequential assignment made the
// last of 100 wait ~0.9 s). Allocation is then counted in nodes, for the
// rest of the pass.
func (l *loop) placeAll(ctx context.Context, pending []api.Task, nodes []api.Node) {
	if len(pending) == 0 || ctx.Err() != nil {
		return
	}
	decisions := PlaceAll(l.sched, pending, nodes)
	type outcome struct {
		task api.Task
		err  error
	}
	outcomes := make([]outcome, len(decisions))
	sem := make(chan struct{}, maxConcurrentAssign)
	var wg sync.WaitGroup
	for i, d := range decisions {
		if !d.OK {
			if d.Task.Reason != d.Reason {
				if _, err := l.m.apply(ctx, fsm.PendingNote{ID: d.Task.ID, Reason: d.Reason}); err != nil {
					l.log.Warn("record pending reason", "task_id", d.Task.ID, "error", err)
				}
				l.log.Info("task waits", "task_id", d.Task.ID, "reason", d.Reason)
			}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := l.m.apply(ctx, fsm.AssignTask{ID: d.Task.ID, Worker: d.Node.Name, Generation: d.Task.Generation + 1, Time: time.Now().UTC()})
			if err == nil {
				outcomes[i] = outcome{task: res.Task}
			} else {
				outcomes[i] = outcome{err: err}
			}
		}()
	}
	wg.Wait()
	for i, d := range decisions {
		if !d.OK {
			continue
		}
		o := outcomes[i]
		if o.err != nil {
			l.log.Warn("assign task", "task_id", d.Task.ID, "worker", d.Node.Name, "error", o.err)
			continue
		}
		allocate(nodes, d.Node.Name, d.Task)
		l.log.Info("task assigned", "task_id", d.Task.ID, "worker", d.Node.Name, "generation", o.task.Generation)
		l.ensureOp(ctx, o.task, "dispatch")
	}
}

// draining reports whether the named worker is being drained.
func draining(nodes []api.Node, name string) bool {
	for _, n := range nodes {
		if n.Name == name {
			return n.Drain
		}
	}
	return false
}

// moveOff moves the tasks of drained workers to workers with room: each is
// placed at a new generation (not counted as a restart), dispatched there,
// and its old copy stopped, fenced by its generation. A task for which no
// worker has room keeps running where it is until one does.
func (l *loop) moveOff(ctx context.Context, tasks []api.Task, nodes []api.Node) {
	if len(tasks) == 0 || ctx.Err() != nil {
		return
	}
	// Decided in order like placeAll's; each move counts where it lands.
	for _, d := range PlaceAll(l.sched, tasks, nodes) {
		t := d.Task
		if !d.OK {
			if l.stuck[t.ID] != t.Generation {
				l.stuck[t.ID] = t.Generation
				l.log.Warn("task stays on its draining worker: no other worker has room", "task_id", t.ID, "worker", t.Worker, "reason", d.Reason)
			}
			continue
		}
		res, err := l.m.apply(ctx, fsm.RestartTask{ID: t.ID, Worker: d.Node.Name, Generation: t.Generation + 1,
			Reason: fmt.Sprintf("moved off worker %s: it is draining", t.Worker), Time: time.Now().UTC()})
		if err != nil {
			l.log.Warn("move task off a draining worker", "task_id", t.ID, "worker", t.Worker, "error", err)
			continue
		}
		allocate(nodes, d.Node.Name, t)
		delete(l.stuck, t.ID)
		l.log.Info("task moved off a draining worker", "task_id", t.ID, "from", t.Worker, "to", d.Node.Name, "generation", res.Task.Generation)
		l.stopOld(ctx, t.Worker, t.ID, t.Generation)
		l.ensureOp(ctx, res.Task, "dispatch")
	}
}

// maxConcurrentAssign bounds the assignments of one pass in flight at once
// (hashicorp/raft appends up to MaxAppendEntries, 64, per batch).
const maxConcurrentAssign = 64

// ensureOp starts the worker call a task needs, unless one for the same
// placement is already in flight; one for an older placement is cancelled.
func (l *loop) ensureOp(ctx context.Context, t api.Task, kind string) {
	if o, ok := l.ops[t.ID]; ok {
		if o.kind == kind && o.gen == t.Generation {
			return
		}
		o.cancel() // superseded; its done signal only deletes the entry if still its own
	}
	octx, cancel := context.WithCancel(ctx)
	o := &op{id: t.ID, kind: kind, gen: t.Generation, cancel: cancel}
	l.ops[t.ID] = o
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		if kind == "dispatch" {
			o.ok = l.dispatch(octx, t)
		} else {
			l.stop(octx, t)
		}
		select {
		case l.opDone <- o:
		case <-ctx.Done():
		}
	}()
}

// current reports whether the placement (worker, generation) of t is still
// the task's current one with the given desired state.
func (l *loop) current(t api.Task, desired api.State) (api.Task, bool) {
	cur, err := l.m.fsm.Task(t.ID)
	if err != nil {
		return cur, false
	}
	return cur, cur.Worker == t.Worker && cur.Generation == t.Generation && cur.DesiredState == desired
}

// dispatch sends a committed assignment to its worker until the worker has it
// or the assignment changes. Sending twice is harmless: the worker is
// idempotent per (task, generation).
func (l *loop) dispatch(ctx context.Context, t api.Task) (delivered bool) {
	backoff := l.m.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		cur, ok := l.current(t, api.Running)
		if !ok || cur.State != api.Scheduled {
			return false
		}
		addr := l.workerAddr(cur.Worker)
		if addr != "" {
			rec, _, err := l.m.workers.Submit(ctx, addr, api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now().UTC(), Task: cur})
			switch {
			case err == nil:
				l.log.Debug("task dispatched", "task_id", t.ID, "worker", cur.Worker, "generation", cur.Generation, "attempt", attempt)
				l.report(ctx, rec)
				return true
			case errors.Is(err, api.ErrStaleGeneration):
				l.log.Warn("worker holds a newer generation than the assignment", "task_id", t.ID, "worker", cur.Worker, "error", err)
				return false
			case ctx.Err() != nil:
				return false
			default:
				l.log.Warn("dispatch failed; will retry", "task_id", t.ID, "worker", cur.Worker, "attempt", attempt, "error", err)
			}
		}
		if !sleep(ctx, jitter(backoff)) {
			return false
		}
		backoff = min(2*backoff, l.m.cfg.RetryMax)
	}
}

// stop carries out a committed stop request on the task's worker, then
// commits the task Completed.
func (l *loop) stop(ctx context.Context, t api.Task) {
	backoff := l.m.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		cur, ok := l.current(t, api.Completed)
		if !ok || cur.State.Terminal() {
			return
		}
		addr := l.workerAddr(cur.Worker)
		if addr != "" {
			err := l.m.workers.StopUpTo(ctx, addr, cur.ID, cur.Generation)
			if err == nil || errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrStaleGeneration) {
				done := cur
				done.State = api.Completed
				done.Reason = "stopped on request"
				done.FinishTime = time.Now().UTC()
				l.report(ctx, done)
				l.log.Info("task stopped", "task_id", t.ID, "worker", cur.Worker)
				return
			}
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("stop failed; will retry", "task_id", t.ID, "worker", cur.Worker, "attempt", attempt, "error", err)
		}
		if !sleep(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, l.m.cfg.RetryMax)
	}
}

// report commits a worker record, ignoring stale or settled ones.
func (l *loop) report(ctx context.Context, rec api.Task) {
	if err := l.m.ReportTask(ctx, rec); err != nil && ctx.Err() == nil {
		l.log.Warn("record worker report", "task_id", rec.ID, "error", err)
	}
}

// poll lists every live worker's tasks and commits what changed: the safety
// net behind the reports workers push. A copy the replicated state no longer
// wants there (stopped, or placed elsewhere) is stopped on that worker.
func (l *loop) poll(ctx context.Context) {
	for _, n := range l.m.fsm.Nodes() {
		if n.State != api.NodeAlive || n.API == "" || ctx.Err() != nil {
			continue
		}
		recs, err := l.m.workers.Tasks(ctx, n.API)
		if err != nil {
			l.log.Debug("poll worker", "worker", n.Name, "error", err)
			continue
		}
		for _, rec := range recs {
			cur, err := l.m.fsm.Task(rec.ID)
			switch {
			case err != nil:
				// Task IDs are never forgotten, so an unknown one means this
				// manager's view is behind: never act on it.
				l.log.Debug("worker holds a task this manager does not know yet", "task_id", rec.ID, "worker", n.Name)
			case rec.Generation > cur.Generation:
				// The worker knows a newer placement than this view: stale view.
			case cur.Worker == rec.Worker && cur.Generation == rec.Generation:
				if !cur.State.Terminal() && (cur.State != rec.State || cur.ContainerID != rec.ContainerID) {
					l.report(ctx, rec)
				}
				if cur.State.Terminal() && !rec.State.Terminal() {
					l.stopCopy(ctx, n, rec, "the task already ended")
				}
			case rec.State.Terminal():
			default:
				l.stopCopy(ctx, n, rec, fmt.Sprintf("superseded by generation %d on %s", cur.Generation, cur.Worker))
			}
		}
	}
}

func (l *loop) stopCopy(ctx context.Context, n api.Node, rec api.Task, why string) {
	l.log.Info("stopping a copy the cluster no longer wants", "task_id", rec.ID, "worker", n.Name, "generation", rec.Generation, "why", why)
	if !l.m.raft.IsLeader() {
		return
	}
	if err := l.m.workers.StopUpTo(ctx, n.API, rec.ID, rec.Generation); err != nil && !errors.Is(err, api.ErrNotFound) && !errors.Is(err, api.ErrStaleGeneration) {
		l.log.Warn("stop unwanted copy", "task_id", rec.ID, "worker", n.Name, "error", err)
	}
}

// workerAddr returns the worker's API address from the replicated state.
func (l *loop) workerAddr(name string) string {
	for _, n := range l.m.fsm.Nodes() {
		if n.Name == name {
			return n.API
		}
	}
	return ""
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads retries over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

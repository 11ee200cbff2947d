package manager

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
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
	// scheduled watches how long each Scheduled placement has waited for
	// its container (see scheduled.go).
	scheduled map[uuid.UUID]scheduledWatch
	// restarts and probed are soft recovery state (see recovery.go).
	restarts map[uuid.UUID]*restartState
	probed   map[uuid.UUID]time.Time
	specErr  map[uuid.UUID]uint64 // generation whose bad health spec was logged
	// recovering remembers the tasks restarted after their container ended
	// until they run again, for cube_crash_to_running_seconds.
	recovering map[uuid.UUID]recovering
	stuck      map[uuid.UUID]uint64 // generation logged as unable to leave its draining worker
	// clashes remembers, per worker, the static host ports ("7777/tcp") a
	// start failed for because they were taken on its machine, and until
	// when the worker is no candidate for them (see portClash).
	clashes map[string]map[string]time.Time
	// blocked remembers the Pending tasks that fit nowhere, tried again
	// only when the workers change (blocked.go).
	blocked map[uuid.UUID]blockedMark
	// plan decides which passes read every live task (passes.go).
	plan passPlan
	// probes are the finished probes of tasks on lost workers not yet
	// acted on (orphanVerdicts).
	probes []*op
	// lists shares a lost worker's list of records among the probes of
	// its tasks (askWorker).
	lists workerLists
	// svcBackoff spaces out replacements of failed service tasks (services.go).
	svcBackoff map[string]*svcBackoff
	// batchSeen is when this leader first saw each service's current
	// rollout batch, on its monotonic clock (services.go, batchOverdue).
	batchSeen map[string]batchMark
	checker   *health.Checker
	healthCh  chan health.Result
	lastPoll  time.Time     // when the last poll started (poll.go, pollDue)
	pollCost  time.Duration // how long the last poll took
	polling   bool
	pollDone  chan pollResult
	wg        sync.WaitGroup
}

// The kinds of op.
const (
	opDispatch = "dispatch" // send a committed assignment to its worker
	opStop     = "stop"     // carry out a committed stop request
	opProbe    = "probe"    // probe a task whose worker is lost
)

// op is a worker call in flight for one task placement.
type op struct {
	id     uuid.UUID
	kind   string // opDispatch, opStop or opProbe
	worker string
	gen    uint64
	cancel context.CancelFunc
	// Set by the op before it signals done:
	ok        bool   // dispatch: delivered; probe: the task still answers
	workerGen uint64 // dispatch: refused, the worker holds this newer generation
	detail    string // probe: what was found
}

func newLoop(m *Manager) *loop {
	s, _ := NewScheduler(m.cfg.Scheduler) // validated in New
	return &loop{
		m:          m,
		log:        m.log.Named("leader"),
		sched:      s,
		ops:        make(map[uuid.UUID]*op),
		opDone:     make(chan *op, 64),
		sent:       make(map[uuid.UUID]uint64),
		scheduled:  make(map[uuid.UUID]scheduledWatch),
		pollDone:   make(chan pollResult, 1),
		restarts:   make(map[uuid.UUID]*restartState),
		probed:     make(map[uuid.UUID]time.Time),
		specErr:    make(map[uuid.UUID]uint64),
		stuck:      make(map[uuid.UUID]uint64),
		recovering: make(map[uuid.UUID]recovering),
		clashes:    make(map[string]map[string]time.Time),
		svcBackoff: make(map[string]*svcBackoff),
		blocked:    make(map[uuid.UUID]blockedMark),
		batchSeen:  make(map[string]batchMark),
		healthCh:   make(chan health.Result, 256),
		lastPoll:   time.Now(), // the first poll comes one PollInterval in (pollDue)
	}
}

// begin starts the health checker; end stops it, cancels every op and waits
// for every goroutine the loop started.
func (l *loop) begin(ctx context.Context) {
	l.m.health.reset() // a new leader learns health again
	// Health checks run on the leader only, each on its own timer; verdicts
	// come back to the loop's goroutine, which alone decides.
	l.checker = health.NewChecker(func(r health.Result) {
		select {
		case l.healthCh <- r:
		case <-ctx.Done():
		}
	}, l.log)
}

func (l *loop) end() {
	l.checker.Stop()
	l.m.health.reset()
	for _, o := range l.ops {
		o.cancel()
	}
	l.wg.Wait()
}

// run reconciles until ctx ends (leadership lost or shutdown), then cancels
// and waits for every op it started: a deposed leader stops acting.
func (l *loop) run(ctx context.Context) {
	l.begin(ctx)
	defer l.end()
	l.startGC(ctx)
	tick := time.NewTicker(l.m.cfg.Tick)
	defer tick.Stop()
	owed := time.NewTimer(time.Hour) // an owed full pass put off (passes.go)
	owed.Stop()
	defer owed.Stop()
	for {
		start := time.Now()
		if !l.reconcile(ctx) {
			// Full passes are spaced out by their cost instead (passes.go).
			l.rest(ctx, time.Since(start))
		}
		if d := l.plan.deferFor(time.Now()); d > 0 {
			owed.Reset(d)
		}
		select {
		case <-ctx.Done():
			return
		case <-owed.C:
		case <-tick.C:
		case <-l.m.fsm.Changed():
		case <-l.m.cfg.GossipChanges:
			// The pass commits the worker's new record (syncWorkers), and
			// the FSM lists the tasks placed on it as changed: a death
			// costs the dead worker's tasks, not a full pass.
		case o := <-l.opDone:
			l.takeBack(ctx, o)
		case r := <-l.healthCh:
			l.verdict(ctx, r)
		case res := <-l.pollDone:
			l.pollFinished(ctx, res)
		}
	}
}

// Passes that cost more than restAfter are followed by a rest as long as
// the pass, at most maxRest (see rest).
const (
	restAfter = 2 * time.Millisecond
	maxRest   = 250 * time.Millisecond
)

// rest follows a costly pass with a pause as long as it took (at most
// maxRest), during which the loop still takes back finished ops and health
// verdicts but starts no pass. A pass costs what runs, and one is due on
// every change: in a burst, changes come faster than passes end, and
// back-to-back passes would keep a core busy with passes alone, starving
// raft, the API and the workers that share the machine. Resting as long as
// the pass caps the loop at half a core, and the changes of the rest are
// handled together by the next pass (Changed coalesces them). On a small
// cluster a pass takes well under restAfter and the loop never rests.
func (l *loop) rest(ctx context.Context, cost time.Duration) {
	if cost < restAfter {
		return
	}
	l.m.metrics.rests.Inc()
	t := time.NewTimer(min(cost, maxRest))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case o := <-l.opDone:
			l.takeBack(ctx, o)
		case r := <-l.healthCh:
			l.verdict(ctx, r)
		}
	}
}

// takeBack takes back a finished op, and every other one finished by now.
func (l *loop) takeBack(ctx context.Context, o *op) {
	l.opFinished(ctx, o)
	l.drainOps(ctx)
	l.orphanVerdicts(ctx)
}

// verdict acts on a health check's result.
func (l *loop) verdict(ctx context.Context, r health.Result) {
	if r.Healthy {
		l.healthy(ctx, r)
	} else {
		l.unhealthy(ctx, r)
	}
}

// drainOps takes back every other op that has finished, before the next
// pass. A pass costs what runs (every live task), and ops finish in
// crowds (the probes of every task of a dead worker, the dispatches of a
// burst): one pass per finished op made 500 probes of 20 dead workers'
// tasks wait for 500 passes over 5,000 tasks, minutes on a loaded
// machine (bench/scale/SCALE.md). At most cap(opDone) at a time, so that a
// steady stream of ops cannot hold off the passes.
func (l *loop) drainOps(ctx context.Context) {
	for range cap(l.opDone) {
		select {
		case o := <-l.opDone:
			l.opFinished(ctx, o)
		default:
			return
		}
	}
}

// opFinished takes back a finished op: what it learnt is the loop's to act on.
func (l *loop) opFinished(ctx context.Context, o *op) {
	if l.ops[o.id] == o {
		delete(l.ops, o.id)
	}
	l.plan.opEnded(o.id)
	switch o.kind {
	case opDispatch:
		if o.ok {
			l.sent[o.id] = o.gen
		}
		if o.workerGen > 0 {
			l.placeAbove(ctx, o.id, o.worker, o.gen, o.workerGen)
		}
	case opProbe:
		l.probes = append(l.probes, o) // acted on together (orphanVerdicts)
	}
}

// reconcile is one pass: bring the replicated worker list in line with
// gossip, place Pending tasks, make sure every placement and stop is being
// carried out, and now and then poll the workers.
func (l *loop) reconcile(ctx context.Context) (full bool) {
	if ctx.Err() != nil || !l.m.raft.IsLeader() {
		return false
	}
	start := time.Now()
	defer l.m.metrics.pass(start)
	l.syncWorkers(ctx)
	ids, all := l.m.fsm.TakeChanges()
	nodes := l.m.fsm.Nodes()
	fp := capacityPrint(nodes)
	// A full pass reads every live task; the others only those changed
	// since the last pass (passes.go). Only the tasks that are not
	// finished either way: a pass costs what runs, not the finished tasks
	// kept until garbage collection removes them.
	full = l.plan.full(start, l.m.cfg.Tick, all, fp, len(l.blocked) > 0)
	var tasks []*api.Task
	if !full {
		tasks = l.m.fsm.LiveTaskRefsOf(l.plan.changed(ids))
		if slices.ContainsFunc(tasks, needsAll) {
			l.plan.owed = true
			if full = l.plan.full(start, l.m.cfg.Tick, false, fp, false); !full {
				tasks = slices.DeleteFunc(tasks, needsAll) // in the owed full pass
			}
		}
	}
	// Host ports held per worker, kept up to date through the pass as
	// restarts, placements and moves take them. A pass over changes holds
	// no task asking static ones, so it needs none.
	ports := HostPortUse{}
	if full {
		l.m.metrics.fullPasses.Inc()
		tasks = l.m.fsm.LiveTaskRefs()
		ports = l.usedPorts(tasks)
	}
	byName := make(map[string]api.Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	now := time.Now()
	var pending, drained []api.Task
	for _, tp := range tasks {
		if ctx.Err() != nil {
			return full
		}
		t := *tp
		if len(l.recovering) > 0 {
			l.noteRecovered(t)
		}
		n, known := byName[t.Worker]
		lost, why := false, ""
		if t.DesiredState == api.Running && (t.State == api.Scheduled || t.State == api.Running) {
			lost, why = lostWorker(t.Worker, n, known)
		}
		rs, unhealthy := l.dueUnhealthy(t)
		switch {
		case lost:
			l.checkOrphan(ctx, t, why)
		case unhealthy:
			l.restart(ctx, t, nodes, ports, rs)
		case t.DesiredState == api.Running && t.State.Terminal():
			l.recoverEnded(ctx, t, nodes, ports)
		case t.DesiredState == api.Running && t.State == api.Pending:
			if !l.stillBlocked(tp, fp, now) {
				pending = append(pending, t)
			}
		case t.DesiredState == api.Running && (t.State == api.Scheduled || t.State == api.Running) && n.Drain:
			drained = append(drained, t)
		case t.DesiredState == api.Running && t.State == api.Scheduled:
			l.keepScheduled(ctx, t)
		case t.DesiredState == api.Completed && !t.State.Terminal() && t.Worker != "":
			l.ensureOp(ctx, t, opStop)
		}
	}
	l.placeAll(ctx, pending, nodes, ports)
	l.moveOff(ctx, drained, nodes, ports)
	l.plan.print = capacityPrint(nodes)
	if !full {
		return false
	}
	l.reconcileServices(ctx, tasks)
	l.checker.Sync(l.healthSpecs(tasks, nodes))
	l.prune(tasks)
	if l.pollDue(time.Now()) {
		l.startPoll(ctx, nodes, tasks)
	}
	l.plan.fullDone(start)
	return true
}

// startGC runs the periodic garbage collection, every GCInterval, on a
// goroutine of its own (its commits must not hold up a pass), until ctx
// ends; end waits for it.
func (l *loop) startGC(ctx context.Context) {
	if l.m.cfg.GCInterval <= 0 {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(l.m.cfg.GCInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				l.m.collectDue(ctx, now)
			}
		}
	}()
}

// prune forgets the soft state of tasks that are no longer to run, so the
// leader's memory does not grow with the history of the cluster.
func (l *loop) prune(tasks []*api.Task) {
	active := make(map[uuid.UUID]bool, len(tasks))
	scheduled := make(map[uuid.UUID]bool)
	pending := make(map[uuid.UUID]bool)
	for _, t := range tasks {
		if t.DesiredState == api.Running {
			active[t.ID] = true
			switch t.State {
			case api.Scheduled:
				scheduled[t.ID] = true
			case api.Pending:
				pending[t.ID] = true
			}
		}
	}
	l.pruneScheduled(scheduled)
	l.pruneBlocked(pending)
	l.m.health.keep(active)
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
	for id := range l.recovering {
		if !active[id] {
			delete(l.recovering, id)
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
// liveness, allowances, labels) when it differs from the replicated one.
func (l *loop) syncWorkers(ctx context.Context) {
	known := l.m.fsm.Workers()
	var (
		changed []api.Node
		cmds    []any
	)
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
			Allows:           mem.Meta.Allows,
			Labels:           mem.Meta.Labels,
		}
		cur, ok := known[n.Name]
		if !ok && (n.State == api.NodeDead || n.State == api.NodeLeft) {
			// Gossip remembers departed members a while; one the state
			// does not hold (never seen, or garbage-collected) has nothing
			// to record, and recording it would undo the collection.
			continue
		}
		if ok {
			n.Since, n.Drain = cur.Since, cur.Drain
		}
		if !ok || cur.State != n.State {
			n.Since = time.Now().UTC()
		}
		if ok && cur.Equal(n) {
			continue
		}
		changed = append(changed, n)
		cmds = append(cmds, fsm.UpsertWorker{Node: n})
	}
	// Committed together: a new leader whose gossip view differs from the
	// records on many workers (a hundred flapped during a burst) waited a
	// raft round trip for each before its first pass could place or
	// restart anything.
	for i, err := range l.applyEach(ctx, cmds) {
		n := changed[i]
		if err != nil {
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
// last of 100 wait ~0.9 s). Allocation is then counted in nodes, and host
// ports in ports, for the rest of the pass.
func (l *loop) placeAll(ctx context.Context, pending []api.Task, nodes []api.Node, ports HostPortUse) {
	if len(pending) == 0 || ctx.Err() != nil {
		return
	}
	decisions := PlaceAll(l.sched, pending, nodes, ports)
	var placed []Placement
	var cmds, notes []any
	for _, d := range decisions {
		if !d.OK {
			if d.Task.Reason != d.Reason {
				notes = append(notes, fsm.PendingNote{ID: d.Task.ID, Reason: d.Reason, Time: time.Now().UTC()})
				l.log.Info("task waits", "task_id", d.Task.ID, "reason", d.Reason)
			}
			continue
		}
		placed = append(placed, d)
		cmds = append(cmds, fsm.AssignTask{ID: d.Task.ID, Worker: d.Node.Name, Generation: d.Task.Generation + 1, Time: time.Now().UTC()})
	}
	for i, err := range l.applyEach(ctx, notes) {
		if err != nil {
			l.log.Warn("record pending reason", "task_id", notes[i].(fsm.PendingNote).ID, "error", err)
		}
	}
	res, errs := l.assign(ctx, cmds)
	for i, d := range placed {
		if errs[i] != nil {
			l.log.Warn("assign task", "task_id", d.Task.ID, "worker", d.Node.Name, "error", errs[i])
			continue
		}
		allocate(nodes, d.Node.Name, d.Task)
		ports.take(d.Node.Name, d.Task)
		l.m.metrics.placements.Inc()
		l.log.Info("task assigned", "task_id", d.Task.ID, "worker", d.Node.Name, "generation", res[i].Task.Generation)
		l.ensureOp(ctx, res[i].Task, opDispatch)
	}
	l.noteBlocked(decisions, capacityPrint(nodes), time.Now())
}

// moveOff moves the tasks of drained workers to workers with room: each is
// placed at a new generation (not counted as a restart), dispatched there,
// and its old copy stopped, fenced by its generation. A task for which no
// worker has room keeps running where it is until one does.
func (l *loop) moveOff(ctx context.Context, tasks []api.Task, nodes []api.Node, ports HostPortUse) {
	if len(tasks) == 0 || ctx.Err() != nil {
		return
	}
	// Decided in order like placeAll's; each move counts where it lands.
	for _, d := range PlaceAll(l.sched, tasks, nodes, ports) {
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
		ports.take(d.Node.Name, t)
		l.m.metrics.placements.Inc()
		delete(l.stuck, t.ID)
		l.log.Info("task moved off a draining worker", "task_id", t.ID, "from", t.Worker, "to", d.Node.Name, "generation", res.Task.Generation)
		l.stopCopy(ctx, t.Worker, t.ID, t.Generation, "moved off its draining worker")
		l.ensureOp(ctx, res.Task, opDispatch)
	}
}

// maxConcurrentAssign bounds the commands of one batch in flight at once
// (hashicorp/raft appends up to MaxAppendEntries, 64, per batch).
const maxConcurrentAssign = 64

// maxAssignBatch bounds the assignments of one assign-tasks entry (about
// 150 bytes each).
const maxAssignBatch = 1024

// assign commits a pass's assignments: in assign-tasks entries of up to
// maxAssignBatch once every voter knows the command, else one entry each
// (applyEachResult). It returns each one's result and error, in order.
func (l *loop) assign(ctx context.Context, cmds []any) ([]*fsm.Result, []error) {
	if len(cmds) < 2 || l.m.checkCommand(ctx, fsm.CmdAssignTasks) != nil {
		return l.applyEachResult(ctx, cmds)
	}
	res, errs := make([]*fsm.Result, len(cmds)), make([]error, len(cmds))
	for lo := 0; lo < len(cmds); lo += maxAssignBatch {
		hi := min(lo+maxAssignBatch, len(cmds))
		batch := fsm.AssignTasks{Assigns: make([]fsm.AssignTask, 0, hi-lo)}
		for _, c := range cmds[lo:hi] {
			batch.Assigns = append(batch.Assigns, c.(fsm.AssignTask))
		}
		r, err := l.m.apply(ctx, batch)
		for i := lo; i < hi; i++ {
			switch {
			case err != nil:
				errs[i] = err
			case r.Each[i-lo].Err != nil:
				errs[i] = r.Each[i-lo].Err
			default:
				res[i] = r.Each[i-lo]
			}
		}
	}
	return res, errs
}

// applyEach commits cmds concurrently, at most maxConcurrentAssign in
// flight, and returns each one's error, in order: a pass's assignments or a
// crowd of requeues share raft's batches instead of waiting for one round
// trip each.
func (l *loop) applyEach(ctx context.Context, cmds []any) []error {
	_, errs := l.applyEachResult(ctx, cmds)
	return errs
}

// applyEachResult is applyEach with each command's result (nil if it
// failed).
func (l *loop) applyEachResult(ctx context.Context, cmds []any) ([]*fsm.Result, []error) {
	res, errs := make([]*fsm.Result, len(cmds)), make([]error, len(cmds))
	sem := make(chan struct{}, maxConcurrentAssign)
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res[i], errs[i] = l.m.apply(ctx, cmd)
		}()
	}
	wg.Wait()
	return res, errs
}

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
	o := &op{id: t.ID, kind: kind, worker: t.Worker, gen: t.Generation, cancel: cancel}
	l.ops[t.ID] = o
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		if kind == opDispatch {
			l.dispatch(octx, t, o)
		} else {
			l.completeStop(octx, t)
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
// (o.ok) or the assignment changes. Sending twice is harmless: the worker is
// idempotent per (task, generation). A worker that refuses it because it
// holds a newer generation of the task (a rebuilt cluster facing its old
// workers) tells the loop which one (o.workerGen), and the loop places the
// task above it.
func (l *loop) dispatch(ctx context.Context, t api.Task, o *op) {
	l.retry(ctx, 0, func(attempt int) bool {
		cur, ok := l.current(t, api.Running)
		if !ok || cur.State != api.Scheduled {
			return true
		}
		n, ok := l.m.fsm.Worker(cur.Worker)
		if !ok || n.API == "" {
			return false
		}
		rec, _, err := l.m.workers.Submit(ctx, n.API, api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now().UTC(), Task: cur})
		switch {
		case err == nil:
			l.log.Debug("task dispatched", "task_id", t.ID, "worker", cur.Worker, "generation", cur.Generation, "attempt", attempt)
			// The worker's answer is its record as it stood then: Scheduled,
			// unless the assignment was sent before. A Scheduled record says
			// nothing the assignment did not, and committed after the
			// worker's own report that the task runs (or ended), sent
			// meanwhile, it would put the task back to Scheduled until a
			// poll or the Scheduled timeout (bench/scale/SCALE.md: tasks
			// Running for a minute before the cluster knew).
			if rec.State != api.Scheduled {
				l.reportUnlessBehind(ctx, rec)
			}
			o.ok = true
			return true
		case errors.Is(err, api.ErrStaleGeneration):
			o.workerGen = l.heldGeneration(ctx, n.API, cur, err)
			l.log.Warn("worker holds a newer generation than the assignment", "task_id", t.ID, "worker", cur.Worker,
				"generation", cur.Generation, "worker_generation", o.workerGen, "error", err)
			return true
		case ctx.Err() != nil:
			return true
		}
		l.log.Warn("dispatch failed; will retry", "task_id", t.ID, "worker", cur.Worker, "attempt", attempt, "error", err)
		return false
	})
}

// heldGeneration returns the generation of task cur that the worker at addr
// holds, after it refused cur's with a stale-generation error: from its task
// record, else (the worker cleaned up an ended record and only remembers
// its generation) from the refusal's message, else cur's own generation, so
// that the next placement is at least one higher.
func (l *loop) heldGeneration(ctx context.Context, addr string, cur api.Task, refusal error) uint64 {
	if rec, err := l.m.workers.Task(ctx, addr, cur.ID); err == nil && rec.Generation > cur.Generation {
		return rec.Generation
	}
	if g := generationIn(refusal.Error()); g > cur.Generation {
		return g
	}
	return cur.Generation
}

var generationRE = regexp.MustCompile(`generation (\d+)`)

// generationIn returns the highest "generation N" a worker's refusal names
// (its own generation is the highest: that is why it refused), 0 if none.
func generationIn(msg string) uint64 {
	var g uint64
	for _, m := range generationRE.FindAllStringSubmatch(msg, -1) {
		if n, err := strconv.ParseUint(m[1], 10, 64); err == nil {
			g = max(g, n)
		}
	}
	return g
}

// completeStop carries out a committed stop request (the operator's) on the
// task's worker, then commits the task Completed.
func (l *loop) completeStop(ctx context.Context, t api.Task) {
	l.retry(ctx, 0, func(attempt int) bool {
		cur, ok := l.current(t, api.Completed)
		if !ok || cur.State.Terminal() {
			return true
		}
		n, ok := l.m.fsm.Worker(cur.Worker)
		if !ok || n.API == "" {
			return false
		}
		err := l.m.workers.StopUpTo(ctx, n.API, cur.ID, cur.Generation)
		switch {
		case err == nil || errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrStaleGeneration):
			done := cur
			done.State = api.Completed
			done.Reason = api.ReasonStoppedOnRequest
			done.FinishTime = time.Now().UTC()
			l.report(ctx, done)
			l.log.Info("task stopped", "task_id", t.ID, "worker", cur.Worker)
			return true
		case ctx.Err() != nil:
			return true
		}
		l.log.Warn("stop failed; will retry", "task_id", t.ID, "worker", cur.Worker, "attempt", attempt, "error", err)
		return false
	})
}

// stopCopyAttempts bounds the attempts of stopCopy: a copy that cannot be
// stopped now is found again by the next poll.
const stopCopyAttempts = 5

// stopCopy stops one copy of a task, the placement (worker, generation),
// that the cluster no longer wants — superseded by a newer placement, moved
// off a draining or unhealthy worker, given up on, or unknown to the
// cluster — in the background, without waiting for the next poll. Unlike
// completeStop it commits nothing: the task's state is elsewhere. The stop
// is fenced by generation, so it cannot touch a newer placement.
func (l *loop) stopCopy(ctx context.Context, worker string, id uuid.UUID, gen uint64, why string) {
	n, ok := l.m.fsm.Worker(worker)
	if !ok || n.State != api.NodeAlive || n.API == "" {
		return // lost worker: the poll stops the copy if it comes back
	}
	if !l.m.raft.IsLeader() {
		return
	}
	l.log.Info("stopping a copy the cluster no longer wants", "task_id", id, "worker", worker, "generation", gen, "why", why)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.retry(ctx, stopCopyAttempts, func(int) bool {
			err := l.m.workers.StopUpTo(ctx, n.API, id, gen)
			switch {
			case err == nil:
				l.log.Info("stopped a copy the cluster no longer wants", "task_id", id, "worker", worker, "generation", gen)
				return true
			case errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrStaleGeneration), ctx.Err() != nil:
				return true
			}
			l.log.Warn("stop unwanted copy", "task_id", id, "worker", worker, "generation", gen, "error", err)
			return false
		})
	}()
}

// report commits a worker record, ignoring stale or settled ones.
// reportUnlessBehind commits a worker's record of a task unless the FSM
// already holds a later state of the same placement: a record read or sent
// before the worker's own report of what came next (the records of one
// placement only move forward: Scheduled, Running, an end) would undo it.
func (l *loop) reportUnlessBehind(ctx context.Context, rec api.Task) {
	if cur, err := l.m.fsm.Task(rec.ID); err == nil && cur.Worker == rec.Worker && cur.Generation == rec.Generation &&
		placementRank(rec.State) < placementRank(cur.State) {
		l.log.Debug("worker record behind the stored state; not committed", "task_id", rec.ID, "record", rec.State, "stored", cur.State)
		return
	}
	l.report(ctx, rec)
}

// placementRank orders the states of one placement as a worker's records
// go through them.
func placementRank(s api.State) int {
	switch s {
	case api.Pending:
		return 0
	case api.Scheduled:
		return 1
	case api.Running:
		return 2
	default: // Completed, Failed
		return 3
	}
}

func (l *loop) report(ctx context.Context, rec api.Task) {
	if err := l.m.ReportTask(ctx, rec); err != nil && ctx.Err() == nil {
		l.log.Warn("record worker report", "task_id", rec.ID, "error", err)
	}
}

// retry makes attempts until one reports done, sleeping between them a
// jittered back-off that doubles from RetryMin to RetryMax: the one retry
// loop of the manager's calls to workers. attempts > 0 bounds their number.
// It returns false if ctx ended or the attempts ran out first.
func (l *loop) retry(ctx context.Context, attempts int, attempt func(n int) (done bool)) bool {
	backoff := l.m.cfg.RetryMin
	for n := 1; ; n++ {
		if attempt(n) {
			return true
		}
		if attempts > 0 && n >= attempts {
			return false
		}
		if !sleep(ctx, api.Jitter(backoff)) {
			return false
		}
		backoff = min(2*backoff, l.m.cfg.RetryMax)
	}
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

package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
	"github.com/google/uuid"
)

// DefaultMaxRestarts is the restart limit of a task that does not set
// MaxRestarts, as in the seed.
const DefaultMaxRestarts = 3

// restartState is the leader's memory of a task's recent failures. It is soft
// state: a new leader starts with none, so its first restart of any task is
// immediate, which is the right bias after a failover.
type restartState struct {
	streak    int       // failures in a row without a healthy run between them
	gen       uint64    // the generation whose failure was last counted
	notBefore time.Time // do not restart before this (back-off)
	reason    string    // what failed, for the restart's Reason
	unhealthy bool      // gen is Running but failed its health check: restart it when due
	uncounted bool      // gen ended by no fault of the task's (api.Task.StoppedUnasked): not counted
}

// restartPolicy returns the policy in force for t ("" means on-failure).
func restartPolicy(t api.Task) string {
	if t.RestartPolicy == "" {
		return "on-failure"
	}
	return t.RestartPolicy
}

// wantsRestart reports whether an ended task is to run again under its policy:
// on-failure after a failure, always/unless-stopped after any end.
func wantsRestart(t api.Task) (bool, string) {
	p := restartPolicy(t)
	switch {
	case t.StoppedUnasked():
		return true, ""
	case t.State == api.Failed && p == "no":
		return false, fmt.Sprintf("%s; restart policy is \"no\"", t.Reason)
	case t.State == api.Failed:
		return true, ""
	case t.State == api.Completed && (p == "always" || p == "unless-stopped"):
		return true, ""
	}
	return false, ""
}

func maxRestarts(t api.Task) int {
	if t.MaxRestarts == 0 {
		return DefaultMaxRestarts
	}
	return t.MaxRestarts
}

// backoff returns the wait before the next restart after streak failures in a
// row: none for the first failure after a healthy run, then RestartBase
// doubling up to RestartCap, with jitter so that many tasks failing together
// do not restart in lockstep.
func (l *loop) backoff(streak int) time.Duration {
	if streak <= 1 {
		return 0
	}
	d := l.m.cfg.RestartBase
	for i := 2; i < streak && d < l.m.cfg.RestartCap; i++ {
		d *= 2
	}
	return api.Jitter(min(d, l.m.cfg.RestartCap))
}

// noteFailure records a failure of t's current generation (once) and returns
// the restart state: the streak resets when the run that ended was healthy
// (it lasted at least HealthyRun).
func (l *loop) noteFailure(t api.Task, ran time.Duration, reason string) *restartState {
	rs := l.restarts[t.ID]
	if rs == nil {
		rs = &restartState{}
		l.restarts[t.ID] = rs
	}
	if rs.gen == t.Generation && rs.streak > 0 {
		return rs // already counted
	}
	if ran >= l.m.cfg.HealthyRun {
		rs.streak = 0
	}
	rs.streak++
	rs.gen = t.Generation
	rs.reason = reason
	rs.unhealthy = false
	rs.uncounted = false
	rs.notBefore = time.Now().Add(l.backoff(rs.streak))
	return rs
}

// StoppedUnaskedLog begins the error the leader logs when it finds a task
// to run whose current placement its worker stopped on request
// (api.Task.StoppedUnasked): a fault of the cluster's, which the chaos and
// scale tests look for in the managers' logs.
const StoppedUnaskedLog = "task stopped on its worker though the cluster wants it running"

// recoverEnded restarts (or gives up on) a task that ended while it was to
// run, following its restart policy, limit and back-off.
func (l *loop) recoverEnded(ctx context.Context, t api.Task, nodes []api.Node, ports HostPortUse) {
	if t.HostPortTaken() && len(t.StaticHostPorts()) > 0 {
		l.portClash(ctx, t, ports)
		return
	}
	ok, why := wantsRestart(t)
	if !ok {
		if why != "" {
			l.giveUp(ctx, t, why)
		}
		return
	}
	if t.StoppedUnasked() {
		// Not the task's end: a stop reached its current placement though
		// the cluster wants it running (every stop the leader sends is
		// fenced to a placement it has moved on from). Run it again at
		// once, and say so loudly: it is a fault of the cluster's, to be
		// found.
		reason := fmt.Sprintf("its worker %s stopped generation %d on request, a stop the cluster did not ask for", t.Worker, t.Generation)
		l.log.Error(StoppedUnaskedLog+"; running it again, not counted",
			"task_id", t.ID, "worker", t.Worker, "generation", t.Generation, "finished", t.FinishTime)
		rs := l.noteFailure(t, 0, reason)
		rs.streak, rs.notBefore, rs.uncounted = 0, time.Time{}, true
		l.restart(ctx, t, nodes, ports, rs)
		return
	}
	ran := time.Duration(0)
	if !t.StartTime.IsZero() && t.FinishTime.After(t.StartTime) {
		ran = t.FinishTime.Sub(t.StartTime)
	}
	reason := t.Reason
	if reason == "" {
		reason = "exited with code 0"
	}
	l.restart(ctx, t, nodes, ports, l.noteFailure(t, ran, reason))
}

// unhealthy handles a health verdict: a Running task that failed its check
// Threshold times in a row is restarted (or given up on).
func (l *loop) unhealthy(ctx context.Context, r health.Result) {
	t, err := l.m.fsm.Task(r.TaskID)
	if err != nil || t.Generation != r.Generation || t.State != api.Running || t.DesiredState != api.Running {
		return // a verdict about an older placement, or the task moved on
	}
	l.m.health.drop(t.ID, t.Generation)
	l.log.Warn("task unhealthy", "task_id", t.ID, "worker", t.Worker, "generation", t.Generation, "failures", r.Failures, "reason", r.Reason)
	l.commitHealth(ctx, t, r)
	// How long it ran is how long this leader has checked it (its own
	// monotonic clock), not time.Since(t.StartTime): the worker stamped
	// StartTime with its wall clock, and a leader whose clock differs (or
	// was stepped since) read negative or hours-long runs from it, keeping
	// a back-off after a long healthy run or skipping one in a crash loop.
	rs := l.noteFailure(t, r.Checked, "health check failed: "+r.Reason)
	rs.unhealthy = true // the reconcile pass restarts it once its back-off has passed
	l.restart(ctx, t, l.m.fsm.Nodes(), l.usedPorts(l.m.fsm.LiveTaskRefs()), rs)
}

// healthy handles a placement passing its health check: the back-off resets,
// so that the next failure after a healthy run is restarted at once.
func (l *loop) healthy(ctx context.Context, r health.Result) {
	if t, err := l.m.fsm.Task(r.TaskID); err == nil && t.Generation == r.Generation && t.State == api.Running {
		at := r.At
		if at.IsZero() {
			at = time.Now()
		}
		l.m.health.set(r.TaskID, r.Generation, at)
		l.commitHealth(ctx, t, r)
	}
	if rs := l.restarts[r.TaskID]; rs != nil && rs.gen < r.Generation {
		rs.streak = 0
	}
}

// commitHealth commits a verdict of t's health check (api.Task.Healthy and
// an entry of its History), unless the state says it already: a new
// leader's checks start over and pass again, which is no news. Only the
// verdicts that change something are written, and the checker's verdicts
// alternate, so a placement costs a write when it first passes and one
// when it fails. A write that fails is logged and dropped: the verdict is
// an annotation (the rollouts and restarts act on the leader's own view),
// and the next change of the task's state is committed as always.
func (l *loop) commitHealth(ctx context.Context, t api.Task, r health.Result) {
	if t.Healthy == r.Healthy || t.DesiredState != api.Running {
		return
	}
	at := r.At
	if at.IsZero() {
		at = time.Now()
	}
	cmd := fsm.SetHealth{ID: t.ID, Generation: t.Generation, Healthy: r.Healthy, Time: at.UTC()}
	if !r.Healthy {
		cmd.Reason = r.Reason
	}
	if _, err := l.m.apply(ctx, cmd); err != nil {
		l.log.Warn("commit health verdict", "task_id", t.ID, "generation", t.Generation, "healthy", r.Healthy, "error", err)
	}
}

// dueUnhealthy returns the restart state of a Running task that failed its
// health check and waits for its back-off to pass.
func (l *loop) dueUnhealthy(t api.Task) (*restartState, bool) {
	rs := l.restarts[t.ID]
	if rs == nil || !rs.unhealthy || rs.gen != t.Generation || t.State != api.Running || t.DesiredState != api.Running {
		return nil, false
	}
	return rs, true
}

// restart commits the task's next placement once its back-off has passed:
// on its own worker if that one is alive and has not failed it repeatedly,
// else wherever the scheduler finds room and the task's host ports are free.
// At the limit it gives up instead. The new placement's host ports are
// counted in ports.
func (l *loop) restart(ctx context.Context, t api.Task, nodes []api.Node, ports HostPortUse, rs *restartState) {
	if max := maxRestarts(t); max >= 0 && t.RestartCount >= max && !rs.uncounted {
		l.giveUp(ctx, t, fmt.Sprintf("gave up after %d restarts: %s", t.RestartCount, rs.reason))
		return
	}
	if time.Now().Before(rs.notBefore) {
		return // the loop comes back on its tick
	}
	target, ok := l.restartTarget(t, nodes, ports, rs.streak)
	if !ok {
		// Nowhere to run it now: back to Pending, placed when room appears.
		if _, err := l.m.apply(ctx, fsm.RequeueTask{ID: t.ID, Reason: "waiting for a worker with room after: " + rs.reason, Time: time.Now().UTC()}); err != nil {
			l.log.Warn("requeue task", "task_id", t.ID, "error", err)
		}
		return
	}
	res, err := l.m.apply(ctx, fsm.RestartTask{ID: t.ID, Worker: target.Name, Generation: t.Generation + 1, Counted: !rs.uncounted,
		Reason: "restarted after: " + rs.reason, Time: time.Now().UTC()})
	if err != nil {
		l.log.Warn("restart task", "task_id", t.ID, "error", err)
		return
	}
	ports.take(target.Name, t)
	l.restarted(t, rs, res.Task.Generation)
	l.log.Info("task restarted", "task_id", t.ID, "worker", target.Name, "generation", res.Task.Generation,
		"restart_count", res.Task.RestartCount, "streak", rs.streak, "after", rs.reason)
	if t.State == api.Running && target.Name != t.Worker {
		// The unhealthy copy runs on; stop it now that it moved elsewhere.
		l.stopCopy(ctx, t.Worker, t.ID, t.Generation, "restarted on "+target.Name)
	}
	l.ensureOp(ctx, res.Task, opDispatch)
}

// restartTarget picks the worker of a restart.
func (l *loop) restartTarget(t api.Task, nodes []api.Node, ports HostPortUse, streak int) (api.Node, bool) {
	// The task no longer counts against its worker once it ended; if it is
	// still Running (unhealthy), its share is about to be freed.
	freed := make([]api.Node, len(nodes))
	copy(freed, nodes)
	for i := range freed {
		if freed[i].Name == t.Worker && t.State == api.Running {
			freed[i].AllocatedCpu -= t.Cpu
			freed[i].AllocatedMemory -= t.Memory
			freed[i].AllocatedDisk -= t.Disk
			countService(&freed[i], t.Service, -1)
		}
	}
	if streak < 3 {
		for _, n := range freed {
			if n.Name == t.Worker && fits(&t, &n) && meets(t, n) && len(portFree(t, []api.Node{n}, ports)) == 1 {
				return n, true
			}
		}
	}
	// The worker is gone or keeps failing the task: try the others first.
	var others []api.Node
	for _, n := range freed {
		if n.Name != t.Worker {
			others = append(others, n)
		}
	}
	if n, ok, _ := PlaceFree(l.sched, t, others, ports); ok {
		return n, true
	}
	n, ok, _ := PlaceFree(l.sched, t, freed, ports)
	return n, ok
}

// giveUp marks the task Failed for good and stops whatever still runs of it.
func (l *loop) giveUp(ctx context.Context, t api.Task, reason string) {
	res, err := l.m.apply(ctx, fsm.GiveUpTask{ID: t.ID, Reason: reason, Time: time.Now().UTC()})
	if err != nil {
		l.log.Warn("give up on task", "task_id", t.ID, "error", err)
		return
	}
	delete(l.restarts, t.ID)
	l.log.Warn("gave up on task", "task_id", t.ID, "reason", reason)
	if t.State == api.Running || t.State == api.Scheduled {
		l.stopCopy(ctx, res.Task.Worker, t.ID, t.Generation, "the task was given up on")
	}
}

// lostWorker reports whether the worker named name, whose record is n (known
// false if the cluster has none), can no longer run or report on its tasks.
func lostWorker(name string, n api.Node, known bool) (bool, string) {
	switch {
	case !known:
		return true, fmt.Sprintf("worker %s is unknown", name)
	case n.State == api.NodeDead || n.State == api.NodeLeft:
		return true, fmt.Sprintf("worker %s is %s", name, n.State)
	case !n.RuntimeAvailable:
		return true, fmt.Sprintf("worker %s lost its container runtime", name)
	}
	return false, ""
}

// checkOrphan decides about a task whose worker is lost. The worker agent may
// be dead while its machine and containers live on (a worker process crash),
// so the leader probes the task itself: if it still answers it is left alone
// (its restarted worker re-adopts it); if not, it is requeued and placed
// elsewhere, not counted as a restart.
func (l *loop) checkOrphan(ctx context.Context, t api.Task, why string) {
	if last, ok := l.probed[t.ID]; ok && time.Since(last) < l.m.cfg.OrphanProbeInterval {
		return
	}
	l.probed[t.ID] = time.Now()
	octx, cancel := context.WithCancel(ctx)
	o := &op{id: t.ID, kind: opProbe, worker: t.Worker, gen: t.Generation, cancel: cancel}
	if cur, ok := l.ops[t.ID]; ok {
		if cur.kind == opProbe && cur.gen == t.Generation {
			cancel()
			return
		}
		cur.cancel()
	}
	l.ops[t.ID] = o
	n, _ := l.m.fsm.Worker(t.Worker)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer cancel()
		alive, detail := l.m.probe(octx, t, n.API)
		if !alive && detail == notProbeable && n.State == api.NodeDead && n.API != "" {
			alive, detail = l.askWorker(ctx, octx, t, n.API)
		}
		o.ok = alive
		o.detail = why + "; task " + detail
		select {
		case l.opDone <- o:
		case <-ctx.Done():
		}
	}()
}

// askWorker asks a lost worker's own API whether it still runs t at its
// generation: the second opinion on a task that cannot be probed. Gossip
// declares a worker dead when it misses a few probes, which a worker
// starved of CPU does (bench/scale/SCALE.md: at 200 workers on two cores,
// live workers were declared dead and every task of theirs placed again
// at once); a worker whose API answers is not gone, and its task stays
// until it stops answering. A powered-off machine answers nothing, so the
// call is bounded like a probe's connect (twice OrphanConnectTimeout).
//
// The worker is asked for its whole list, once for all the tasks of it
// probed together (workerLists): the list is made under the loop's ctx, so
// that one task's probe ending early does not end its neighbours'; this
// probe waits for it under octx.
func (l *loop) askWorker(ctx, octx context.Context, t api.Task, workerAPI string) (bool, string) {
	recs, err := l.lists.get(ctx, octx, workerAPI, l.m.cfg.OrphanProbeInterval/2, func(ctx context.Context) ([]api.Task, error) {
		actx, cancel := context.WithTimeout(ctx, 2*l.m.cfg.orphanConnectTimeout())
		defer cancel()
		return l.m.workers.Tasks(actx, workerAPI)
	})
	rec, held := recs[t.ID]
	switch {
	case errors.Is(err, api.ErrNotSent):
		// Not asked: the leader's own calls to workers were all in
		// flight (a burst of dispatches). The worker's silence says
		// nothing; the task stays and is probed again.
		return true, notProbeable + ", and its worker could not be asked yet (" + err.Error() + "); asked again at the next probe"
	case err != nil:
		return false, notProbeable + ", and its worker's API does not answer for it: " + err.Error()
	case !held:
		return false, notProbeable + ", and its worker holds no record of it"
	case rec.Generation != t.Generation:
		return false, fmt.Sprintf("%s, and its worker holds generation %d, not %d", notProbeable, rec.Generation, t.Generation)
	case rec.State != api.Running && rec.State != api.Scheduled:
		return false, fmt.Sprintf("%s, and its worker reports it %s", notProbeable, rec.State)
	}
	return true, "runs still, says its worker's API (" + notProbeable + ")"
}

// workerLists shares one listing of a lost worker's records among the
// second opinions on its tasks (askWorker). A lost worker's tasks are
// probed all at once; asking for each of them was, when 10 of 100 workers
// went with 100,000 tasks stored, 10,000 calls and as many TLS dials to
// dead addresses: 17 % of the leader's CPU during the loss
// (bench/scale/SCALE.md). One list per worker gives the same answers. A
// list is shared with the probes that start within fresh of it, so that a
// task probed again later (OrphanProbeInterval) asks again.
type workerLists struct {
	mu     sync.Mutex
	byAddr map[string]*workerList
}

// workerList is one listing, in flight until done is closed.
type workerList struct {
	started time.Time
	done    chan struct{}
	recs    map[uuid.UUID]api.Task
	err     error
}

// get returns the records of the worker at addr from a list started within
// fresh, or lists them now with list (under ctx, which outlives any one
// probe); it waits for the list under octx.
func (w *workerLists) get(ctx, octx context.Context, addr string, fresh time.Duration, list func(context.Context) ([]api.Task, error)) (map[uuid.UUID]api.Task, error) {
	now := time.Now()
	w.mu.Lock()
	if w.byAddr == nil {
		w.byAddr = make(map[string]*workerList)
	}
	cur := w.byAddr[addr]
	mine := cur == nil || now.Sub(cur.started) >= fresh
	if mine {
		for a, old := range w.byAddr { // forget lists too old to share
			if now.Sub(old.started) >= fresh {
				delete(w.byAddr, a)
			}
		}
		cur = &workerList{started: now, done: make(chan struct{})}
		w.byAddr[addr] = cur
	}
	w.mu.Unlock()
	if mine {
		recs, err := list(ctx)
		if err == nil {
			cur.recs = make(map[uuid.UUID]api.Task, len(recs))
			for _, r := range recs {
				cur.recs[r.ID] = r
			}
		}
		cur.err = err
		close(cur.done)
	}
	select {
	case <-cur.done:
		return cur.recs, cur.err
	case <-octx.Done():
		return nil, octx.Err()
	}
}

// orphanVerdicts acts on the probes of tasks on lost workers finished
// since it last ran, together. A lost worker's tasks are probed at once and
// their probes end in a crowd; committing their requeues one raft round
// trip after another on the loop's goroutine made 1,000 tasks of 10 lost
// workers wait about 8 s to be placed again (bench/scale/SCALE.md), so
// they are committed concurrently, as placeAll commits its assignments.
func (l *loop) orphanVerdicts(ctx context.Context) {
	probes := l.probes
	l.probes = nil
	var (
		ids  []uuid.UUID
		cmds []any
		from []string
	)
	for _, o := range probes {
		if cmd, ok := l.orphanRequeue(o); ok {
			ids, cmds, from = append(ids, o.id), append(cmds, cmd), append(from, o.worker)
		}
	}
	for i, err := range l.applyEach(ctx, cmds) {
		if err != nil {
			l.log.Warn("requeue task of a lost worker", "task_id", ids[i], "error", err)
			continue
		}
		delete(l.probed, ids[i])
		l.log.Warn("task of a lost worker requeued", "task_id", ids[i], "worker", from[i], "reason", cmds[i].(fsm.RequeueTask).Reason)
	}
}

// orphanRequeue returns the requeue a finished probe of a task on a lost
// worker calls for, if the task still stands where it was probed and did
// not answer.
func (l *loop) orphanRequeue(o *op) (fsm.RequeueTask, bool) {
	t, err := l.m.fsm.Task(o.id)
	if err != nil || t.Generation != o.gen || t.DesiredState != api.Running || (t.State != api.Running && t.State != api.Scheduled) {
		return fsm.RequeueTask{}, false
	}
	n, known := l.m.fsm.Worker(t.Worker)
	if lost, _ := lostWorker(t.Worker, n, known); !lost {
		return fsm.RequeueTask{}, false
	}
	if o.ok {
		l.log.Debug("task on a lost worker still answers; left alone", "task_id", t.ID, "worker", t.Worker)
		return fsm.RequeueTask{}, false
	}
	return fsm.RequeueTask{ID: t.ID, Reason: o.detail, Time: time.Now().UTC()}, true
}

// probeTask checks from the leader whether a task still answers: its HTTP
// health check if it has one, else a TCP connect to its published port. A task
// without a published port cannot be observed and counts as lost.
func probeTask(ctx context.Context, t api.Task, workerAPI string, timeout, connectTimeout time.Duration, sourceIP string) (bool, string) {
	spec, ok, err := health.SpecFor(t, workerAPI)
	if err != nil || !ok {
		spec, ok, err = health.SpecFor(tcpCheckOf(t), workerAPI)
	}
	if err != nil || !ok {
		return false, notProbeable
	}
	spec.Timeout = min(spec.Timeout, timeout)
	spec.ConnectTimeout = connectTimeout
	spec.SourceIP = sourceIP
	healthy, reason := health.Probe(ctx, spec)
	if healthy {
		return true, "still answers"
	}
	return false, "does not answer: " + reason
}

// notProbeable is probeTask's detail for a task it cannot probe.
const notProbeable = "cannot be probed (no published port)"

// tcpCheckOf returns t with a TCP check, for probing a task that has none.
func tcpCheckOf(t api.Task) api.Task {
	t.HealthCheck = "tcp"
	t.HealthCheckPort = ""
	return t
}

// healthSpecs derives the checks the leader should run now: Running tasks with
// a health check, on live workers.
func (l *loop) healthSpecs(tasks []*api.Task, nodes []api.Node) []health.Spec {
	apis := make(map[string]string, len(nodes))
	for _, n := range nodes {
		if n.State == api.NodeAlive {
			apis[n.Name] = n.API
		}
	}
	var specs []health.Spec
	for _, t := range tasks {
		addr, ok := apis[t.Worker]
		if !ok || t.State != api.Running || t.DesiredState != api.Running || t.HealthCheck == "" {
			continue
		}
		s, ok, err := health.SpecFor(*t, addr)
		s.SourceIP = l.m.cfg.SourceIP
		if err != nil && !errors.Is(err, health.ErrNoHostPort) && l.specErr[t.ID] != t.Generation {
			l.specErr[t.ID] = t.Generation
			l.log.Warn("task health check cannot run", "task_id", t.ID, "generation", t.Generation, "error", err)
		}
		if err != nil || !ok {
			continue
		}
		specs = append(specs, s)
	}
	return specs
}

// recovering is a task restarted after its container ended, until it runs
// again: since is when the first of its containers in a row ended.
type recovering struct {
	gen   uint64 // the generation that is to run
	since time.Time
}

// restarted counts a committed restart of t (now at generation gen) and,
// for a container that ended, starts the clock of
// cube_crash_to_running_seconds. A restart that fails to start and is
// restarted again keeps the first end as its start.
func (l *loop) restarted(t api.Task, rs *restartState, gen uint64) {
	if rs.unhealthy {
		l.m.metrics.restarts.WithLabelValues(causeUnhealthy).Inc()
		return
	}
	l.m.metrics.restarts.WithLabelValues(causeExit).Inc()
	since := t.FinishTime
	if r, ok := l.recovering[t.ID]; ok {
		since = r.since
	}
	if since.IsZero() {
		since = time.Now()
	}
	l.recovering[t.ID] = recovering{gen: gen, since: since}
}

// noteRecovered observes the end of a recovery when t, restarted, runs at
// the generation it was restarted at.
func (l *loop) noteRecovered(t api.Task) {
	r, ok := l.recovering[t.ID]
	if !ok || t.State != api.Running || t.Generation < r.gen {
		return
	}
	delete(l.recovering, t.ID)
	if t.Generation > r.gen {
		return // placed again since (moved, lost worker): not a restart's run
	}
	at := t.StartTime
	if at.IsZero() {
		at = time.Now()
	}
	l.m.metrics.crashToRunning.Observe(max(0, at.Sub(r.since).Seconds()))
}

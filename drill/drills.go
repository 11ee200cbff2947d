package drill

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Result is one trial of one drill against one system.
type Result struct {
	Drill  int    `json:"drill"`
	Name   string `json:"name"`
	System string `json:"system"` // cube-fast, cube-default, swarm, swarm-fast
	Trial  int    `json:"trial"`
	// Measures are times in milliseconds from the fault (or, for restart,
	// from the crash), by what they measure; drill 7 has several restarts.
	Measures map[string][]float64 `json:"measures"`
	// Lost and Duplicates are the invariants after convergence; Missing
	// counts Running tasks without a container. Counts holds the drill's
	// own counts (drill 7: false_dead, leader_changes).
	Lost       int            `json:"lost"`
	Duplicates int            `json:"duplicates"`
	Missing    int            `json:"missing"`
	Counts     map[string]int `json:"counts,omitempty"`
	Panics     int            `json:"panics"`
	Note       string         `json:"note,omitempty"`
	// Err is why the trial did not complete (the recovery never happened,
	// or the machines did not come back).
	Err string `json:"error,omitempty"`
}

func (r *Result) measure(key string, d time.Duration) {
	if r.Measures == nil {
		r.Measures = map[string][]float64{}
	}
	r.Measures[key] = append(r.Measures[key], float64(d.Microseconds())/1000)
}

func (r *Result) fail(err error) {
	if err == nil {
		return
	}
	if r.Err != "" {
		r.Err += "; "
	}
	r.Err += err.Error()
}

// Drill is one machine-failure drill.
type Drill struct {
	Num  int
	Name string
	// What the drill does and what it measures, for RESULTS.md.
	What string
	// MinTrials is the minimum number of trials in a full run.
	MinTrials int
	// Main is the measure the summary ranks by.
	Main string
	cube func(r *Run, res *Result)
}

// Drills are the seven drills of issue 11, in order.
var Drills = []Drill{
	{1, "worker-poweroff", "power off a worker machine → its tasks running and answering elsewhere", 10, "recovered", (*Run).cubeWorkerPoweroff},
	{2, "leader-poweroff", "power off the leader's machine → next write accepted; a task crashed right after restarted by the new leader", 10, "write", (*Run).cubeLeaderPoweroff},
	{3, "leader-and-worker", "power off the leader's machine and a worker machine together → that worker's tasks elsewhere", 10, "recovered", (*Run).cubeLeaderAndWorker},
	{4, "leader-partition", "cut the leader's machine off the network for 30 s, then heal → the majority writes on; after healing one container per task", 5, "write", (*Run).cubeLeaderPartition},
	{5, "worker-reboot", "reboot a worker machine (disk kept) → it rejoins; its tasks run again, none twice", 5, "recovered", (*Run).cubeWorkerReboot},
	{6, "power-cycle-all", "power-cycle every machine at once → every task back, each running once", 5, "recovered", (*Run).cubePowerCycle},
	{7, "lossy-network", "100 ms ± 50 ms delay and 5 % loss on every machine for 2 min while tasks crash → no false deaths, no leader flapping", 5, "restart", (*Run).cubeLossyNetwork},
}

// Run is one drill session against the machines with one timing profile.
type Run struct {
	Ctx  context.Context
	MS   *Machines
	Cube *Cube
	Logf func(format string, args ...any)
	// PartitionFor is how long drill 4 cuts the leader off (30 s).
	PartitionFor time.Duration
	// LossyFor is how long drill 7 shapes the network (2 min).
	LossyFor time.Duration
	// Recover bounds each wait for a recovery.
	Recover time.Duration
}

// System names the Cube profile the run measures.
func (r *Run) System() string {
	if r.MS.Fast {
		return "cube-fast"
	}
	return "cube-default"
}

// Trial runs one trial of d against Cube and checks the invariants.
func (r *Run) Trial(d Drill, n int) Result {
	res := Result{Drill: d.Num, Name: d.Name, System: r.System(), Trial: n}
	if err := r.heal(); err != nil {
		res.fail(fmt.Errorf("machines not ready before the trial: %w", err))
		return res
	}
	since := time.Now()
	d.cube(r, &res)
	res.Panics = r.panics(since)
	return res
}

// heal brings every machine back to normal: powered on, on the network,
// no shaping, Cube ready.
func (r *Run) heal() error {
	for _, m := range r.MS.Spec.Names("") {
		if !r.MS.Running(r.Ctx, m) {
			if err := r.MS.Start(r.Ctx, m); err != nil {
				return err
			}
		}
	}
	// A run cut short may have left drill 7's shaping on.
	if err := r.netem(false); err != nil {
		return err
	}
	return r.Cube.Ready(r.Ctx, r.Recover)
}

// panics counts panics in every machine's cube journal since a time.
func (r *Run) panics(since time.Time) int {
	n := 0
	for _, m := range r.MS.Spec.Names("") {
		j, err := r.MS.Journal(r.Ctx, m, since.Add(-time.Second))
		if err != nil {
			continue
		}
		n += strings.Count(j, "panic:") + strings.Count(j, "fatal error:")
	}
	return n
}

// tasks submits n echo tasks and waits until they serve. Their restarts are
// unlimited (MaxRestarts -1): drill 7 crashes each one many times.
func (r *Run) tasks(res *Result, n int) ([]uuid.UUID, map[uuid.UUID]api.Task, error) {
	var ids []uuid.UUID
	for i := 0; i < n; i++ {
		t := echoTask(fmt.Sprintf("drill%d-%s-t%d-%d", res.Drill, r.System(), res.Trial, i))
		t.MaxRestarts = -1
		if err := r.submit(t, r.Recover); err != nil {
			return ids, nil, err
		}
		ids = append(ids, t.ID)
	}
	_, serving, err := r.Cube.WaitServing(r.Ctx, r.Recover, ids, nil)
	return ids, serving, err
}

// start submits a drill's three tasks and waits until they serve; when they
// do not, it records why, checks and stops what was acknowledged, and
// reports false.
func (r *Run) start(res *Result) ([]uuid.UUID, map[uuid.UUID]api.Task, bool) {
	ids, ts, err := r.tasks(res, 3)
	if err != nil {
		res.fail(err)
		r.finish(res, ids)
		return nil, nil, false
	}
	return ids, ts, true
}

// submit submits t until a manager acknowledges it (same ID every time).
func (r *Run) submit(t api.Task, within time.Duration) error {
	return poll(r.Ctx, within, 20*time.Millisecond, func() error {
		_, err := r.Cube.Submit(r.Ctx, t)
		return err
	})
}

// busiest is the worker running most of the tasks.
func busiest(ts map[uuid.UUID]api.Task) (string, []uuid.UUID) {
	by := map[string][]uuid.UUID{}
	for id, t := range ts {
		by[t.Worker] = append(by[t.Worker], id)
	}
	best := ""
	for w, ids := range by {
		if best == "" || len(ids) > len(by[best]) || (len(ids) == len(by[best]) && w < best) {
			best = w
		}
	}
	return best, by[best]
}

// finish heals the machines, checks the invariants over the acknowledged
// tasks and stops them.
func (r *Run) finish(res *Result, acked []uuid.UUID) {
	if err := r.heal(); err != nil {
		res.fail(fmt.Errorf("machines did not come back: %w", err))
	}
	v, err := r.Cube.Check(r.Ctx, r.Recover, acked)
	res.fail(err)
	res.Lost, res.Duplicates, res.Missing = v.Lost, v.Duplicates, v.Missing
	if v.Detail != "" {
		res.Note = v.Detail
	}
	r.Cube.StopAll(r.Ctx, acked)
}

// watch polls cond every 20 ms in the background from t0 until it holds or
// stop is called, and records the time as the measure key.
func (r *Run) watch(res *Result, key string, t0 time.Time, cond func(ctx context.Context) bool) (stop func()) {
	ctx, cancel := context.WithCancel(r.Ctx)
	done := make(chan struct{})
	var at time.Time
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if cond(ctx) {
				at = time.Now()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() {
		cancel()
		<-done
		if !at.IsZero() {
			res.measure(key, at.Sub(t0))
		}
	}
}

// newLeader is a watch condition: a surviving manager names a leader other
// than old (asked directly, so that a dead manager does not slow it).
func (r *Run) newLeader(old string) func(ctx context.Context) bool {
	return func(ctx context.Context) bool {
		for _, m := range r.MS.Spec.Names("manager") {
			if m == old {
				continue
			}
			if ci, err := r.Cube.clusterOf(ctx, m); err == nil && ci.LeaderID != "" && ci.LeaderID != old {
				return true
			}
		}
		return false
	}
}

// markedDead is a watch condition: a surviving manager's gossip says the
// worker is dead.
func (r *Run) markedDead(worker string, except ...string) func(ctx context.Context) bool {
	return func(ctx context.Context) bool {
		for _, m := range r.MS.Spec.Names("manager") {
			if contains(except, m) {
				continue
			}
			if ci, err := r.Cube.clusterOf(ctx, m); err == nil {
				for _, mem := range ci.Members {
					if mem.Name == worker && mem.State == "dead" {
						return true
					}
				}
			}
		}
		return false
	}
}

// kill powers machines off together.
func (r *Run) kill(names ...string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.MS.Kill(r.Ctx, n) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *Run) cubeWorkerPoweroff(res *Result) {
	ids, ts, ok := r.start(res)
	if !ok {
		return
	}
	victim, on := busiest(ts)
	t0 := time.Now()
	stop := r.watch(res, "dead", t0, r.markedDead(victim))
	if err := r.kill(victim); err != nil {
		res.fail(err)
	}
	last, _, err := r.Cube.WaitServing(r.Ctx, r.Recover, on, ts, victim)
	stop()
	if err != nil {
		res.fail(fmt.Errorf("tasks of %s not serving elsewhere: %w", victim, err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	res.Note = fmt.Sprintf("%s powered off with %d tasks", victim, len(on))
	r.finish(res, ids)
}

func (r *Run) cubeLeaderPoweroff(res *Result) {
	ids, ts, ok := r.start(res)
	if !ok {
		return
	}
	leader := r.Cube.Leader(r.Ctx)
	probe := echoTask(fmt.Sprintf("drill2-%s-t%d-probe", r.System(), res.Trial))
	t0 := time.Now()
	stop := r.watch(res, "elected", t0, r.newLeader(leader))
	if err := r.kill(leader); err != nil {
		res.fail(err)
	}
	err := r.submit(probe, r.Recover)
	stop()
	if err != nil {
		res.fail(fmt.Errorf("no write accepted after %s powered off: %w", leader, err))
	} else {
		res.measure("write", time.Since(t0))
		ids = append(ids, probe.ID)
	}
	// A task crashes right after: the new leader restarts it.
	victim := ids[0]
	tc := time.Now()
	res.fail(r.Cube.Crash(r.Ctx, ts[victim]))
	last, _, err := r.Cube.WaitServing(r.Ctx, r.Recover, []uuid.UUID{victim}, ts)
	if err != nil {
		res.fail(fmt.Errorf("crashed task not restarted by the new leader: %w", err))
	} else {
		res.measure("restart", last.Sub(tc))
	}
	res.Note = "leader " + leader + " powered off"
	r.finish(res, ids)
}

func (r *Run) cubeLeaderAndWorker(res *Result) {
	ids, ts, ok := r.start(res)
	if !ok {
		return
	}
	leader := r.Cube.Leader(r.Ctx)
	victim, on := busiest(ts)
	t0 := time.Now()
	stopL := r.watch(res, "elected", t0, r.newLeader(leader))
	stopD := r.watch(res, "dead", t0, r.markedDead(victim, leader))
	if err := r.kill(leader, victim); err != nil {
		res.fail(err)
	}
	last, _, err := r.Cube.WaitServing(r.Ctx, r.Recover, on, ts, victim)
	stopL()
	stopD()
	if err != nil {
		res.fail(fmt.Errorf("tasks of %s not serving elsewhere: %w", victim, err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	res.Note = fmt.Sprintf("leader %s and %s (%d tasks) powered off", leader, victim, len(on))
	r.finish(res, ids)
}

func (r *Run) cubeLeaderPartition(res *Result) {
	ids, _, ok := r.start(res)
	if !ok {
		return
	}
	leader := r.Cube.Leader(r.Ctx)
	t0 := time.Now()
	if err := r.MS.Disconnect(r.Ctx, leader); err != nil {
		res.fail(err)
	}
	// Writes go on on the majority's side while the old leader is cut off.
	for i := 0; time.Since(t0) < r.PartitionFor; i++ {
		t := echoTask(fmt.Sprintf("drill4-%s-t%d-during-%d", r.System(), res.Trial, i))
		if err := r.submit(t, r.Recover); err != nil {
			res.fail(fmt.Errorf("write %d during the partition: %w", i, err))
			break
		}
		if i == 0 {
			res.measure("write", time.Since(t0))
		}
		ids = append(ids, t.ID)
		select {
		case <-r.Ctx.Done():
		case <-time.After(r.PartitionFor / 6):
		}
	}
	if err := r.MS.Connect(r.Ctx, leader); err != nil {
		res.fail(err)
	}
	// Healed: the cut-off manager follows the majority's leader again.
	th := time.Now()
	err := poll(r.Ctx, r.Recover, 20*time.Millisecond, func() error {
		ci, err := r.Cube.clusterOf(r.Ctx, leader)
		if err != nil {
			return err
		}
		if ci.LeaderID == "" || ci.LeaderID == leader {
			return fmt.Errorf("%s names leader %q", leader, ci.LeaderID)
		}
		return nil
	})
	if err != nil {
		res.fail(fmt.Errorf("%s did not rejoin after the partition healed: %w", leader, err))
	} else {
		res.measure("healed", time.Since(th))
	}
	res.Note = fmt.Sprintf("leader %s cut off for %s; %d tasks acknowledged", leader, r.PartitionFor, len(ids))
	r.finish(res, ids)
}

func (r *Run) cubeWorkerReboot(res *Result) {
	ids, ts, ok := r.start(res)
	if !ok {
		return
	}
	victim, on := busiest(ts)
	t0 := time.Now()
	if err := r.MS.Reboot(r.Ctx, victim); err != nil {
		res.fail(err)
	}
	res.measure("booted", time.Since(t0))
	last, _, err := r.Cube.WaitServing(r.Ctx, r.Recover, on, ts)
	if err != nil {
		res.fail(fmt.Errorf("tasks of %s not serving after its reboot: %w", victim, err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	res.Note = fmt.Sprintf("%s rebooted with %d tasks", victim, len(on))
	r.finish(res, ids)
}

func (r *Run) cubePowerCycle(res *Result) {
	ids, ts, ok := r.start(res)
	if !ok {
		return
	}
	all := r.MS.Spec.Names("")
	t0 := time.Now()
	if err := r.kill(all...); err != nil {
		res.fail(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, m := range all {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.MS.Start(r.Ctx, m) }()
	}
	wg.Wait()
	res.fail(errors.Join(errs...))
	res.measure("booted", time.Since(t0))
	last, _, err := r.Cube.WaitServing(r.Ctx, r.Recover, ids, ts)
	if err != nil {
		res.fail(fmt.Errorf("tasks not serving after the power cycle: %w", err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	r.finish(res, ids)
}

// crashSurely crashes the task's container, and again when the request
// never reached it (on a lossy link a SYN lost twice outlasts the request's
// timeout): until a manager sees it fail or replaced (not answering proves
// nothing on that link).
func (r *Run) crashSurely(t api.Task) {
	for try := 0; try < 5 && r.Ctx.Err() == nil; try++ {
		_ = r.Cube.Crash(r.Ctx, t)
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			cctx, cancel := r.Cube.ctx(r.Ctx)
			cur, err := r.Cube.cl.Task(cctx, t.ID, false)
			cancel()
			if err == nil && (cur.Generation > t.Generation || cur.RestartCount > t.RestartCount || cur.State != api.Running) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// lossy is drill 7's link: what netem would be given.
const lossyDelay, lossyJitter, lossyLoss = "100ms", "50ms", "5"

func (r *Run) netem(on bool) error {
	var errs []error
	for _, m := range r.MS.Spec.Names("") {
		args := []string{"/vagrant/deploy/machine/netem.sh", "stop"}
		if on {
			args = []string{"/vagrant/deploy/machine/netem.sh", "start", lossyDelay, lossyJitter, lossyLoss}
		}
		if _, err := r.MS.Exec(r.Ctx, m, args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Run) cubeLossyNetwork(res *Result) {
	ids, ts, ok := r.start(res)
	if !ok {
		return
	}
	if err := r.netem(true); err != nil {
		res.fail(err)
		_ = r.netem(false)
		r.finish(res, ids)
		return
	}
	// Watch leadership and worker liveness while the network is bad.
	watch, stop := context.WithCancel(r.Ctx)
	var wg sync.WaitGroup
	var leaderChanges, falseDead int
	wg.Add(1)
	go func() {
		defer wg.Done()
		leader, dead := "", map[string]bool{}
		for watch.Err() == nil {
			if l := r.Cube.Leader(watch); l != "" {
				if leader != "" && l != leader {
					leaderChanges++
				}
				leader = l
			}
			cctx, cancel := r.Cube.ctx(watch)
			nodes, err := r.Cube.cl.Nodes(cctx, false)
			cancel()
			if err == nil {
				for _, n := range nodes {
					if n.State == "dead" && !dead[n.Name] {
						falseDead++
					}
					dead[n.Name] = n.State == "dead"
				}
			}
			select {
			case <-watch.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t0 := time.Now()
	for i := 0; time.Since(t0) < r.LossyFor && r.Ctx.Err() == nil; i++ {
		id := ids[i%len(ids)]
		// Any manager's copy will do to find the task's address (a
		// consistent read needs a leader, which --fast timings lose
		// over and over on this link).
		cctx, cancel := r.Cube.ctx(r.Ctx)
		before, err := r.Cube.cl.Task(cctx, id, false)
		cancel()
		if err != nil || before.State != api.Running {
			res.fail(fmt.Errorf("crash %d: task %s not readable as Running: %v", i, id, err))
			select {
			case <-r.Ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		tc := time.Now()
		r.crashSurely(before)
		last, _, err := r.Cube.WaitServing(r.Ctx, r.Recover, []uuid.UUID{id}, map[uuid.UUID]api.Task{id: before})
		if err != nil {
			res.fail(fmt.Errorf("crash %d not restarted on the lossy network: %w", i, err))
			break
		}
		res.measure("restart", last.Sub(tc))
		// Past the health check's first pass so the next restart is immediate.
		select {
		case <-r.Ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
	stop()
	wg.Wait()
	res.fail(r.netem(false))
	res.Counts = map[string]int{"false_dead": falseDead, "leader_changes": leaderChanges}
	_ = ts
	r.finish(res, ids)
}

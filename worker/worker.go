package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// Config configures a Worker.
type Config struct {
	// Name identifies the worker in container labels and to the managers. It is
	// recorded in the data dir on first start; starting again with another name
	// on the same data dir is refused, because the containers' labels would no
	// longer match. Empty: the recorded name, else the host name.
	Name string
	// DataDir holds worker.db, the task records.
	DataDir string
	// OpenTimeout bounds the wait for the lock on worker.db.
	OpenTimeout time.Duration
	// StopGrace is how long a stopped container gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// StartTimeout bounds pulling, creating and starting one container.
	StartTimeout time.Duration
	// StartupWindow: a container that exits within this long of starting is
	// reported as a start-up failure.
	StartupWindow time.Duration
	// PollInterval is the safety-net re-inspection of every live task. Deaths
	// are noticed through the Docker event stream at once; polling only covers
	// what events might miss.
	PollInterval time.Duration
	// SweepInterval is how often the worker lists the containers under its
	// label and settles those no record accounts for (see sweep): what a
	// lost write, a failed adoption or a race left behind, which no
	// record-driven check can see.
	SweepInterval time.Duration
	// KeepEnded is how long the record of an ended task (Completed or Failed)
	// and its exited container (for logs) are kept; then both are removed and
	// only the task's last generation is remembered, as a fence. 0 keeps them
	// forever.
	KeepEnded time.Duration
	// CPUSampleInterval is the period over which Stats.CpuUsage is measured.
	CPUSampleInterval time.Duration
	// AllowPrivileged, AllowHostNetwork, AllowMounts and AllowCaps are what
	// tasks may ask for beyond an ordinary container (api.Task's
	// Privileged, NetworkMode "host", Mounts, CapAdd). The zero values
	// allow nothing: a task asking for more fails before any container is
	// created, with a Reason naming the flag that would allow it. The
	// worker gossips them, so the leader places such tasks only here.
	//
	// AllowPrivileged lets tasks run in Docker's privileged mode.
	AllowPrivileged bool
	// AllowHostNetwork lets tasks use the host's network stack.
	AllowHostNetwork bool
	// AllowMounts are the host path prefixes tasks may bind ("/srv/data"
	// allows "/srv/data" and what lies beneath it, not "/srv/data2").
	AllowMounts []string
	// AllowCaps are the capabilities tasks may add ("NET_ADMIN"); "ALL"
	// allows any. Docker's default capabilities need no allowance.
	AllowCaps []string
	// OnChange, if set, is called with a task record after every change of its
	// state. It must not block (the manager reporter queues what it gets).
	OnChange func(api.Task)
	// Logger is the root logger; the worker logs under "worker".
	Logger hclog.Logger
}

// DefaultConfig returns production defaults; Name and DataDir must still be set.
func DefaultConfig() Config {
	return Config{
		OpenTimeout:       5 * time.Second,
		StopGrace:         10 * time.Second,
		StartTimeout:      5 * time.Minute,
		StartupWindow:     250 * time.Millisecond,
		PollInterval:      10 * time.Second,
		SweepInterval:     30 * time.Second,
		KeepEnded:         time.Hour,
		CPUSampleInterval: 5 * time.Second,
	}
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Validate checks the configuration, naming the field and its bound.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("DataDir is required")
	case c.Name != "" && !validName.MatchString(c.Name):
		return fmt.Errorf("Name %q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", c.Name)
	case c.OpenTimeout <= 0:
		return fmt.Errorf("OpenTimeout (%s) must be positive", c.OpenTimeout)
	case c.StopGrace < 0:
		return fmt.Errorf("StopGrace (%s) must not be negative", c.StopGrace)
	case c.StartTimeout <= 0:
		return fmt.Errorf("StartTimeout (%s) must be positive", c.StartTimeout)
	case c.StartupWindow < 0:
		return fmt.Errorf("StartupWindow (%s) must not be negative", c.StartupWindow)
	case c.KeepEnded < 0:
		return fmt.Errorf("KeepEnded (%s) must not be negative (0 keeps ended tasks forever)", c.KeepEnded)
	case c.PollInterval <= 0:
		return fmt.Errorf("PollInterval (%s) must be positive", c.PollInterval)
	case c.SweepInterval <= 0:
		return fmt.Errorf("SweepInterval (%s) must be positive", c.SweepInterval)
	case c.CPUSampleInterval <= 0:
		return fmt.Errorf("CPUSampleInterval (%s) must be positive", c.CPUSampleInterval)
	}
	return c.validateAllows()
}

// Worker is the agent on one machine: it runs tasks as containers through a
// Runtime, keeps their records in a Store, and follows the runtime's events.
//
// Locking: mu guards the tasks map and closed; each task also has its own
// mutex (taskLock) held across the runtime calls that act on that task, so
// operations on one task are serialised while different tasks proceed in
// parallel. Order: a task lock may be held while taking mu, never the reverse.
type Worker struct {
	cfg   Config
	name  string
	rt    Runtime
	store *Store
	log   hclog.Logger
	cpu   *cpuSampler

	mu     sync.Mutex
	tasks  map[uuid.UUID]api.Task
	locks  map[uuid.UUID]*sync.Mutex
	gone   map[uuid.UUID]uint64    // tasks whose ended record was removed: last generation
	ended  map[uuid.UUID]time.Time // ended records without a finish time: when first seen ended
	closed bool

	// storeFailed is set when a write of a record failed, and cleared by
	// the next one that succeeds (see CheckStore).
	storeFailed atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the worker's store and loads its records. Call Start to adopt
// existing containers and begin following events, and Shutdown to stop.
func New(cfg Config, rt Runtime) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	store, err := OpenStore(filepath.Join(cfg.DataDir, "worker.db"), cfg.OpenTimeout)
	if err != nil {
		return nil, err
	}
	name, err := resolveName(store, cfg.Name)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	recs, err := store.All()
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("load task records: %w", err)
	}
	gone, err := store.Forgotten()
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("load removed task generations: %w", err)
	}
	w := &Worker{
		cfg:   cfg,
		name:  name,
		rt:    rt,
		store: store,
		log:   cfg.Logger.Named("worker"),
		cpu:   newCPUSampler(),
		tasks: make(map[uuid.UUID]api.Task, len(recs)),
		locks: make(map[uuid.UUID]*sync.Mutex),
		gone:  gone,
		ended: make(map[uuid.UUID]time.Time),
	}
	for _, t := range recs {
		w.tasks[t.ID] = t
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w, nil
}

// resolveName settles the worker's name against the one recorded in the store.
func resolveName(store *Store, want string) (string, error) {
	have, err := store.Name()
	if err != nil {
		return "", fmt.Errorf("read worker name: %w", err)
	}
	switch {
	case have != "" && want != "" && have != want:
		return "", fmt.Errorf("data dir belongs to worker %q, not %q: use --name %s or another data dir", have, want, have)
	case have != "":
		return have, nil
	case want == "":
		host, err := os.Hostname()
		if err != nil || !validName.MatchString(host) {
			return "", errors.New("no worker name given and the host name is not usable as one; set --name")
		}
		want = host
	}
	if err := store.SetName(want); err != nil {
		return "", fmt.Errorf("record worker name: %w", err)
	}
	return want, nil
}

// Name returns the worker's name.
func (w *Worker) Name() string { return w.name }

// Start subscribes to runtime events, then adopts the containers already
// running under this worker's labels, then starts the poll loop and the CPU
// sampler. Events are subscribed first so that nothing that happens during
// adoption is missed (an event about an adopted container is harmless: every
// handler re-inspects).
func (w *Worker) Start() {
	events := w.rt.Watch(w.ctx, map[string]string{LabelWorker: w.name})
	w.wg.Add(4)
	go func() { defer w.wg.Done(); w.eventLoop(events) }()
	go func() { defer w.wg.Done(); w.pollLoop() }()
	go func() { defer w.wg.Done(); w.cpu.run(w.ctx, w.cfg.CPUSampleInterval) }()
	go func() { defer w.wg.Done(); w.cleanLoop() }()
	if err := w.adopt(); err != nil {
		// Until adoption has listed the containers, the records of the
		// tasks that ran before the restart are unsettled and found
		// containers unreported: try again, and only then sweep.
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.retryAdopt(); w.sweepLoop() }()
		return
	}
	w.wg.Add(1)
	go func() { defer w.wg.Done(); w.sweepLoop() }()
}

// retryAdopt runs adopt until it lists the containers, with a back-off from
// one second to thirty, or until the worker shuts down.
func (w *Worker) retryAdopt() {
	wait := time.Second
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := w.adopt(); err == nil || w.ctx.Err() != nil {
			return
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// sweepLoop sweeps every SweepInterval until the worker shuts down.
func (w *Worker) sweepLoop() { w.every(w.cfg.SweepInterval, w.sweep) }

// sweep lists the containers under this worker's label and settles each
// that no record accounts for (a record of its task naming that container).
// Adoption does this once at start; a sweep does it for the rest of the
// worker's life, because some paths leave a container no record names: a
// failed adoption, a removal that failed after its record moved on, an
// engine that started a container after the call to start it gave up. Such
// a container is invisible to the records, to the reports and so to the
// leader, and would run for ever (a task running twice, or one that ended
// still running). A container of a task without a record is handled as
// adoption handles it (adoptFound: the running one of the highest
// generation is recorded and reported for the leader to decide, the rest
// removed); one beside a record that names another container is removed,
// since the record is what the worker reports and a placement has one
// container. A running container that an ended record names is stopped
// (stopEnded). A task being acted on (its lock held), or whose record has no
// container yet (a start to come), is left to the next sweep.
func (w *Worker) sweep() {
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	containers, err := w.rt.List(ctx, map[string]string{LabelWorker: w.name})
	if err != nil {
		if w.ctx.Err() == nil {
			w.log.Warn("sweep: list containers; trying again at the next sweep", "error", err)
		}
		return
	}
	byTask := make(map[uuid.UUID][]ContainerStatus)
	for _, c := range containers {
		id, err := uuid.Parse(c.Labels[LabelTask])
		if err != nil {
			continue
		}
		if rec, ok := w.get(id); ok && rec.ContainerID == c.ID {
			if rec.State.Terminal() && c.Running {
				w.stopEnded(ctx, id, c.ID)
			}
			continue
		}
		byTask[id] = append(byTask[id], c)
	}
	for id, cs := range byTask {
		if w.ctx.Err() != nil {
			return
		}
		if _, ok := w.get(id); !ok {
			w.adoptFound(ctx, id, cs)
			continue
		}
		w.sweepTask(ctx, id, cs)
	}
}

// stopEnded stops the running container cid that task id's ended record
// names: the record was reported, the leader has acted on it (restarted the
// task elsewhere, or let it end), and this copy running on would be a
// second one nobody counts. The container is kept, stopped, for its logs.
func (w *Worker) stopEnded(ctx context.Context, id uuid.UUID, cid string) {
	lk := w.taskLock(id)
	if !lk.TryLock() {
		return
	}
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok || rec.ContainerID != cid || !rec.State.Terminal() {
		return
	}
	w.log.Warn("sweep: stopping the running container of an ended task", "task_id", id, "container_id", short(cid),
		"generation", rec.Generation, "record_state", rec.State, "reason", rec.Reason)
	if err := w.rt.Stop(ctx, cid, w.cfg.StopGrace); err != nil && !errors.Is(err, ErrContainerNotFound) {
		w.log.Error("sweep: stop container", "task_id", id, "container_id", short(cid), "error", err)
	}
}

// sweepTask removes the containers cs of task id that its record does not
// name, unless the task is busy or its record awaits its container.
func (w *Worker) sweepTask(ctx context.Context, id uuid.UUID, cs []ContainerStatus) {
	lk := w.taskLock(id)
	if !lk.TryLock() {
		return
	}
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok || (!rec.State.Terminal() && rec.ContainerID == "") {
		return
	}
	for _, c := range cs {
		if c.ID == rec.ContainerID {
			continue
		}
		w.log.Warn("sweep: removing a container no record accounts for", "task_id", id, "container_id", short(c.ID),
			"container_generation", c.Labels[LabelGeneration], "status", c.Status,
			"record_generation", rec.Generation, "record_container", short(rec.ContainerID), "record_state", rec.State)
		if err := w.stopAndRemove(ctx, c.ID); err != nil {
			w.log.Error("sweep: remove container", "task_id", id, "container_id", short(c.ID), "error", err)
		}
	}
}

// Shutdown stops every goroutine of the worker, waits for them, and closes the
// store. Running containers are left running: a worker restart must not
// restart tasks. It is safe to call more than once.
func (w *Worker) Shutdown() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
	return w.store.Close()
}

// goTask runs fn on a goroutine the worker owns, unless the worker is closed.
func (w *Worker) goTask(fn func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.wg.Add(1)
	go func() { defer w.wg.Done(); fn() }()
	return true
}

func (w *Worker) taskLock(id uuid.UUID) *sync.Mutex {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.locks[id]
	if !ok {
		l = new(sync.Mutex)
		w.locks[id] = l
	}
	return l
}

func (w *Worker) get(id uuid.UUID) (api.Task, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.tasks[id]
	return t, ok
}

// save persists a record and then publishes it; the caller holds the task lock.
// A record whose state changed is reported through OnChange.
func (w *Worker) save(t api.Task) error {
	if err := w.store.Put(t); err != nil {
		w.storeFailed.Store(true)
		w.log.Error("persist task record", "task_id", t.ID, "error", err)
		return fmt.Errorf("persist task %s: %w", t.ID, err)
	}
	w.storeFailed.Store(false)
	w.publish(t)
	return nil
}

// publish makes a record the worker's current one and reports a change of
// its state; the caller holds the task lock.
func (w *Worker) publish(t api.Task) {
	w.mu.Lock()
	old, had := w.tasks[t.ID]
	w.tasks[t.ID] = t
	w.mu.Unlock()
	if (!had || old.State != t.State || old.ContainerID != t.ContainerID) && w.cfg.OnChange != nil {
		w.cfg.OnChange(t)
	}
}

// saveRetryAttempts and saveRetryFirst bound saveRetry: attempts doubling
// from 50 ms, about 1.5 s in all, long enough to ride out a passing
// write error (a log rotated, space freed), short enough that the leader
// hears of the failure at once.
const (
	saveRetryAttempts = 5
	saveRetryFirst    = 50 * time.Millisecond
)

// saveRetry saves a record, retrying a failed write a few times; the caller
// holds the task lock.
func (w *Worker) saveRetry(ctx context.Context, t api.Task) error {
	wait := saveRetryFirst
	var err error
	for n := 1; ; n++ {
		if err = w.save(t); err == nil || n == saveRetryAttempts {
			return err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
		wait *= 2
	}
}

// saveOrPublish saves a record whose state the engine decided (the
// container ran, ended, or was removed); if the store refuses it, the record
// is still published (kept in memory and reported), so the leader learns at
// once what happened rather than through its Scheduled timeout. What must be
// on disk before the worker acts is the placement and its container
// (Submit, and the save after create): a restarted worker reads the state
// of its containers again from the engine. The caller holds the task lock.
func (w *Worker) saveOrPublish(t api.Task) {
	if err := w.save(t); err != nil {
		w.publish(t)
	}
}

// CheckStore says whether the worker can record tasks. After a failed write
// it writes a probe (one fsync'd write per call, and none while writes
// succeed), so a passing error clears at once and only a store that still
// refuses writes is reported. A worker that cannot record its containers
// must not be given new ones: the agent advertises it like an engine that
// does not answer.
func (w *Worker) CheckStore() error {
	if !w.storeFailed.Load() {
		return nil
	}
	if err := w.store.Probe(); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(w.cfg.DataDir, "worker.db"), err)
	}
	w.storeFailed.Store(false)
	w.log.Info("task records can be written again")
	return nil
}

// Tasks returns every record, ordered by ID for stable output.
func (w *Worker) Tasks() []api.Task {
	w.mu.Lock()
	out := make([]api.Task, 0, len(w.tasks))
	for _, t := range w.tasks {
		out = append(out, t)
	}
	w.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
	return out
}

// Task returns one record.
func (w *Worker) Task(id uuid.UUID) (api.Task, error) {
	t, ok := w.get(id)
	if !ok {
		return api.Task{}, fmt.Errorf("task %s: %w on worker %s", id, api.ErrNotFound, w.name)
	}
	return t, nil
}

// Submit records the task at its generation and starts its container in the
// background. The same task at the same generation is a duplicate: nothing new
// runs. A higher generation replaces the current container; a lower one is
// refused with api.ErrStaleGeneration, so a deposed leader or a delayed
// message can never undo a newer placement.
func (w *Worker) Submit(ctx context.Context, ev api.TaskEvent) (api.Task, bool, error) {
	t := ev.Task
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	lk := w.taskLock(t.ID)
	lk.Lock()
	defer lk.Unlock()

	if gen, ok := w.forgotten(t.ID); ok && t.Generation <= gen {
		return api.Task{}, false, fmt.Errorf("%w: task %s generation %d ended on worker %s and was cleaned up (it last held generation %d)",
			api.ErrStaleGeneration, t.ID, t.Generation, w.name, gen)
	}
	if cur, ok := w.get(t.ID); ok {
		switch {
		case t.Generation < cur.Generation:
			return cur, false, fmt.Errorf("%w: task %s generation %d is older than generation %d on worker %s",
				api.ErrStaleGeneration, t.ID, t.Generation, cur.Generation, w.name)
		case t.Generation == cur.Generation:
			return cur, false, nil
		}
		if err := w.retire(ctx, cur); err != nil {
			return cur, false, err
		}
		w.log.Info("replacing task with a newer generation", "task_id", t.ID, "old_generation", cur.Generation, "generation", t.Generation)
	}

	rec := t
	rec.State = api.Scheduled
	rec.Worker = w.name
	rec.ContainerID = ""
	rec.HostPorts = nil
	rec.StartTime, rec.FinishTime = time.Time{}, time.Time{}
	rec.ExitCode, rec.Reason = 0, ""
	if err := w.save(rec); err != nil {
		return api.Task{}, false, err
	}
	if !w.goTask(func() { w.start(rec.ID, rec.Generation) }) {
		return rec, true, fmt.Errorf("%w: worker %s is shutting down; the task will start when it is back", api.ErrUnavailable, w.name)
	}
	w.log.Info("task accepted", "task_id", rec.ID, "generation", rec.Generation, "image", rec.Image)
	return rec, true, nil
}

// retire stops and removes the container of a superseded record; the caller
// holds the task lock.
func (w *Worker) retire(ctx context.Context, cur api.Task) error {
	if cur.ContainerID == "" {
		return nil
	}
	if err := w.stopAndRemove(ctx, cur.ContainerID); err != nil {
		return fmt.Errorf("retire generation %d of task %s: %w", cur.Generation, cur.ID, err)
	}
	return nil
}

func (w *Worker) stopAndRemove(ctx context.Context, cid string) error {
	err := w.rt.Stop(ctx, cid, w.cfg.StopGrace)
	if err != nil && !errors.Is(err, ErrContainerNotFound) {
		return runtimeError(err)
	}
	if err := w.rt.Remove(ctx, cid); err != nil {
		return runtimeError(err)
	}
	return nil
}

// runtimeError marks an unreachable engine as api.ErrUnavailable (HTTP 503).
func runtimeError(err error) error {
	if errors.Is(err, ErrRuntimeUnavailable) {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return err
}

// start brings up the container of task id at generation gen: image, create,
// start, then records what the runtime reports. It gives up quietly if the
// record moved on (stopped, or replaced by a newer generation) meanwhile.
func (w *Worker) start(id uuid.UUID, gen uint64) {
	lk := w.taskLock(id)
	lk.Lock()
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok || rec.Generation != gen || rec.State != api.Scheduled {
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.StartTimeout)
	defer cancel()

	fail := func(reason string) {
		rec.State = api.Failed
		rec.Reason = reason
		rec.FinishTime = time.Now().UTC()
		w.saveOrPublish(rec)
		w.log.Warn("task failed to start", "task_id", id, "generation", gen, "reason", reason)
	}
	// Before anything reaches the engine (not even a pull): a task asking
	// for more than this worker allows never gets a container.
	if reason := w.refusal(rec); reason != "" {
		fail(reason)
		return
	}
	if err := w.rt.EnsureImage(ctx, rec.Image); err != nil {
		fail(err.Error())
		return
	}
	// Containers are named after the worker, the task and the generation, so
	// create itself finds a container of this very placement: one the
	// worker created and died before recording. It never ran under our
	// watch; replace it. (This used to be a filtered list before every
	// create: one more engine call per start, and a list waits on the
	// containers being started.)
	spec := w.spec(rec)
	cid, err := w.rt.Create(ctx, spec)
	if errors.Is(err, ErrContainerExists) {
		w.log.Info("replacing a container of this placement created before the worker restarted", "task_id", id, "generation", gen, "name", spec.Name)
		if rerr := w.rt.Remove(ctx, spec.Name); rerr != nil {
			fail(fmt.Sprintf("remove leftover container %s: %v", spec.Name, rerr))
			return
		}
		cid, err = w.rt.Create(ctx, spec)
	}
	if err != nil {
		fail(err.Error())
		return
	}
	rec.ContainerID = cid
	if err := w.saveRetry(ctx, rec); err != nil {
		// A container no record knows of: neither a restarted worker nor
		// the leader would ever account for it, and the task would stay
		// Scheduled for ever. Remove it (it never started), then fail the
		// task, so the leader places it again; never leave it running
		// unrecorded, never start a second one.
		rec.ContainerID = ""
		rctx, rcancel := context.WithTimeout(context.Background(), w.cfg.StopGrace+30*time.Second)
		rerr := w.rt.Remove(rctx, cid)
		rcancel()
		if rerr != nil && !errors.Is(rerr, ErrContainerNotFound) {
			// Named after this placement, it is found again and
			// replaced by the next start of the same generation, and
			// removed by the adoption of a restarted worker.
			w.log.Error("remove a container the worker could not record", "task_id", id, "container_id", short(cid), "error", rerr)
		}
		fail(fmt.Sprintf("worker %s could not record its container (removed): %v", w.name, err))
		return
	}
	if err := w.rt.Start(ctx, cid); err != nil {
		// The engine may still carry the start out after our call gave up
		// (a timeout under load): remove the container, or it would run
		// unseen behind a Failed record.
		rctx, rcancel := context.WithTimeout(context.Background(), w.cfg.StopGrace+30*time.Second)
		if rerr := w.stopAndRemove(rctx, cid); rerr != nil {
			w.log.Warn("remove container that failed to start", "task_id", id, "container_id", short(cid), "error", rerr)
		}
		rcancel()
		if errors.Is(err, ErrPortTaken) {
			// Not the app's failure: the leader places it elsewhere.
			fail(api.ReasonHostPortTaken + err.Error())
			return
		}
		fail(err.Error())
		return
	}
	st, err := w.rt.Inspect(ctx, cid)
	if err != nil {
		fail(fmt.Sprintf("inspect container %s after start: %v", short(cid), err))
		return
	}
	w.apply(rec, st)
	w.log.Info("task started", "task_id", id, "generation", gen, "container_id", short(cid))
}

// spec builds the container spec of a record.
func (w *Worker) spec(t api.Task) Spec {
	return Spec{
		Name:  fmt.Sprintf("cube-%s-%s-g%d", w.name, t.ID, t.Generation),
		Image: t.Image,
		Env:   t.Env,
		Cmd:   t.Cmd,
		Labels: map[string]string{
			LabelTask:       t.ID.String(),
			LabelWorker:     w.name,
			LabelGeneration: strconv.FormatUint(t.Generation, 10),
		},
		ExposedPorts: t.ExposedPorts,
		PortBindings: t.PortBindings,
		Memory:       t.Memory,
		Cpu:          t.Cpu,
		Privileged:   t.Privileged,
		NetworkMode:  t.NetworkMode,
		Binds:        binds(t.Mounts),
		CapAdd:       t.CapAdd,
	}
}

// apply records what the runtime says about the record's container; the caller
// holds the task lock.
func (w *Worker) apply(rec api.Task, st ContainerStatus) {
	next := rec
	switch st.Status {
	case StatusRunning, StatusPaused, StatusRestarting:
		next.State = api.Running
		next.HostPorts = st.HostPorts
		next.StartTime = st.StartedAt
	case StatusCreated:
		next.State = api.Scheduled
	case StatusExited, StatusDead:
		next.ExitCode = st.ExitCode
		next.StartTime, next.FinishTime = st.StartedAt, st.FinishedAt
		next.Reason = w.exitReason(st)
		next.State = api.Failed
		if st.ExitCode == 0 && !st.OOMKilled && st.Status == StatusExited {
			next.State = api.Completed
		}
	default: // removing, gone
		next.State = api.Failed
		next.Reason = fmt.Sprintf("container %s disappeared (%s)", short(rec.ContainerID), st.Status)
		next.FinishTime = time.Now().UTC()
	}
	if next.State == rec.State && next.Reason == rec.Reason && portsEqual(next.HostPorts, rec.HostPorts) && next.StartTime.Equal(rec.StartTime) {
		return
	}
	if !api.ValidStateTransition(rec.State, next.State) {
		w.log.Warn("ignoring impossible state change", "task_id", rec.ID, "from", rec.State, "to", next.State)
		return
	}
	w.saveOrPublish(next)
	if next.State != rec.State {
		w.log.Info("task state changed", "task_id", rec.ID, "generation", rec.Generation, "from", rec.State, "to", next.State, "reason", next.Reason)
	}
}

// exitReason words a container's end for a person.
func (w *Worker) exitReason(st ContainerStatus) string {
	var what string
	switch {
	case st.OOMKilled:
		what = "killed: out of memory (OOMKilled)"
	case st.Status == StatusDead:
		what = "container is dead"
		if st.Error != "" {
			what += ": " + st.Error
		}
	default:
		what = fmt.Sprintf("exited with code %d", st.ExitCode)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.IsZero() {
		return what
	}
	// A container that exits at once can carry a FinishedAt a little before
	// its StartedAt (the engine stamps the start after the exit was handled,
	// more so under load): it ran for no time at all.
	ran := max(st.FinishedAt.Sub(st.StartedAt), 0).Round(time.Millisecond)
	if ran < w.cfg.StartupWindow && (st.ExitCode != 0 || st.OOMKilled) {
		return fmt.Sprintf("failed at start-up: %s after %s", what, ran)
	}
	return fmt.Sprintf("%s after %s", what, ran)
}

// Stop stops and removes the task's container and marks a live task Completed
// ("stopped on request"). A task that already ended keeps its state; its
// container is removed. Stopping twice is harmless. With upTo set, a record
// at a newer generation is refused with api.ErrStaleGeneration.
func (w *Worker) Stop(ctx context.Context, id uuid.UUID, upTo *uint64) (api.Task, error) {
	lk := w.taskLock(id)
	lk.Lock()
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok {
		return api.Task{}, fmt.Errorf("task %s: %w on worker %s", id, api.ErrNotFound, w.name)
	}
	if upTo != nil && rec.Generation > *upTo {
		return rec, fmt.Errorf("%w: stop of task %s up to generation %d, worker %s holds generation %d",
			api.ErrStaleGeneration, id, *upTo, w.name, rec.Generation)
	}
	if rec.ContainerID != "" {
		if err := w.stopAndRemove(ctx, rec.ContainerID); err != nil {
			return rec, fmt.Errorf("stop task %s: %w", id, err)
		}
	}
	if !rec.State.Terminal() {
		rec.State = api.Completed
		rec.Reason = api.ReasonStoppedOnRequest
		rec.FinishTime = time.Now().UTC()
		w.saveOrPublish(rec) // the container is gone: the stop happened
		w.log.Info("task stopped", "task_id", id, "generation", rec.Generation)
	}
	return rec, nil
}

// Logs returns the output of the task's container.
func (w *Worker) Logs(ctx context.Context, id uuid.UUID, opts api.LogOptions) (io.ReadCloser, error) {
	rec, ok := w.get(id)
	if _, gone := w.forgotten(id); !ok && gone {
		return nil, fmt.Errorf("task %s ended more than %s ago; worker %s removed its container and logs: %w", id, w.cfg.KeepEnded, w.name, api.ErrNotFound)
	}
	if !ok {
		return nil, fmt.Errorf("task %s: %w on worker %s", id, api.ErrNotFound, w.name)
	}
	if rec.ContainerID == "" {
		return nil, fmt.Errorf("task %s has no container yet: %w", id, api.ErrNotFound)
	}
	rc, err := w.rt.Logs(ctx, rec.ContainerID, opts)
	if errors.Is(err, ErrContainerNotFound) {
		return nil, fmt.Errorf("container of task %s was removed: %w", id, api.ErrNotFound)
	}
	return rc, runtimeError(err)
}

// forgotten returns the last generation of a task whose ended record was removed.
func (w *Worker) forgotten(id uuid.UUID) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	gen, ok := w.gone[id]
	return gen, ok
}

// cleanLoop removes ended tasks older than KeepEnded, now and then.
func (w *Worker) cleanLoop() {
	if w.cfg.KeepEnded == 0 {
		return
	}
	w.every(min(max(w.cfg.KeepEnded/4, 100*time.Millisecond), time.Minute), func() { w.cleanEnded(time.Now()) })
}

// cleanEnded removes the record and the container of every task that ended
// more than KeepEnded before now, and remembers its generation. Live tasks
// are never touched. The managers hold the replicated record of every task;
// the worker's copy of an ended one only serves logs and the poll, which
// has long since reported it.
func (w *Worker) cleanEnded(now time.Time) {
	for _, t := range w.Tasks() {
		if !t.State.Terminal() {
			continue
		}
		if !w.endedBefore(t, now.Add(-w.cfg.KeepEnded), now) || w.ctx.Err() != nil {
			continue
		}
		w.forget(t.ID, t.Generation)
	}
}

// endedBefore says whether an ended record finished before cutoff. A record
// without a finish time counts from when this process first saw it ended.
func (w *Worker) endedBefore(t api.Task, cutoff, now time.Time) bool {
	if !t.FinishTime.IsZero() {
		return t.FinishTime.Before(cutoff)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen, ok := w.ended[t.ID]
	if !ok {
		w.ended[t.ID] = now
		return false
	}
	return seen.Before(cutoff)
}

func (w *Worker) forget(id uuid.UUID, gen uint64) {
	lk := w.taskLock(id)
	lk.Lock()
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok || rec.Generation != gen || !rec.State.Terminal() {
		return // replaced or restarted meanwhile
	}
	if rec.ContainerID != "" {
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		err := w.rt.Remove(ctx, rec.ContainerID)
		cancel()
		if err != nil && !errors.Is(err, ErrContainerNotFound) {
			w.log.Warn("remove the container of an ended task; will retry", "task_id", id, "container_id", short(rec.ContainerID), "error", err)
			return
		}
	}
	if err := w.store.Forget(id, gen); err != nil {
		w.log.Error("remove ended task record", "task_id", id, "error", err)
		return
	}
	w.mu.Lock()
	delete(w.tasks, id)
	delete(w.ended, id)
	w.gone[id] = gen
	w.mu.Unlock()
	w.log.Info("removed ended task", "task_id", id, "generation", gen, "state", rec.State, "ended", rec.FinishTime.Format(time.RFC3339))
}

// eventLoop handles runtime events until the stream closes (on shutdown).
func (w *Worker) eventLoop(events <-chan Event) {
	for ev := range events {
		if ev.Action == Resync {
			w.log.Info("event stream re-established, re-inspecting tasks")
			w.reconcileAll()
			continue
		}
		id, err := uuid.Parse(ev.Labels[LabelTask])
		if err != nil {
			continue
		}
		cid := ev.ContainerID
		// Each refresh runs on its own goroutine: a task lock held by a slow
		// start must not delay the news of another task's death.
		w.goTask(func() { w.refresh(id, cid, true) })
	}
}

// pollLoop re-inspects every live task now and then, in case an event was lost.
func (w *Worker) pollLoop() { w.every(w.cfg.PollInterval, w.reconcileAll) }

// every runs fn each period until the worker shuts down.
func (w *Worker) every(period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// reconcileAll re-inspects every live task whose lock is free; a busy task is
// being acted on and will be recorded by whoever holds it.
func (w *Worker) reconcileAll() {
	for _, t := range w.Tasks() {
		if t.State.Terminal() || t.ContainerID == "" {
			continue
		}
		w.refresh(t.ID, t.ContainerID, false)
	}
}

// refresh re-inspects the task's container cid and records what changed. wait
// says whether to wait for the task lock or give up if it is busy.
func (w *Worker) refresh(id uuid.UUID, cid string, wait bool) {
	lk := w.taskLock(id)
	if wait {
		lk.Lock()
	} else if !lk.TryLock() {
		return
	}
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok || rec.ContainerID != cid || rec.State.Terminal() {
		return // not ours, superseded, or already settled
	}
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	st, err := w.rt.Inspect(ctx, cid)
	switch {
	case errors.Is(err, ErrContainerNotFound):
		st = ContainerStatus{ID: cid, Status: StatusGone}
	case err != nil:
		if w.ctx.Err() == nil {
			w.log.Warn("inspect container", "task_id", id, "container_id", short(cid), "error", err)
		}
		return
	}
	w.apply(rec, st)
}

// adopt reconciles the records with the containers that carry this worker's
// label, after a worker restart: a running container of the current generation
// is kept as it is (same container, not restarted); a record whose container
// vanished is Failed with the reason; containers of superseded generations
// are removed. A running container of a task the worker has no record of is
// not removed: it is recorded as found and reported (see adoptFound).
func (w *Worker) adopt() error {
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	containers, err := w.rt.List(ctx, map[string]string{LabelWorker: w.name})
	if err != nil {
		if w.ctx.Err() == nil {
			w.log.Error("list containers for adoption; trying again", "error", err)
		}
		return err
	}
	byTask := make(map[uuid.UUID][]ContainerStatus)
	for _, c := range containers {
		id, err := uuid.Parse(c.Labels[LabelTask])
		if err != nil {
			continue
		}
		byTask[id] = append(byTask[id], c)
	}
	for _, rec := range w.Tasks() {
		w.adoptTask(ctx, rec.ID, byTask[rec.ID])
		delete(byTask, rec.ID)
	}
	for id, cs := range byTask {
		w.adoptFound(ctx, id, cs)
	}
	return nil
}

// adoptFound handles the containers of a task this worker holds no record
// of: its data directory was lost, or a new worker was started under an old
// name. The worker cannot tell whether the cluster still wants them, and
// removing them blindly would stop tasks that were running fine. So the
// running container of the task's highest generation here is recorded (task
// ID and generation from its labels, its state from the engine) and reported
// like any record; the leader then decides, as for every record its poll
// finds: the task's current placement (this worker, this generation) is
// adopted as it runs, anything else is stopped through the worker's API,
// fenced by generation. What the worker can judge alone it does: a lower
// generation beside a higher one of the same task here is superseded, a
// container that is not running holds nothing worth keeping, a generation
// at or below one this worker cleaned up has ended, and one without a
// readable generation label is not Cube's doing; those are removed. Until
// the leader decides, a found container runs as it did.
func (w *Worker) adoptFound(ctx context.Context, id uuid.UUID, cs []ContainerStatus) {
	lk := w.taskLock(id)
	lk.Lock()
	defer lk.Unlock()
	if _, ok := w.get(id); ok {
		return // submitted meanwhile: the record's own start handles its containers
	}
	var keep *ContainerStatus
	var keepGen, topGen uint64
	for i, c := range cs {
		gen, err := strconv.ParseUint(c.Labels[LabelGeneration], 10, 64)
		if err != nil {
			continue
		}
		topGen = max(topGen, gen)
		if c.Running && (keep == nil || gen > keepGen) {
			keep, keepGen = &cs[i], gen
		}
	}
	if keep != nil && keepGen < topGen {
		keep = nil // a newer placement of the task was made here after it
	}
	if gone, ok := w.forgotten(id); ok && keep != nil && keepGen <= gone {
		keep = nil
	}
	for _, c := range cs {
		if keep != nil && c.ID == keep.ID {
			continue
		}
		w.log.Warn("removing a container of a task this worker has no record of: not running, or superseded here",
			"task_id", id, "container_id", short(c.ID), "container_generation", c.Labels[LabelGeneration], "status", c.Status)
		if err := w.stopAndRemove(ctx, c.ID); err != nil {
			w.log.Error("remove container", "task_id", id, "container_id", short(c.ID), "error", err)
		}
	}
	if keep == nil {
		return
	}
	rec := api.Task{ID: id, Image: keep.Image, Worker: w.name, Generation: keepGen, ContainerID: keep.ID, State: api.Scheduled}
	w.log.Warn("found a running container of a task this worker has no record of; keeping it and reporting it for the leader to decide",
		"task_id", id, "container_id", short(keep.ID), "generation", keepGen)
	w.apply(rec, *keep)
}

func (w *Worker) adoptTask(ctx context.Context, id uuid.UUID, cs []ContainerStatus) {
	lk := w.taskLock(id)
	lk.Lock()
	defer lk.Unlock()
	rec, ok := w.get(id)
	if !ok {
		return
	}
	gen := strconv.FormatUint(rec.Generation, 10)
	var current *ContainerStatus
	for i, c := range cs {
		switch {
		case c.ID == rec.ContainerID:
			current = &cs[i]
		case c.Labels[LabelGeneration] == gen && rec.ContainerID == "" && current == nil && c.Running:
			// Started just before the worker died, never recorded: adopt it.
			current = &cs[i]
			rec.ContainerID = c.ID
		default:
			w.log.Info("removing superseded container", "task_id", id, "container_id", short(c.ID), "container_generation", c.Labels[LabelGeneration], "generation", rec.Generation)
			if err := w.stopAndRemove(ctx, c.ID); err != nil {
				w.log.Error("remove superseded container", "container_id", short(c.ID), "error", err)
			}
		}
	}
	switch {
	case rec.State.Terminal():
		return
	case current != nil && current.Status == StatusCreated && rec.State == api.Scheduled:
		// Created but never started: start afresh (start removes the leftover).
		w.goTask(func() { w.start(id, rec.Generation) })
	case current != nil:
		w.apply(rec, *current)
		if current.Running {
			w.log.Info("re-adopted running container", "task_id", id, "container_id", short(current.ID), "generation", rec.Generation)
		}
	case rec.State == api.Scheduled && rec.ContainerID == "":
		// Accepted but never started: start it now.
		w.goTask(func() { w.start(id, rec.Generation) })
	default:
		rec.State = api.Failed
		rec.Reason = fmt.Sprintf("container %s vanished while worker %s was down", short(rec.ContainerID), w.name)
		rec.FinishTime = time.Now().UTC()
		w.saveOrPublish(rec)
		w.log.Warn("task container vanished", "task_id", id, "container_id", short(rec.ContainerID))
	}
}

func short(cid string) string {
	if len(cid) > 12 {
		return cid[:12]
	}
	return cid
}

func portsEqual(a, b api.PortMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || len(va) != len(vb) {
			return false
		}
		for i := range va {
			if va[i] != vb[i] {
				return false
			}
		}
	}
	return true
}

package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Raft is what the manager needs from the consensus layer; *cluster.Raft
// implements it.
type Raft interface {
	Apply(ctx context.Context, cmd []byte) (any, error)
	IsLeader() bool
	Leader() (id, addr string)
	LeaderChanges() <-chan bool
	Barrier(ctx context.Context) error
	ConsistentRead(ctx context.Context) error
	Servers(ctx context.Context) ([]cluster.Server, error)
	AppliedIndex() uint64
	CommitIndex() uint64
	LastIndex() uint64
	Term() uint64
	LeaderContact() time.Duration
	Status() cluster.ServerStatus
	Join(ctx context.Context, id, addr string, live cluster.Liveness) error
	Remove(ctx context.Context, id string, live cluster.Liveness) error
	Promote(ctx context.Context, id, addr string) error
	LeadershipTransfer() error
}

// Gossip is what the manager needs from the memberlist pool; *cluster.Pool
// implements it.
type Gossip interface {
	Members() []cluster.Member
}

// Workers is what the manager needs from the worker API: the methods of
// *api.WorkerClient it calls, each one attempt at the worker named by addr.
// It is the seam the manager's tests replace with scripted workers.
type Workers interface {
	Submit(ctx context.Context, addr string, ev api.TaskEvent) (api.Task, bool, error)
	StopUpTo(ctx context.Context, addr string, id uuid.UUID, gen uint64) error
	Tasks(ctx context.Context, addr string) ([]api.Task, error)
	Task(ctx context.Context, addr string, id uuid.UUID) (api.Task, error)
	Logs(ctx context.Context, addr string, id uuid.UUID, opts api.LogOptions) (io.ReadCloser, error)
}

var _ Workers = (*api.WorkerClient)(nil)

// prober checks from the leader whether a task on a lost worker still
// answers (probeTask in production); the tests' seam for orphan probes.
type prober func(ctx context.Context, t api.Task, workerAPI string) (alive bool, detail string)

// Manager serves the manager API on every manager, and runs the control loop
// on the leader only: it starts the loop after a raft Barrier on gaining
// leadership (so the loop acts on a state that includes every committed
// entry) and stops it on losing leadership.
type Manager struct {
	cfg     Config
	raft    Raft
	fsm     *fsm.FSM
	gossip  Gossip
	workers Workers
	probe   prober
	log     hclog.Logger
	// promoter promotes joined managers to voters while this one leads.
	promoter *cluster.Promoter
	metrics  *metrics

	mu      sync.Mutex
	leading bool // the control loop runs (for tests and /cluster)
	// streams counts the event streams being served (Changes).
	streams atomic.Int64
	// leaderStatus asks a manager's API for its raft progress (GET
	// /cluster/self): how far the leader's log goes, for Changes.
	leaderStatus cluster.StatusFunc
	// contact is what event streams follow (contact.go): cancelled, with
	// the reason as its cause, while this manager is out of touch with a
	// leader for longer than EventsLeaderTimeout.
	contactMu     sync.Mutex
	contact       context.Context
	contactCancel context.CancelCauseFunc
	// gcMu serialises garbage collections (periodic and forced).
	gcMu sync.Mutex

	// versions caches the managers' advertised command types (upgrade.go).
	versions versions
	// health is the leader's soft view of healthy placements, for
	// rollouts and service status (services_api.go).
	health healthView

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ api.ManagerService = (*Manager)(nil)

// New returns a Manager; call Start to follow leadership.
func New(cfg Config, r Raft, f *fsm.FSM, g Gossip) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("manager config: %w", err)
	}
	probe := func(ctx context.Context, t api.Task, workerAPI string) (bool, string) {
		return probeTask(ctx, t, workerAPI, cfg.WorkerTimeout, cfg.orphanConnectTimeout(), cfg.SourceIP)
	}
	m := newManager(cfg, r, f, g, api.NewWorkerClientTLS(cfg.WorkerTimeout, cfg.SourceIP, cfg.WorkerTLS), probe)
	m.leaderStatus = managerStatus(cfg.ManagerClient, cfg.SourceIP, cfg.Autopilot.StatusTimeout)
	if err := m.startPromoter(m.leaderStatus); err != nil {
		return nil, err
	}
	return m, nil
}

// newManager is New with its seams given: the workers' API and the orphan
// prober (the tests pass scripted ones). cfg must be valid.
func newManager(cfg Config, r Raft, f *fsm.FSM, g Gossip, w Workers, probe prober) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	m := &Manager{
		cfg:     cfg,
		raft:    r,
		fsm:     f,
		gossip:  g,
		workers: w,
		probe:   probe,
		log:     cfg.Logger.Named("manager"),
	}
	m.metrics = newMetrics(f, m.Leading)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.contact, m.contactCancel = context.WithCancelCause(context.Background())
	return m
}

// Start follows leadership changes (the one consumer of raft's leadership
// channel) and watches the contact with a leader for the event streams.
func (m *Manager) Start() {
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.followLeadership() }()
	m.startContactWatch()
}

// Shutdown stops the control loop (if leading) and waits for it.
func (m *Manager) Shutdown() {
	m.cancel()
	m.wg.Wait()
}

// Metrics is the registry of the manager's own Prometheus series (metrics.go);
// the server adds it to what its /metrics serves.
func (m *Manager) Metrics() *prometheus.Registry { return m.metrics.reg }

// Leading reports whether this manager's control loop runs.
func (m *Manager) Leading() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leading
}

func (m *Manager) followLeadership() {
	var (
		stop func()
		ch   = m.raft.LeaderChanges()
	)
	// The channel only reports changes: a manager that was leader before
	// Start would otherwise wait for the next one.
	leader := m.raft.IsLeader()
	for {
		switch {
		case leader && stop == nil:
			stop = m.lead()
		case !leader && stop != nil:
			stop()
			stop = nil
		}
		select {
		case <-m.ctx.Done():
			if stop != nil {
				stop()
			}
			return
		case leader = <-ch:
		}
	}
}

// lead starts the control loop and returns the function that stops it.
func (m *Manager) lead() (stop func()) {
	ctx, cancel := context.WithCancel(m.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.log.Info("gained leadership; waiting for a barrier before acting", "id", m.cfg.ID)
		if err := m.raft.Barrier(ctx); err != nil {
			if ctx.Err() == nil {
				m.log.Error("barrier failed; not leading", "error", err)
			}
			return
		}
		// Before the loop, so that a leader reported Leading has stored
		// the bootstrap token (or found the cluster already had tokens).
		// A stalled manager must not act on its frozen state: it hands
		// leadership to a manager that applies the whole log (upgrade.go).
		if m.handOverIfStalled(ctx) {
			return
		}
		if !m.bootstrapToken(ctx) {
			stopBootstrap := m.keepBootstrapping(ctx)
			defer stopBootstrap()
		}
		m.setLeading(true)
		defer m.setLeading(false)
		stopPromoter := m.runPromoter(ctx)
		defer stopPromoter()
		m.log.Info("leading: control loop started", "id", m.cfg.ID)
		loopCtx, stopWatch := m.watchStall(ctx)
		newLoop(m).run(loopCtx)
		stopWatch()
		m.log.Info("control loop stopped", "id", m.cfg.ID)
		m.handOverIfStalled(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func (m *Manager) setLeading(v bool) {
	m.mu.Lock()
	m.leading = v
	m.mu.Unlock()
}

// apply writes one command through raft and returns the FSM's result, with
// the cluster layer's errors mapped onto the API's.
func (m *Manager) apply(ctx context.Context, cmd any) (*fsm.Result, error) {
	if err := m.Stalled(); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	if t, ok := fsm.TypeOf(cmd); ok {
		if err := m.checkCommand(ctx, t); err != nil {
			return nil, err
		}
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.WriteTimeout)
	defer cancel()
	resp, err := m.raft.Apply(ctx, data)
	if err != nil {
		return nil, m.clusterError("replicate", err)
	}
	res, ok := resp.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("apply %T: unexpected response %T", cmd, resp)
	}
	return res, res.Err
}

// SubmitTask commits a new task, Pending; the leader loop places it.
func (m *Manager) SubmitTask(ctx context.Context, ev api.TaskEvent) (api.Task, bool, error) {
	if !m.raft.IsLeader() {
		return api.Task{}, false, api.ErrNotLeader
	}
	t := ev.Task
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	// Service and ServiceVersion are the leader's, set on the tasks it
	// makes for a service; a task submitted on its own belongs to none.
	t.Service, t.ServiceVersion = "", 0
	if err := t.ValidateSubmission(); err != nil {
		return api.Task{}, false, err
	}
	if err := health.ValidateTask(t); err != nil {
		return api.Task{}, false, err
	}
	// Health and history are the cluster's (a task copied from GET /tasks
	// carries them): the stored task starts its own, and the log entry
	// stays as small as the task the user wrote.
	t.Healthy, t.History = false, nil
	res, err := m.apply(ctx, fsm.SubmitTask{Task: t, Time: time.Now().UTC(), MaxTasks: m.cfg.MaxTasks})
	if err != nil {
		return api.Task{}, false, err
	}
	if res.Created {
		m.log.Info("task submitted", "task_id", t.ID, "name", t.Name, "image", t.Image)
	}
	return res.Task, res.Created, nil
}

// StopTask commits a stop request; the leader loop carries it out.
func (m *Manager) StopTask(ctx context.Context, id uuid.UUID) (api.Task, error) {
	if !m.raft.IsLeader() {
		return api.Task{}, api.ErrNotLeader
	}
	res, err := m.apply(ctx, fsm.StopTask{ID: id, Time: time.Now().UTC(), Reason: api.ReasonStoppedOnRequest})
	if err != nil {
		if res != nil && errors.Is(err, api.ErrConflict) {
			return res.Task, err
		}
		return api.Task{}, err
	}
	m.log.Info("task stop requested", "task_id", id)
	return res.Task, nil
}

// ReportTask commits a worker's report. Stale reports (another placement) and
// impossible transitions are dropped without error: the worker has nothing to
// retry, and the leader's own reconciliation settles the copy.
func (m *Manager) ReportTask(ctx context.Context, t api.Task) error {
	if !m.raft.IsLeader() {
		return api.ErrNotLeader
	}
	// Reports come from workers (pushed, or read by the leader's poll):
	// outside input, bounded before it reaches the log.
	if err := t.ValidateReport(); err != nil {
		return err
	}
	prev, _ := m.fsm.Task(t.ID) // for the report lag: did this report change the state?
	// The FSM stores neither from a report: they stay out of the log.
	t.Healthy, t.History = false, nil
	res, err := m.apply(ctx, fsm.ReportTask{Task: t, Time: time.Now().UTC()})
	if err == nil && res.Changed {
		m.metrics.reported(prev.State, res.Task, time.Now())
	}
	switch {
	case errors.Is(err, api.ErrStaleGeneration), errors.Is(err, api.ErrConflict), errors.Is(err, api.ErrNotFound):
		m.log.Debug("report dropped", "task_id", t.ID, "worker", t.Worker, "generation", t.Generation, "reason", err)
		return nil
	}
	return err
}

// ReportTasks commits a batch of a worker's reports in one log entry
// (fsm.ReportTasks), or, while a manager of the cluster does not know that
// command yet (a rolling upgrade), each as ReportTask does. Stale reports
// are skipped without error, as ReportTask drops them.
func (m *Manager) ReportTasks(ctx context.Context, ts []api.Task) error {
	if !m.raft.IsLeader() {
		return api.ErrNotLeader
	}
	batch := make([]api.Task, 0, len(ts))
	prev := make(map[uuid.UUID]api.State, len(ts))
	for _, t := range ts {
		if err := t.ValidateReport(); err != nil {
			return fmt.Errorf("report of task %s: %w", t.ID, err)
		}
		p, _ := m.fsm.Task(t.ID)
		prev[t.ID] = p.State
		t.Healthy, t.History = false, nil
		batch = append(batch, t)
	}
	if err := m.checkCommand(ctx, fsm.CmdReportTasks); err != nil {
		m.log.Debug("reports committed one by one", "reports", len(batch), "reason", err)
		for _, t := range batch {
			if err := m.ReportTask(ctx, t); err != nil {
				return err
			}
		}
		return nil
	}
	res, err := m.apply(ctx, fsm.ReportTasks{Tasks: batch, Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	now := time.Now()
	for _, t := range res.Tasks {
		m.metrics.reported(prev[t.ID], t, now)
	}
	return nil
}

func (m *Manager) read(ctx context.Context, consistent bool) error {
	if !consistent {
		return nil
	}
	if err := m.raft.ConsistentRead(ctx); err != nil {
		return m.clusterError("consistent read", err)
	}
	return nil
}

// Tasks lists every task.
func (m *Manager) Tasks(ctx context.Context, consistent bool) ([]api.Task, error) {
	if err := m.read(ctx, consistent); err != nil {
		return nil, err
	}
	return m.fsm.Tasks(), nil
}

// Task returns one task.
func (m *Manager) Task(ctx context.Context, id uuid.UUID, consistent bool) (api.Task, error) {
	if err := m.read(ctx, consistent); err != nil {
		return api.Task{}, err
	}
	return m.fsm.Task(id)
}

// Nodes lists every worker with its allocation.
func (m *Manager) Nodes(ctx context.Context, consistent bool) ([]api.Node, error) {
	if err := m.read(ctx, consistent); err != nil {
		return nil, err
	}
	return m.fsm.Nodes(), nil
}

// Cluster describes the raft servers and the gossip members.
func (m *Manager) Cluster(ctx context.Context) (api.ClusterInfo, error) {
	info := api.ClusterInfo{Self: m.cfg.ID, Term: m.raft.Term(), AppliedIndex: m.fsm.AppliedIndex(), Version: m.cfg.Version}
	info.LeaderID, _ = m.raft.Leader()
	info.Leader, _ = m.Leader()
	apis := make(map[string]string)
	for _, mem := range m.gossip.Members() {
		if mem.Meta.Role == cluster.RoleManager {
			apis[mem.Meta.RaftID] = mem.Meta.API
		}
		info.Members = append(info.Members, api.GossipMember{
			Name: mem.Name, Addr: mem.Addr, Role: string(mem.Meta.Role), API: mem.Meta.API, State: string(mem.State),
			MaxCommand: mem.Meta.MaxCommand, Version: mem.Meta.Version,
		})
	}
	apis[m.cfg.ID] = m.cfg.API
	servers, err := m.raft.Servers(ctx)
	if err != nil {
		return info, fmt.Errorf("%w: raft configuration: %w", api.ErrUnavailable, err)
	}
	waiting := m.promotions()
	for _, s := range servers {
		rs := api.RaftServer{ID: s.ID, Addr: s.Addr, API: apis[s.ID], Voter: s.Voter, Leader: s.Leader}
		if !s.Voter {
			rs.Promotion = waiting[s.ID]
		}
		info.Servers = append(info.Servers, rs)
	}
	return info, nil
}

// DrainNode commits a worker's Drain flag. The leader's loop then moves the
// worker's tasks elsewhere (drain) or places on it again (undrain).
func (m *Manager) DrainNode(ctx context.Context, name string, drain bool) (api.Node, error) {
	if !m.raft.IsLeader() {
		return api.Node{}, api.ErrNotLeader
	}
	res, err := m.apply(ctx, fsm.DrainWorker{Name: name, Drain: drain})
	if err != nil {
		return api.Node{}, err
	}
	if res.Changed {
		m.log.Info("worker drain set", "worker", name, "drain", drain)
	}
	// The answer carries the worker's allocation (the CLI prints its task
	// count), which only Nodes derives.
	for _, n := range m.fsm.Nodes() {
		if n.Name == name {
			return n, nil
		}
	}
	return api.Node{}, fmt.Errorf("worker %q: %w", name, api.ErrNotFound)
}

// clusterError maps the cluster layer's errors onto the API's.
func (m *Manager) clusterError(what string, err error) error {
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		return fmt.Errorf("%w: %s: %w", api.ErrNotLeader, what, err)
	case errors.Is(err, cluster.ErrUnknownOutcome):
		return fmt.Errorf("%w: %s: %w", api.ErrUnknownOutcome, what, err)
	case errors.Is(err, cluster.ErrUnsafeChange):
		return fmt.Errorf("%w: %s: %w", api.ErrConflict, what, err)
	}
	return fmt.Errorf("%w: %s: %w", api.ErrUnavailable, what, err)
}

// Leader returns the leader's HTTP address, found through the gossip
// metadata of the manager whose raft ID leads.
func (m *Manager) Leader() (string, bool) {
	if m.raft.IsLeader() {
		return m.cfg.API, true
	}
	id, _ := m.raft.Leader()
	if id == "" {
		return "", false
	}
	for _, mem := range m.gossip.Members() {
		if mem.Meta.Role == cluster.RoleManager && mem.Meta.RaftID == id && mem.State == cluster.StateAlive {
			return mem.Meta.API, false
		}
	}
	return "", false
}

// Changes streams task changes as this manager applies them: from the next
// one, or after position after (a client resuming, perhaps from another
// manager; *api.GapError when the FSM's feed no longer holds every change
// since, a *api.ValidationError when no change has that position yet: see
// checkReached). At most MaxEventStreams run at once; one more is refused
// with api.ErrLimit. Each reads the FSM's shared change feed at its own pace
// through an unbuffered channel; one that falls further behind than the
// feed keeps, whose state is replaced by a snapshot, or whose manager is
// out of touch with a leader for longer than EventsLeaderTimeout
// (contact.go) gets a last Change whose Error says so, and its channel is
// closed. An out-of-touch manager refuses new streams (api.ErrUnavailable).
func (m *Manager) Changes(ctx context.Context, after *api.Position) (<-chan api.Change, api.Position, error) {
	if n := m.streams.Add(1); n > int64(m.cfg.MaxEventStreams) {
		m.streams.Add(-1)
		return nil, api.Position{}, fmt.Errorf("%w: this manager already serves %d event streams, its limit (max_event_streams); close one, or use another manager", api.ErrLimit, m.cfg.MaxEventStreams)
	}
	sub, start, contact, err := m.subscribe(ctx, after)
	if err != nil {
		m.streams.Add(-1)
		return nil, api.Position{}, err
	}
	out := make(chan api.Change)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer m.streams.Add(-1)
		defer close(out)
		defer sub.Close()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(m.ctx, cancel) // Shutdown ends every stream
		defer stop()
		// read also ends when contact with a leader is lost; ctx (the
		// reader gone, Shutdown) still bounds the last line's delivery.
		read, endRead := context.WithCancelCause(ctx)
		defer endRead(nil)
		stopContact := context.AfterFunc(contact, func() { endRead(context.Cause(contact)) })
		defer stopContact()
		for {
			c, err := sub.Next(read)
			switch {
			case errors.Is(err, fsm.ErrFellBehind):
				m.log.Warn("event stream dropped: its reader fell behind", "error", err)
				c = api.Change{Error: err.Error() + "; resume after the last change read (?after=), or re-read GET /tasks and subscribe again"}
			case errors.Is(err, fsm.ErrStateReplaced), errors.Is(err, fsm.ErrStalled):
				m.log.Info("event stream ended: the state it followed was replaced or stopped", "error", err)
				c = api.Change{Error: err.Error()}
			case err != nil && ctx.Err() == nil && contact.Err() != nil:
				// Next hands over what the feed holds before it
				// reports the end: the reader resumes after it.
				m.log.Debug("event stream ended: out of touch with a leader", "error", context.Cause(contact))
				c = api.Change{Error: context.Cause(contact).Error()}
			case err != nil:
				return
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
			if c.Error != "" {
				return
			}
		}
	}()
	return out, start, nil
}

// subscribe checks that this manager can serve a stream (after after, if
// set) and subscribes to the FSM's feed. contact is the context the stream
// ends with (contactNow).
func (m *Manager) subscribe(ctx context.Context, after *api.Position) (sub *fsm.Subscription, start api.Position, contact context.Context, err error) {
	contact = m.contactNow()
	if contact.Err() != nil {
		return nil, api.Position{}, nil, context.Cause(contact)
	}
	if after == nil {
		sub, start, err = m.fsm.Subscribe()
		return sub, start, contact, err
	}
	if err := m.checkReached(ctx, *after); err != nil {
		return nil, api.Position{}, nil, err
	}
	sub, err = m.fsm.SubscribeAfter(*after)
	return sub, *after, contact, err
}

// Logs reads the task's container output through the worker it is placed on.
func (m *Manager) Logs(ctx context.Context, id uuid.UUID, opts api.LogOptions) (io.ReadCloser, error) {
	t, err := m.fsm.Task(id)
	if err != nil {
		return nil, err
	}
	if t.Worker == "" {
		return nil, fmt.Errorf("task %s has not been placed on a worker yet: %w", id, api.ErrNotFound)
	}
	n, ok := m.fsm.Worker(t.Worker)
	if !ok {
		return nil, fmt.Errorf("worker %s of task %s: %w", t.Worker, id, api.ErrNotFound)
	}
	rc, err := m.workers.Logs(ctx, n.API, id, opts)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return nil, fmt.Errorf("%w: read logs from worker %s: %w", api.ErrUnavailable, t.Worker, err)
	}
	return rc, err
}

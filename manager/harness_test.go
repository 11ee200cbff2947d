package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

// The leader loop's harness: an in-memory raft that applies every command to
// a real fsm.FSM (and records it), scripted workers behind the Workers seam
// (recording every call), a gossip view the test sets, and an orphan prober
// that answers as told. A test seeds the state, drives one pass (reconcile, a
// poll, an op's result) on its own goroutine, waits for the worker calls the
// pass started, and compares the commands and calls that came out.

// memRaft is an in-memory Raft: Apply encodes nothing more (the manager
// passes fsm.Encode's bytes) and applies synchronously to the FSM.
type memRaft struct {
	f *fsm.FSM

	mu       sync.Mutex
	index    uint64
	leader   bool
	applied  []any               // every command applied, in log order
	refuse   func(cmd any) error // a non-nil error fails the apply; nothing is applied
	lose     func(cmd any) bool  // true: the command applies but its answer is lost (unknown outcome)
	readErr  error               // ConsistentRead fails with it (a deposed leader)
	onRead   func(f *fsm.FSM)    // runs inside ConsistentRead (a view catching up)
	reads    int                 // ConsistentRead calls
	leaderCh chan bool
	// other is the leader's raft ID while this one does not lead ("": none
	// known); contact is what LeaderContact answers while it does not.
	other   string
	contact time.Duration
}

var _ Raft = (*memRaft)(nil)

func (r *memRaft) Apply(ctx context.Context, data []byte) (any, error) {
	cmd, err := fsm.Decode(data)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leader {
		return nil, cluster.ErrNotLeader
	}
	if r.refuse != nil {
		if err := r.refuse(cmd); err != nil {
			return nil, err
		}
	}
	r.index++
	r.applied = append(r.applied, cmd)
	res := r.f.Apply(&hraft.Log{Type: hraft.LogCommand, Index: r.index, Data: data})
	if r.lose != nil && r.lose(cmd) {
		return nil, cluster.ErrUnknownOutcome
	}
	return res, nil
}

func (r *memRaft) IsLeader() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leader
}

// setLeader flips leadership and tells the manager, as raft's channel does.
func (r *memRaft) setLeader(v bool) {
	r.mu.Lock()
	r.leader = v
	r.mu.Unlock()
	r.leaderCh <- v
}

func (r *memRaft) Leader() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.leader:
		return "m1", "m1:raft"
	case r.other != "":
		return r.other, r.other + ":raft"
	}
	return "", ""
}

// follow makes this raft a follower of leader (without telling the
// manager: no leadership change to act on), out of touch for contact.
func (r *memRaft) follow(leader string, contact time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leader, r.other, r.contact = false, leader, contact
}

func (r *memRaft) LeaderContact() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.leader {
		return 0
	}
	return r.contact
}
func (r *memRaft) LeaderChanges() <-chan bool { return r.leaderCh }
func (r *memRaft) Barrier(context.Context) error {
	if !r.IsLeader() {
		return cluster.ErrNotLeader
	}
	return nil
}

func (r *memRaft) ConsistentRead(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	if !r.leader {
		return cluster.ErrNotLeader
	}
	if r.readErr != nil {
		return r.readErr
	}
	if r.onRead != nil {
		r.onRead(r.f)
	}
	return nil
}
func (r *memRaft) Servers(context.Context) ([]cluster.Server, error) { return nil, nil }
func (r *memRaft) AppliedIndex() uint64                              { return r.f.AppliedIndex() }
func (r *memRaft) CommitIndex() uint64                               { return r.f.AppliedIndex() }
func (r *memRaft) LastIndex() uint64                                 { return r.f.AppliedIndex() }
func (r *memRaft) Term() uint64                                      { return 1 }
func (r *memRaft) Status() cluster.ServerStatus                      { return cluster.ServerStatus{ID: "m1"} }
func (r *memRaft) Join(context.Context, string, string, cluster.Liveness) error {
	return nil
}
func (r *memRaft) Remove(context.Context, string, cluster.Liveness) error { return nil }
func (r *memRaft) Promote(context.Context, string, string) error          { return nil }
func (r *memRaft) LeadershipTransfer() error                              { return nil }

// memGossip is the gossip view: the members the test sets.
type memGossip struct {
	mu      sync.Mutex
	members []cluster.Member
}

func (g *memGossip) Members() []cluster.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]cluster.Member(nil), g.members...)
}

// fakeWorker is one scripted worker. By default it answers like a real one:
// it keeps records per (task, generation), refuses an older generation than
// it holds (409 stale generation), stops fenced by generation.
type fakeWorker struct {
	name      string
	records   map[uuid.UUID]api.Task
	forgotten map[uuid.UUID]uint64 // ended records it cleaned up: last generation
	failCalls int                  // the next failCalls calls fail as if it were unreachable
	notSent   int                  // the next notSent calls are not sent: the leader's calls are all in flight
	// onSubmit, if set, runs when a task is submitted, before the answer
	// goes back (the worker's own report of what came next, committed
	// before the leader handles the answer).
	onSubmit func(t api.Task)
}

// fakeWorkers is the Workers seam: workers by API address, and the calls made.
type fakeWorkers struct {
	h     *harness
	mu    sync.Mutex
	byAPI map[string]*fakeWorker
	calls []string
}

var _ Workers = (*fakeWorkers)(nil)

func errUnreachable(w string) error {
	return fmt.Errorf("worker %s: connection refused", w)
}

func errStale(msg string) error {
	return fmt.Errorf("%w: %w: %s (HTTP 409)", api.ErrConflict, api.ErrStaleGeneration, msg)
}

// call records a call and returns the worker, or an error if it is scripted
// to fail.
func (ws *fakeWorkers) call(addr, what string) (*fakeWorker, error) {
	w := ws.byAPI[addr]
	if w == nil {
		return nil, fmt.Errorf("no worker at %s", addr)
	}
	if w.notSent > 0 {
		w.notSent--
		return nil, fmt.Errorf("%s: %w: waiting for one of 64 calls to workers in flight: %w", what, api.ErrNotSent, context.DeadlineExceeded)
	}
	ws.calls = append(ws.calls, w.name+" "+what)
	if w.failCalls > 0 {
		w.failCalls--
		return nil, errUnreachable(w.name)
	}
	return w, nil
}

func (ws *fakeWorkers) Submit(_ context.Context, addr string, ev api.TaskEvent) (api.Task, bool, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	t := ev.Task
	w, err := ws.call(addr, fmt.Sprintf("submit %s gen %d", ws.h.nameOf(t.ID), t.Generation))
	if err != nil {
		return api.Task{}, false, err
	}
	if g, ok := w.forgotten[t.ID]; ok && t.Generation <= g {
		return api.Task{}, false, errStale(fmt.Sprintf("task %s generation %d ended on worker %s and was cleaned up (it last held generation %d)", t.ID, t.Generation, w.name, g))
	}
	if cur, ok := w.records[t.ID]; ok {
		switch {
		case t.Generation < cur.Generation:
			return cur, false, errStale(fmt.Sprintf("task %s generation %d is older than generation %d on worker %s", t.ID, t.Generation, cur.Generation, w.name))
		case t.Generation == cur.Generation:
			return cur, false, nil
		}
	}
	rec := t
	rec.State, rec.Worker, rec.ContainerID = api.Scheduled, w.name, ""
	w.records[t.ID] = rec
	if w.onSubmit != nil {
		w.onSubmit(rec)
	}
	return rec, true, nil
}

func (ws *fakeWorkers) StopUpTo(_ context.Context, addr string, id uuid.UUID, gen uint64) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w, err := ws.call(addr, fmt.Sprintf("stop %s upto %d", ws.h.nameOf(id), gen))
	if err != nil {
		return err
	}
	rec, ok := w.records[id]
	switch {
	case !ok:
		return fmt.Errorf("task %s: %w on worker %s", id, api.ErrNotFound, w.name)
	case rec.Generation > gen:
		return errStale(fmt.Sprintf("stop of task %s up to generation %d, worker %s holds generation %d", id, gen, w.name, rec.Generation))
	}
	if !rec.State.Terminal() {
		rec.State, rec.Reason = api.Completed, "stopped on request"
		w.records[id] = rec
	}
	return nil
}

func (ws *fakeWorkers) Tasks(_ context.Context, addr string) ([]api.Task, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w, err := ws.call(addr, "list")
	if err != nil {
		return nil, err
	}
	out := make([]api.Task, 0, len(w.records))
	for _, t := range w.records {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
	return out, nil
}

func (ws *fakeWorkers) Task(_ context.Context, addr string, id uuid.UUID) (api.Task, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w, err := ws.call(addr, "get "+ws.h.nameOf(id))
	if err != nil {
		return api.Task{}, err
	}
	rec, ok := w.records[id]
	if !ok {
		return api.Task{}, fmt.Errorf("task %s: %w on worker %s", id, api.ErrNotFound, w.name)
	}
	return rec, nil
}

func (ws *fakeWorkers) Logs(context.Context, string, uuid.UUID, api.LogOptions) (io.ReadCloser, error) {
	return nil, errors.New("no logs in the harness")
}

// harness is one leader loop on the in-memory raft, FSM, gossip and workers.
type harness struct {
	t       testing.TB
	ctx     context.Context
	f       *fsm.FSM
	raft    *memRaft
	gossip  *memGossip
	workers *fakeWorkers
	m       *Manager
	l       *loop

	mu      sync.Mutex
	names   map[uuid.UUID]string
	answers map[string]bool // orphan probe: does the task answer
	// unprobeable: tasks the orphan probe cannot reach (no published port)
	unprobeable map[string]bool
}

// newHarness returns a leading loop with fast retries, no automatic poll, and
// no worker yet. tweak, if set, changes the configuration.
func newHarness(t testing.TB, tweak func(*Config)) *harness {
	t.Helper()
	cfg := FastConfig()
	cfg.ID, cfg.API = "m1", "m1:api"
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 4*time.Millisecond
	cfg.PollInterval = time.Hour                        // polls are driven by the test
	cfg.Logger = testkit.LoggerAt(t, "m1", hclog.Debug) // shown only when a case fails
	if tweak != nil {
		tweak(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: fsm.New(), gossip: &memGossip{}, names: map[uuid.UUID]string{}, answers: map[string]bool{}, unprobeable: map[string]bool{}}
	h.raft = &memRaft{f: h.f, leader: true, leaderCh: make(chan bool, 8)}
	h.workers = &fakeWorkers{h: h, byAPI: map[string]*fakeWorker{}}
	probe := func(_ context.Context, task api.Task, _ string) (bool, string) {
		name := h.nameOf(task.ID)
		h.workers.mu.Lock()
		h.workers.calls = append(h.workers.calls, "probe "+name)
		h.workers.mu.Unlock()
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.answers[name] {
			return true, "still answers"
		}
		if h.unprobeable[name] {
			return false, notProbeable
		}
		return false, "does not answer: connection refused"
	}
	h.m = newManager(cfg, h.raft, h.f, h.gossip, h.workers, probe)
	h.l = newLoop(h.m)
	h.l.lastPoll = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	h.l.begin(ctx)
	t.Cleanup(func() { cancel(); h.l.end() })
	return h
}

func (h *harness) nameOf(id uuid.UUID) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n, ok := h.names[id]; ok {
		return n
	}
	return id.String()[:8]
}

// id returns the task ID of a name, the same in every run.
func (h *harness) id(name string) uuid.UUID {
	id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(name))
	h.mu.Lock()
	h.names[id] = name
	h.mu.Unlock()
	return id
}

// seed applies a command to the FSM directly: state before the pass, not a
// decision of the loop.
func (h *harness) seed(cmd any) api.Task {
	h.t.Helper()
	res := h.f.ApplyCommand(cmd)
	if res.Err != nil {
		h.t.Fatalf("seed %T %+v: %v", cmd, cmd, res.Err)
	}
	return res.Task
}

// worker adds a worker, alive with a container runtime, to gossip and to the
// FSM (as the loop would record it), with an empty store.
func (h *harness) worker(name string) *fakeWorker {
	n := api.Node{Name: name, API: name + ":api", State: api.NodeAlive, RuntimeAvailable: true, Cpu: 2, Memory: 1 << 30, Disk: 1 << 30}
	h.gossip.mu.Lock()
	h.gossip.members = append(h.gossip.members, cluster.Member{Name: name, State: cluster.StateAlive,
		Meta: cluster.Meta{Role: cluster.RoleWorker, API: n.API, Cpu: n.Cpu, Memory: n.Memory, Disk: n.Disk}})
	h.gossip.mu.Unlock()
	h.seed(fsm.UpsertWorker{Node: n})
	w := &fakeWorker{name: name, records: map[uuid.UUID]api.Task{}, forgotten: map[uuid.UUID]uint64{}}
	h.workers.mu.Lock()
	h.workers.byAPI[n.API] = w
	h.workers.mu.Unlock()
	return w
}

// gossipState sets a worker's liveness in the gossip view only.
func (h *harness) gossipState(name string, s cluster.MemberState) {
	h.gossip.mu.Lock()
	defer h.gossip.mu.Unlock()
	for i := range h.gossip.members {
		if h.gossip.members[i].Name == name {
			h.gossip.members[i].State = s
		}
	}
}

// submit seeds a Pending task.
func (h *harness) submit(name string, edit func(*api.Task)) api.Task {
	t := api.Task{ID: h.id(name), Name: name, Image: "cube-echo:latest"}
	if edit != nil {
		edit(&t)
	}
	return h.seed(fsm.SubmitTask{Task: t, Time: time.Now().UTC()})
}

// placed seeds a task placed on worker at gen, in state (Scheduled, Running
// or Failed), and gives the worker the matching record.
func (h *harness) placed(name, worker string, gen uint64, state api.State, edit func(*api.Task)) api.Task {
	h.t.Helper()
	t := h.submit(name, edit)
	h.seed(fsm.AssignTask{ID: t.ID, Worker: worker, Generation: gen, Time: time.Now().UTC()})
	return h.observe(name, worker, gen, state)
}

// observe seeds a worker's report of a task's placement, and its record.
func (h *harness) observe(name, worker string, gen uint64, state api.State) api.Task {
	h.t.Helper()
	cur, err := h.f.Task(h.id(name))
	if err != nil {
		h.t.Fatal(err)
	}
	rec := cur
	rec.State = state
	now := time.Now().UTC()
	if state != api.Scheduled {
		rec.ContainerID = "c-" + name
		rec.StartTime = now.Add(-time.Minute)
	}
	if state.Terminal() {
		rec.FinishTime = rec.StartTime // ran for no time: counts as a failure in a row
		rec.ExitCode, rec.Reason = 1, "exited with code 1"
	}
	if state != api.Scheduled {
		h.seed(fsm.ReportTask{Task: rec})
	}
	h.record(worker, rec)
	return rec
}

// record gives a worker a record of a task (as the worker's store holds).
func (h *harness) record(worker string, rec api.Task) {
	h.workers.mu.Lock()
	defer h.workers.mu.Unlock()
	rec.Worker = worker
	h.workers.byAPI[worker+":api"].records[rec.ID] = rec
}

// forget removes a worker's record of a task (an emptied data directory).
func (h *harness) forget(worker, name string) {
	h.workers.mu.Lock()
	defer h.workers.mu.Unlock()
	delete(h.workers.byAPI[worker+":api"].records, h.id(name))
}

// reset forgets the commands and calls recorded so far.
func (h *harness) reset() {
	h.raft.mu.Lock()
	h.raft.applied = nil
	h.raft.mu.Unlock()
	h.workers.mu.Lock()
	h.workers.calls = nil
	h.workers.mu.Unlock()
}

// pass runs one reconcile pass and settles what it started.
//
// It is a full pass, reading every live task, as a pass is every Tick:
// the decisions the tests check are the same either way, and the ones
// made from time (back-offs, rechecks, rollouts' waits) come only from
// full passes. changesPass runs a pass over the changed tasks alone.
func (h *harness) pass() {
	h.l.plan.fullEnd = time.Time{}
	h.l.reconcile(h.ctx)
	h.settle()
}

// changesPass runs one pass as the loop does right after a full one: over
// the tasks changed since, unless something calls for a full pass. It
// reports whether the pass was full.
//
// The last full pass reads as having just ended and cost 1 ms, as on a
// small cluster, whatever the machine made of it: on a loaded machine a
// pass of the harness can take longer than a Tick, or than restAfter
// (which would put off an owed full pass), and the test would measure the
// machine instead of the decision.
func (h *harness) changesPass() bool {
	h.l.plan.fullEnd, h.l.plan.fullCost = time.Now(), time.Millisecond
	full := h.l.reconcile(h.ctx)
	h.settle()
	return full
}

// poll runs one poll of every live worker and settles what it started.
func (h *harness) poll() {
	h.l.startPoll(h.ctx, h.f.Nodes(), refs(h.f.Tasks()...))
	h.settle()
}

// settle waits for every goroutine the loop started (ops, stops, the poll),
// hands their results to the loop as run does, and repeats until nothing
// more comes back. The loop's own state is touched on this goroutine only.
func (h *harness) settle() {
	h.t.Helper()
	for {
		done := make(chan struct{})
		go func() { h.l.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			h.t.Fatalf("the loop's worker calls did not finish within 30 s; calls so far: %q", h.calls())
		}
		progressed := false
		for more := true; more; {
			select {
			case o := <-h.l.opDone:
				h.l.opFinished(h.ctx, o)
				progressed = true
			case res := <-h.l.pollDone:
				h.l.pollFinished(h.ctx, res)
				progressed = true
			default:
				more = false
			}
		}
		h.l.orphanVerdicts(h.ctx)
		if !progressed {
			return
		}
	}
}

// commands describes the commands applied since the last reset, sorted.
func (h *harness) commands() []string {
	h.raft.mu.Lock()
	defer h.raft.mu.Unlock()
	var out []string
	for _, c := range h.raft.applied {
		switch b := c.(type) {
		case fsm.AssignTasks: // a batch reads as its parts (passes_test.go checks the batching)
			for _, a := range b.Assigns {
				out = append(out, h.describe(a))
			}
		case fsm.ReportTasks:
			for _, t := range b.Tasks {
				out = append(out, h.describe(fsm.ReportTask{Task: t}))
			}
		default:
			out = append(out, h.describe(c))
		}
	}
	sort.Strings(out)
	return out
}

func (h *harness) describe(cmd any) string {
	switch c := cmd.(type) {
	case fsm.AssignTask:
		return fmt.Sprintf("assign %s to %s gen %d", h.nameOf(c.ID), c.Worker, c.Generation)
	case fsm.RestartTask:
		counted := ""
		if c.Counted {
			counted = " counted"
		}
		return fmt.Sprintf("restart %s on %s gen %d%s", h.nameOf(c.ID), c.Worker, c.Generation, counted)
	case fsm.RequeueTask:
		return fmt.Sprintf("requeue %s: %s", h.nameOf(c.ID), c.Reason)
	case fsm.GiveUpTask:
		return fmt.Sprintf("give up %s: %s", h.nameOf(c.ID), c.Reason)
	case fsm.ReportTask:
		return fmt.Sprintf("report %s %s gen %d %s", h.nameOf(c.Task.ID), c.Task.Worker, c.Task.Generation, c.Task.State)
	case fsm.PendingNote:
		return fmt.Sprintf("note %s: %s", h.nameOf(c.ID), c.Reason)
	case fsm.SubmitTask:
		return "submit " + h.nameOf(c.Task.ID)
	case fsm.UpsertWorker:
		return fmt.Sprintf("upsert %s %s", c.Node.Name, c.Node.State)
	case fsm.SetHealth:
		if c.Healthy {
			return fmt.Sprintf("healthy %s gen %d", h.nameOf(c.ID), c.Generation)
		}
		return fmt.Sprintf("unhealthy %s gen %d: %s", h.nameOf(c.ID), c.Generation, c.Reason)
	}
	return fmt.Sprintf("%T %+v", cmd, cmd)
}

// calls lists the worker calls (and orphan probes) since the last reset, sorted.
func (h *harness) calls() []string {
	h.workers.mu.Lock()
	defer h.workers.mu.Unlock()
	out := append([]string(nil), h.workers.calls...)
	sort.Strings(out)
	return out
}

func (h *harness) task(name string) api.Task {
	h.t.Helper()
	t, err := h.f.Task(h.id(name))
	if err != nil {
		h.t.Fatal(err)
	}
	return t
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func same(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func lines(s []string) string {
	if len(s) == 0 {
		return "\t(none)"
	}
	return "\t" + strings.Join(s, "\n\t")
}

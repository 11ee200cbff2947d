package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
)

// Result is what Apply returns for every command (raft's future.Response()).
// Domain errors (unknown task, stale generation, …) are values in Err, never
// panics: the same command fails the same way on every manager.
type Result struct {
	// Task is the task after the command, for task commands.
	Task api.Task
	// Created is true when SubmitTask stored a new task.
	Created bool
	// Changed is false when the command changed nothing (a duplicate).
	Changed bool
	Err     error
}

// FSM is Cube's replicated state: tasks and workers. Apply is deterministic:
// every value it stores comes from the command (IDs, times and generations
// are chosen by the leader before the command is written), and nothing
// depends on map order.
//
// Stored api.Task values are never mutated in place, only replaced, so a
// snapshot is a shallow copy of the maps.
type FSM struct {
	mu      sync.RWMutex
	tasks   map[uuid.UUID]api.Task
	workers map[string]api.Node
	applied uint64

	changed chan struct{}
	subs    map[*subscriber]struct{}
}

// subscriber receives task changes as they are applied.
type subscriber struct {
	ch chan api.Change
}

var _ raft.FSM = (*FSM)(nil)

// New returns an empty FSM.
func New() *FSM {
	return &FSM{
		tasks:   make(map[uuid.UUID]api.Task),
		workers: make(map[string]api.Node),
		changed: make(chan struct{}, 1),
		subs:    make(map[*subscriber]struct{}),
	}
}

// Subscribe returns a channel of every task change applied from now on, in
// log order, and a function to unsubscribe. A subscriber that falls more than
// buf changes behind is dropped: its channel is closed, and it resubscribes
// (and re-reads the state) if it wants to go on. Apply never waits for one.
func (f *FSM) Subscribe(buf int) (<-chan api.Change, func()) {
	s := &subscriber{ch: make(chan api.Change, buf)}
	f.mu.Lock()
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	return s.ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[s]; ok {
			delete(f.subs, s)
			close(s.ch)
		}
	}
}

// publishLocked hands a task change to every subscriber without blocking.
func (f *FSM) publishLocked(index uint64, t api.Task) {
	for s := range f.subs {
		select {
		case s.ch <- api.Change{Index: index, Task: t}:
		default:
			delete(f.subs, s)
			close(s.ch)
		}
	}
}

// Changed signals (capacity 1, never blocking Apply) that the state changed;
// the leader loop wakes on it instead of polling.
func (f *FSM) Changed() <-chan struct{} { return f.changed }

func (f *FSM) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Apply applies one committed log entry. It reads the type byte once and
// dispatches once, through the command table; each command's applier gets
// its own struct.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, cmd, err := decode(l.Data)
	if errors.Is(err, ErrUnknownCommand) {
		return f.skipUnknown(l.Index, CmdType(l.Data[0]), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = l.Index
	if err != nil {
		return &Result{Err: err}
	}
	res := c.apply(f, cmd)
	if res.Changed {
		f.notify()
		if res.Task.ID != uuid.Nil {
			f.publishLocked(l.Index, res.Task)
		}
	}
	return res
}

// skipUnknown handles an entry of a type this version does not know. With
// IgnoreIfUnknown it is skipped. Without, a newer manager wrote a command
// this one cannot apply: skipping it would let the replicas diverge
// silently, so stopping is the safe choice (upgrade this manager). This
// cannot be reached from client input.
func (f *FSM) skipUnknown(index uint64, t CmdType, err error) *Result {
	if t&IgnoreIfUnknown == 0 {
		panic(fmt.Sprintf("fsm: log index %d: %v; upgrade this manager", index, err))
	}
	f.mu.Lock()
	f.applied = index
	f.mu.Unlock()
	return &Result{}
}

// ApplyCommand applies a decoded command directly, outside raft. Tests use it
// to drive the FSM; production goes through raft.
func (f *FSM) ApplyCommand(cmd any) *Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := f.applyLocked(cmd)
	if res.Changed {
		f.notify()
	}
	return res
}

// applyLocked finds a command's applier from its struct (a value, as Decode
// returns it; a pointer is not a command here).
func (f *FSM) applyLocked(cmd any) *Result {
	t, ok := byGoType[reflect.TypeOf(cmd)]
	if !ok {
		return notACommand(cmd)
	}
	return commands[t].apply(f, cmd)
}

func (f *FSM) taskLocked(id uuid.UUID) (api.Task, error) {
	t, ok := f.tasks[id]
	if !ok {
		return api.Task{}, fmt.Errorf("task %s: %w", id, api.ErrNotFound)
	}
	return t, nil
}

func (f *FSM) submitLocked(c SubmitTask) *Result {
	if c.Task.ID == uuid.Nil {
		return &Result{Err: &api.ValidationError{Msg: "task ID is required"}}
	}
	if cur, ok := f.tasks[c.Task.ID]; ok {
		return &Result{Task: cur}
	}
	t := c.Task
	t.State = api.Pending
	t.DesiredState = api.Running
	t.SubmitTime = c.Time
	t.Worker, t.Generation, t.ContainerID, t.HostPorts = "", 0, "", nil
	t.StartTime, t.FinishTime = time.Time{}, time.Time{}
	t.RestartCount, t.ExitCode, t.Reason = 0, 0, ""
	f.tasks[t.ID] = t
	return &Result{Task: t, Created: true, Changed: true}
}

func (f *FSM) assignLocked(c AssignTask) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	switch {
	case t.DesiredState != api.Running:
		return &Result{Task: t, Err: fmt.Errorf("task %s is being stopped: %w", c.ID, api.ErrConflict)}
	case c.Generation <= t.Generation:
		return &Result{Task: t, Err: fmt.Errorf("%w: assign task %s at generation %d, it is already at %d", api.ErrStaleGeneration, c.ID, c.Generation, t.Generation)}
	case !api.ValidStateTransition(t.State, api.Scheduled):
		return &Result{Task: t, Err: fmt.Errorf("task %s is %s and cannot be placed: %w", c.ID, t.State, api.ErrConflict)}
	}
	if _, ok := f.workers[c.Worker]; !ok {
		return &Result{Task: t, Err: fmt.Errorf("worker %s: %w", c.Worker, api.ErrNotFound)}
	}
	t.State = api.Scheduled
	t.Worker = c.Worker
	t.Generation = c.Generation
	t.ContainerID, t.HostPorts = "", nil
	t.StartTime, t.FinishTime = time.Time{}, time.Time{}
	t.ExitCode, t.Reason = 0, ""
	f.tasks[t.ID] = t
	return &Result{Task: t, Changed: true}
}

func (f *FSM) reportLocked(c ReportTask) *Result {
	r := c.Task
	t, err := f.taskLocked(r.ID)
	if err != nil {
		return &Result{Err: err}
	}
	if r.Worker != t.Worker || r.Generation != t.Generation {
		return &Result{Task: t, Err: fmt.Errorf("%w: report of task %s from %s generation %d, current placement is %s generation %d",
			api.ErrStaleGeneration, r.ID, r.Worker, r.Generation, t.Worker, t.Generation)}
	}
	if !r.State.Valid() {
		return &Result{Task: t, Err: &api.ValidationError{Msg: fmt.Sprintf("report state %d is not a task state", r.State)}}
	}
	next := t
	next.State = r.State
	next.ContainerID = r.ContainerID
	next.HostPorts = r.HostPorts
	next.ExitCode = r.ExitCode
	next.Reason = r.Reason
	next.StartTime, next.FinishTime = r.StartTime, r.FinishTime
	if sameObservation(t, next) {
		return &Result{Task: t}
	}
	if t.State != next.State && !api.ValidStateTransition(t.State, next.State) {
		return &Result{Task: t, Err: fmt.Errorf("task %s cannot go from %s to %s: %w", r.ID, t.State, next.State, api.ErrConflict)}
	}
	f.tasks[t.ID] = next
	return &Result{Task: next, Changed: true}
}

func (f *FSM) stopLocked(c StopTask) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	switch {
	case t.DesiredState == api.Completed && !t.State.Terminal():
		return &Result{Task: t} // already being stopped
	case t.State.Terminal():
		return &Result{Task: t, Err: fmt.Errorf("task %s already ended (%s): %w", c.ID, t.State, api.ErrConflict)}
	}
	t.DesiredState = api.Completed
	if t.State == api.Pending {
		// Never placed: nothing to stop on a worker.
		t.State = api.Completed
		t.Reason = c.Reason
		t.FinishTime = c.Time
	}
	f.tasks[t.ID] = t
	return &Result{Task: t, Changed: true}
}

func (f *FSM) upsertWorkerLocked(c UpsertWorker) *Result {
	n := c.Node
	if n.Name == "" {
		return &Result{Err: &api.ValidationError{Msg: "worker name is required"}}
	}
	// Allocation is derived from tasks on read, never stored; Drain is the
	// operator's, set by DrainWorker only.
	n.AllocatedCpu, n.AllocatedMemory, n.AllocatedDisk, n.TaskCount = 0, 0, 0, 0
	cur, ok := f.workers[n.Name]
	n.Drain = ok && cur.Drain
	if ok && cur == n {
		return &Result{}
	}
	f.workers[n.Name] = n
	return &Result{Changed: true}
}

func (f *FSM) drainWorkerLocked(c DrainWorker) *Result {
	n, ok := f.workers[c.Name]
	if !ok {
		return &Result{Err: fmt.Errorf("worker %q: %w (the cluster has never seen it; cube node lists the workers)", c.Name, api.ErrNotFound)}
	}
	if n.Drain == c.Drain {
		return &Result{}
	}
	n.Drain = c.Drain
	f.workers[c.Name] = n
	return &Result{Changed: true}
}

func (f *FSM) pendingNoteLocked(c PendingNote) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	if t.State != api.Pending || t.Reason == c.Reason {
		return &Result{Task: t}
	}
	t.Reason = c.Reason
	f.tasks[t.ID] = t
	return &Result{Task: t, Changed: true}
}

func (f *FSM) restartLocked(c RestartTask) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	switch {
	case t.DesiredState != api.Running:
		return &Result{Task: t, Err: fmt.Errorf("task %s is not to run (desired %s): %w", c.ID, t.DesiredState, api.ErrConflict)}
	case c.Generation <= t.Generation:
		return &Result{Task: t, Err: fmt.Errorf("%w: restart task %s at generation %d, it is already at %d", api.ErrStaleGeneration, c.ID, c.Generation, t.Generation)}
	case t.State == api.Pending:
		return &Result{Task: t, Err: fmt.Errorf("task %s is Pending; it is placed, not restarted: %w", c.ID, api.ErrConflict)}
	}
	// Completed → Scheduled is allowed here only: it is how the "always" and
	// "unless-stopped" policies run a task again after exit 0. A task the user
	// stopped is never restarted (its DesiredState is Completed).
	if _, ok := f.workers[c.Worker]; !ok {
		return &Result{Task: t, Err: fmt.Errorf("worker %s: %w", c.Worker, api.ErrNotFound)}
	}
	if t.Worker != c.Worker {
		t.LastWorker = t.Worker
	}
	t.State = api.Scheduled
	t.Worker = c.Worker
	t.Generation = c.Generation
	if c.Counted {
		t.RestartCount++
	}
	t.ContainerID, t.HostPorts = "", nil
	t.StartTime, t.FinishTime = time.Time{}, time.Time{}
	t.ExitCode = 0
	t.Reason = c.Reason
	f.tasks[t.ID] = t
	return &Result{Task: t, Changed: true}
}

func (f *FSM) requeueLocked(c RequeueTask) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	if t.DesiredState != api.Running || (t.State != api.Scheduled && t.State != api.Running && t.State != api.Failed) {
		return &Result{Task: t, Err: fmt.Errorf("task %s (%s, desired %s) cannot be requeued: %w", c.ID, t.State, t.DesiredState, api.ErrConflict)}
	}
	t.LastWorker = t.Worker
	t.State = api.Pending
	t.Worker = ""
	t.ContainerID, t.HostPorts = "", nil
	t.Reason = c.Reason
	f.tasks[t.ID] = t
	return &Result{Task: t, Changed: true}
}

func (f *FSM) giveUpLocked(c GiveUpTask) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	if t.DesiredState != api.Running {
		return &Result{Task: t, Err: fmt.Errorf("task %s is not to run (desired %s): %w", c.ID, t.DesiredState, api.ErrConflict)}
	}
	t.DesiredState = api.Failed
	t.State = api.Failed
	t.Reason = c.Reason
	if t.FinishTime.IsZero() {
		t.FinishTime = c.Time
	}
	f.tasks[t.ID] = t
	return &Result{Task: t, Changed: true}
}

// sameObservation reports whether two records say the same about a container.
func sameObservation(a, b api.Task) bool {
	return a.State == b.State && a.ContainerID == b.ContainerID && a.ExitCode == b.ExitCode &&
		a.Reason == b.Reason && a.StartTime.Equal(b.StartTime) && a.FinishTime.Equal(b.FinishTime) &&
		portsEqual(a.HostPorts, b.HostPorts)
}

func portsEqual(a, b api.PortMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb := b[k]
		if len(va) != len(vb) {
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

// Task returns one task.
func (f *FSM) Task(id uuid.UUID) (api.Task, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.taskLocked(id)
}

// Tasks returns every task, oldest submission first.
func (f *FSM) Tasks() []api.Task {
	f.mu.RLock()
	out := make([]api.Task, 0, len(f.tasks))
	for _, t := range f.tasks {
		out = append(out, t)
	}
	f.mu.RUnlock()
	sortTasks(out)
	return out
}

func sortTasks(ts []api.Task) {
	sort.Slice(ts, func(i, j int) bool {
		if !ts[i].SubmitTime.Equal(ts[j].SubmitTime) {
			return ts[i].SubmitTime.Before(ts[j].SubmitTime)
		}
		return ts[i].ID.String() < ts[j].ID.String()
	})
}

// Worker returns the replicated record of one worker (address, capacity,
// liveness, drain flag) without its allocation, in constant time: the
// lookup for callers that need a worker's address or state, not its load.
func (f *FSM) Worker(name string) (api.Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.workers[name]
	return n, ok
}

// Nodes returns every worker, by name, with its allocation derived from the
// tasks placed on it (Scheduled or Running).
func (f *FSM) Nodes() []api.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Node, 0, len(f.workers))
	idx := make(map[string]int, len(f.workers))
	names := make([]string, 0, len(f.workers))
	for name := range f.workers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		idx[name] = len(out)
		out = append(out, f.workers[name])
	}
	for _, t := range f.tasks {
		i, ok := idx[t.Worker]
		if !ok || (t.State != api.Scheduled && t.State != api.Running) {
			continue
		}
		out[i].AllocatedCpu += t.Cpu
		out[i].AllocatedMemory += t.Memory
		out[i].AllocatedDisk += t.Disk
		out[i].TaskCount++
	}
	return out
}

// AppliedIndex is the index of the last log entry applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// snapshotData is the persisted form of the state, sorted so that equal
// states give equal bytes.
type snapshotData struct {
	Version int
	Tasks   []api.Task
	Workers []api.Node
}

const snapshotVersion = 1

// Snapshot copies the maps (cheap: values are never mutated in place); the
// encoding and I/O happen in Persist, concurrently with Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &snapshot{tasks: make([]api.Task, 0, len(f.tasks)), workers: make([]api.Node, 0, len(f.workers))}
	for _, t := range f.tasks {
		s.tasks = append(s.tasks, t)
	}
	for _, n := range f.workers {
		s.workers = append(s.workers, n)
	}
	return s, nil
}

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var d snapshotData
	if err := json.NewDecoder(rc).Decode(&d); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if d.Version != snapshotVersion {
		return fmt.Errorf("restore snapshot: version %d, this manager reads version %d", d.Version, snapshotVersion)
	}
	tasks := make(map[uuid.UUID]api.Task, len(d.Tasks))
	for _, t := range d.Tasks {
		tasks[t.ID] = t
	}
	workers := make(map[string]api.Node, len(d.Workers))
	for _, n := range d.Workers {
		workers[n.Name] = n
	}
	f.mu.Lock()
	f.tasks, f.workers = tasks, workers
	f.mu.Unlock()
	f.notify()
	return nil
}

type snapshot struct {
	tasks   []api.Task
	workers []api.Node
}

// Persist streams the snapshot as JSON into the sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	sortTasks(s.tasks)
	sort.Slice(s.workers, func(i, j int) bool { return s.workers[i].Name < s.workers[j].Name })
	enc := json.NewEncoder(sink)
	if err := enc.Encode(snapshotData{Version: snapshotVersion, Tasks: s.tasks, Workers: s.workers}); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release is a no-op: the snapshot holds only copies.
func (s *snapshot) Release() {}

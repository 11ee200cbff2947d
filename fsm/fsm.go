package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
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
	// Collected counts what CollectGarbage removed.
	Collected api.GCResult
	// Service is the service after a service command.
	Service api.Service
	// Tasks are the other tasks a command changed (DeleteService stops a
	// service's tasks), in ID order, for the change feed.
	Tasks []api.Task
	// Each is the result of each command of a batch (AssignTasks), in
	// its order.
	Each []*Result
	Err  error
}

// FSM is Cube's replicated state: tasks, workers and tokens. Apply is deterministic:
// every value it stores comes from the command (IDs, times and generations
// are chosen by the leader before the command is written), and nothing
// depends on map order.
//
// Stored api.Task values are never mutated in place, only replaced, so a
// snapshot is a shallow copy of the maps.
type FSM struct {
	mu    sync.RWMutex
	tasks map[uuid.UUID]*api.Task
	// live indexes the tasks that are not Finished: the ones the leader's
	// loop reads on every pass and the only ones that hold resources on a
	// worker, so that the cost of a pass follows what runs, not the history
	// kept until garbage collection (putLocked keeps it up to date).
	live map[uuid.UUID]struct{}
	// unconfirmed holds finished tasks whose container may still run: given
	// up on while placed, until a report at their placement says the
	// container ended. Garbage collection keeps them.
	unconfirmed map[uuid.UUID]struct{}
	workers     map[string]api.Node
	tokens      tokenTable
	// services by name (services.go); values are replaced, never changed
	// in place.
	services map[string]api.Service
	applied  uint64
	// alloc sums, per worker name, the tasks placed there; changes lists
	// the tasks changed since the leader's loop last asked (changes.go).
	alloc   map[string]*allocation
	changes changes

	changed chan struct{}
	feed    *feed
	// limit is the highest command number this FSM applies (MaxCommand
	// unless Options lowered it).
	limit CmdType
	// stall, once set, is why the FSM stopped applying: an entry of a
	// command it does not know. Restore (a whole state) clears it.
	stall *StallError
	log   hclog.Logger
}

// Options are the choices of NewWith; the zero value is New's.
type Options struct {
	// MaxCommand is the highest command number the FSM applies; 0 means
	// the build's MaxCommand. Tests set it lower to play a manager one
	// version behind in one process.
	MaxCommand CmdType
	// Logger receives the error logged when the FSM stalls; nil discards.
	Logger hclog.Logger
}

// ErrStateReplaced ends the event subscriptions when Restore replaces the
// whole state (a snapshot installed from the leader, or a backup restored):
// a subscriber resumes after the last change it read (SubscribeAfter),
// which succeeds if the snapshot holds no change it lacks, or re-reads the
// state and subscribes again.
var ErrStateReplaced = errors.New("the state was replaced by a snapshot (restored or installed from the leader); resume after the last change read (?after=), or re-read GET /tasks and subscribe again")

// ErrStalled is wrapped by the error of an FSM that stopped applying the
// log (a *StallError): every Result from then on, Snapshot and Stalled.
var ErrStalled = errors.New("state machine stalled")

// StallError says where and why an FSM stopped: the log entry at Index is a
// command of type Type, numbered above the highest this manager applies.
type StallError struct {
	Index uint64
	Type  CmdType
	// Max is the highest command number this manager applies.
	Max CmdType
}

func (e *StallError) Error() string {
	return fmt.Sprintf("%v at raft log index %d: command type %d is unknown to this manager, which applies types up to %d; "+
		"a newer manager wrote it: upgrade this manager's binary and restart it (same data dir), and it replays the log from where it stopped",
		ErrStalled, e.Index, e.Type.Number(), e.Max)
}

// Unwrap makes errors.Is(err, ErrStalled) hold.
func (e *StallError) Unwrap() error { return ErrStalled }

var _ raft.FSM = (*FSM)(nil)

// New returns an empty FSM.
func New() *FSM { return NewWith(Options{}) }

// NewWith returns an empty FSM with options.
func NewWith(o Options) *FSM {
	if o.MaxCommand == 0 || o.MaxCommand > MaxCommand {
		o.MaxCommand = MaxCommand
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &FSM{
		tasks:       make(map[uuid.UUID]*api.Task),
		live:        make(map[uuid.UUID]struct{}),
		unconfirmed: make(map[uuid.UUID]struct{}),
		workers:     make(map[string]api.Node),
		tokens:      newTokenTable(),
		services:    make(map[string]api.Service),
		alloc:       make(map[string]*allocation),
		changes:     changes{all: true},
		changed:     make(chan struct{}, 1),
		feed:        newFeed(DefaultFeedSize),
		limit:       o.MaxCommand,
		log:         o.Logger,
	}
}

// MaxCommand is the highest command number this FSM applies: what its
// manager advertises.
func (f *FSM) MaxCommand() CmdType { return f.limit }

// Stalled returns nil, or the *StallError of an FSM that stopped applying
// the log at a command it does not know. A stalled manager's state is
// frozen before that entry: its manager refuses to serve it (503) and is
// not ready, and it keeps running, so that an upgrade and a restart are all
// that is needed.
func (f *FSM) Stalled() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.stall == nil {
		return nil
	}
	return f.stall
}

// deleteLocked removes a task from the state and its indexes.
func (f *FSM) deleteLocked(id uuid.UUID) {
	f.allocLocked(f.tasks[id], -1)
	f.changes.task(id)
	delete(f.tasks, id)
	delete(f.live, id)
	delete(f.unconfirmed, id)
}

// Subscribe returns a subscription to every task change applied from now
// on, in log order, and the position it starts after. Apply never waits
// for a subscriber: changes go into a bounded ring shared by all
// subscribers (feed.go), which each reads at its own pace; one that falls
// more than the ring's size behind is told so by Next (ErrFellBehind) and
// resumes (SubscribeAfter) or re-reads the state, if it wants to go on.
// Close the subscription when done. Right after a Restore whose index was
// not noted (RestoringSnapshot) it fails with api.ErrUnavailable until the
// next entry applies.
func (f *FSM) Subscribe() (*Subscription, api.Position, error) { return f.feed.subscribe() }

// SubscribeAfter returns a subscription to the task changes after position
// p, in log order: those the feed still holds, then the next ones. It
// fails with an *api.GapError when some change after p is unknown to this
// FSM: evicted from the feed (it keeps the last DefaultFeedSize), or folded
// into a snapshot it restored. When p is ahead of what this FSM applied
// (its manager lags the one the subscriber read p from), the subscription
// waits and skips what the subscriber had.
func (f *FSM) SubscribeAfter(p api.Position) (*Subscription, error) { return f.feed.subscribeAfter(p) }

// RestoringSnapshot tells the FSM the raft index of the snapshot about to
// be restored (cluster calls it when raft opens a snapshot from its store),
// so that after Restore its change feed knows it holds every change after
// that index. Without the note the feed learns it at the next entry
// applied, and refuses subscriptions until then.
func (f *FSM) RestoringSnapshot(index uint64) { f.feed.restoringAt(index) }

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
	c, cmd, err := decode(l.Data, f.limit)
	f.mu.Lock()
	if f.stall != nil {
		// Nothing after the unknown entry may apply: the state would be
		// the others' minus that entry's effect, silently.
		f.mu.Unlock()
		return &Result{Err: f.stall}
	}
	var res *Result
	switch {
	case errors.Is(err, ErrUnknownCommand):
		res = f.unknownLocked(l.Index, CmdType(l.Data[0]))
	case err != nil:
		f.applied = l.Index
		res = &Result{Err: err}
	default:
		f.applied = l.Index
		res = c.apply(f, cmd)
		f.noteChangeLocked(CmdType(l.Data[0]), res)
	}
	stalled := f.stall != nil // this entry stalled it
	f.mu.Unlock()
	if res.Changed {
		f.notify()
	}
	if !stalled {
		// After the FSM's lock is released: raft calls Apply from one
		// goroutine, so changes still enter the feed in log order, and
		// the feed never blocks (subscribers read it on their own).
		f.publish(l.Index, res)
	}
	return res
}

// publish hands the task changes of the entry at index to the feed, the
// command's task first, then the others it changed (in ID order): the
// same changes in the same order on every manager, so that a change's
// position (index, place in the entry) names it everywhere. An entry that
// changed no task is published too, with none: the feed learns from it
// how far this FSM has applied.
func (f *FSM) publish(index uint64, res *Result) {
	switch {
	case !res.Changed:
		f.feed.publish(index)
	case res.Task.ID == uuid.Nil:
		f.feed.publish(index, res.Tasks...)
	case len(res.Tasks) == 0:
		f.feed.publish(index, res.Task)
	default:
		f.feed.publish(index, append([]api.Task{res.Task}, res.Tasks...)...)
	}
}

// unknownLocked handles an entry of a type this version does not know. With
// IgnoreIfUnknown it is skipped. Without, a newer manager wrote a command
// this one cannot apply: skipping it would let the replicas diverge
// silently, and panicking would crash-loop the manager on every replay. So
// the FSM stalls: it applies nothing more (each later entry's Result
// carries the stall), refuses snapshots (raft must not compact the entries
// it has not applied), and closes the event streams. Its applied index stays
// before the entry, and a restart of an upgraded binary replays from the
// last snapshot, through this entry, correctly. The leader's check that
// every voter knows a command before proposing it makes this rare: a
// manager downgraded, or started from an old binary, after the entry.
func (f *FSM) unknownLocked(index uint64, t CmdType) *Result {
	if t.Ignorable() {
		f.applied = index
		return &Result{}
	}
	f.stall = &StallError{Index: index, Type: t, Max: f.limit}
	f.log.Error("state machine stalled: this manager must be upgraded", "index", index, "type", t.Number(), "max_known", f.limit, "error", f.stall)
	f.feed.cut(f.stall)
	f.notify()
	return &Result{Err: f.stall}
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
	res := commands[t].apply(f, cmd)
	f.noteChangeLocked(t, res)
	return res
}

// noteChangeLocked notes, for TakeChanges, a change that is not only
// tasks': a worker's record, a service, a token. Tasks note their own
// changes where they are stored.
func (f *FSM) noteChangeLocked(t CmdType, res *Result) {
	if res != nil && res.Changed && !taskCommands[t] {
		f.changes.everything()
	}
}

func (f *FSM) taskLocked(id uuid.UUID) (api.Task, error) {
	t, ok := f.tasks[id]
	if !ok {
		return api.Task{}, fmt.Errorf("task %s: %w", id, api.ErrNotFound)
	}
	return *t, nil
}

func (f *FSM) submitLocked(c SubmitTask) *Result {
	if c.Task.ID == uuid.Nil {
		return &Result{Err: &api.ValidationError{Msg: "task ID is required"}}
	}
	if cur, ok := f.tasks[c.Task.ID]; ok {
		return &Result{Task: *cur}
	}
	if c.Task.Service != "" {
		// A service's task (the leader makes them) only while the service
		// exists: one decided before a deletion committed must not
		// outlive it.
		if _, ok := f.services[c.Task.Service]; !ok {
			return &Result{Err: fmt.Errorf("task %s names service %q, which does not exist: %w", c.Task.ID, c.Task.Service, api.ErrConflict)}
		}
	}
	if c.MaxTasks > 0 && len(f.tasks) >= c.MaxTasks {
		return &Result{Err: fmt.Errorf("%w: the cluster stores %d tasks, its limit (manager setting max_tasks); stop tasks you no longer need, and finished ones are removed by garbage collection (cube system gc removes them now)",
			api.ErrLimit, len(f.tasks))}
	}
	t := c.Task
	t.State = api.Pending
	t.DesiredState = api.Running
	t.SubmitTime = c.Time
	t.Worker, t.Generation, t.ContainerID, t.HostPorts = "", 0, "", nil
	t.StartTime, t.FinishTime = time.Time{}, time.Time{}
	t.RestartCount, t.ExitCode, t.Reason, t.LastWorker = 0, 0, "", ""
	t.Healthy, t.History = false, nil
	t = f.putLocked(t, c.Time, "submitted")
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
	t.Healthy = false
	t = f.putLocked(t, c.Time, "")
	return &Result{Task: t, Changed: true}
}

// assignTasksLocked applies each assignment of the batch; Each holds their
// results, Tasks the tasks placed, in the batch's order.
func (f *FSM) assignTasksLocked(c AssignTasks) *Result {
	res := &Result{Each: make([]*Result, len(c.Assigns))}
	for i, a := range c.Assigns {
		r := f.assignLocked(a)
		res.Each[i] = r
		if r.Err == nil && r.Changed {
			res.Changed = true
			res.Tasks = append(res.Tasks, r.Task)
		}
	}
	return res
}

// reportTasksLocked applies each report of the batch; the Result lists
// the tasks they changed, in the batch's order (the change feed's order).
func (f *FSM) reportTasksLocked(c ReportTasks) *Result {
	res := &Result{}
	for _, t := range c.Tasks {
		r := f.reportLocked(ReportTask{Task: t, Time: c.Time})
		if r.Err != nil || !r.Changed {
			continue
		}
		res.Changed = true
		if r.Task.ID != uuid.Nil {
			res.Tasks = append(res.Tasks, r.Task)
		}
	}
	return res
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
	if _, ok := f.unconfirmed[t.ID]; ok && r.State.Terminal() {
		// The worker says the container of a task given up on has ended:
		// garbage collection may now remove the task. Its state stays
		// the one the leader gave it.
		delete(f.unconfirmed, t.ID)
		return &Result{Changed: true}
	}
	next := t
	next.State = r.State
	next.ContainerID = r.ContainerID
	next.HostPorts = r.HostPorts
	next.ExitCode = r.ExitCode
	next.Reason = r.Reason
	next.StartTime, next.FinishTime = r.StartTime, r.FinishTime
	// A verdict of the health check holds for a running container only.
	next.Healthy = t.Healthy && next.State == api.Running
	if sameObservation(t, next) {
		return &Result{Task: t}
	}
	if t.State != next.State && !api.ValidStateTransition(t.State, next.State) {
		return &Result{Task: t, Err: fmt.Errorf("task %s cannot go from %s to %s: %w", r.ID, t.State, next.State, api.ErrConflict)}
	}
	next = f.putLocked(next, c.at(), "")
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
	why := "stop requested"
	if t.State == api.Pending {
		// Never placed: nothing to stop on a worker.
		t.State = api.Completed
		t.Reason = c.Reason
		t.FinishTime = c.Time
		why = ""
	}
	t = f.putLocked(t, c.Time, why)
	return &Result{Task: t, Changed: true}
}

func (f *FSM) upsertWorkerLocked(c UpsertWorker) *Result {
	n := c.Node
	if n.Name == "" {
		return &Result{Err: &api.ValidationError{Msg: "worker name is required"}}
	}
	// Allocation is derived from tasks on read, never stored; Drain is the
	// operator's, set by DrainWorker only.
	n.AllocatedCpu, n.AllocatedMemory, n.AllocatedDisk, n.TaskCount, n.ServiceTasks = 0, 0, 0, 0, nil
	cur, ok := f.workers[n.Name]
	n.Drain = ok && cur.Drain
	if ok && cur.Equal(n) {
		return &Result{}
	}
	f.workers[n.Name] = n
	f.workerChangedLocked(n.Name)
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
	f.workerChangedLocked(c.Name)
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
	t = f.putLocked(t, c.Time, "")
	return &Result{Task: t, Changed: true}
}

func (f *FSM) setHealthLocked(c SetHealth) *Result {
	t, err := f.taskLocked(c.ID)
	if err != nil {
		return &Result{Err: err}
	}
	if c.Generation != t.Generation || t.State != api.Running || t.DesiredState != api.Running || t.Healthy == c.Healthy {
		return &Result{Task: t} // another placement's, or nothing new
	}
	t.Healthy = c.Healthy
	why := api.ReasonHealthPassed
	if !c.Healthy {
		why = api.ReasonHealthFailed
		if c.Reason != "" {
			why += ": " + c.Reason
		}
	}
	t = f.putLocked(t, c.Time, why)
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
	t.Healthy = false
	t = f.putLocked(t, c.Time, "")
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
	t.Healthy = false
	t = f.putLocked(t, c.Time, "")
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
	if t.State == api.Scheduled || t.State == api.Running {
		// Its container may still run until its worker confirms the stop.
		f.unconfirmed[t.ID] = struct{}{}
	}
	t.DesiredState = api.Failed
	t.State = api.Failed
	t.Reason = c.Reason
	if t.FinishTime.IsZero() {
		t.FinishTime = c.Time
	}
	t.Healthy = false
	t = f.putLocked(t, c.Time, "")
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

// LiveTasks returns the tasks that are not Finished, oldest submission
// first: what the leader's loop works on. Its cost follows their number,
// not the number of finished tasks kept until garbage collection.
func (f *FSM) LiveTasks() []api.Task {
	return f.tasksIn(func() map[uuid.UUID]struct{} { return f.live })
}

// LiveTaskRefs is LiveTasks without the copies: the stored tasks
// themselves, oldest submission first, which the caller must only read.
// The FSM never changes a stored task in place (putLocked stores a new
// copy), so each stays as it was when read. The leader's pass reads every
// live task; copying them (600 bytes each) was most of its cost.
func (f *FSM) LiveTaskRefs() []*api.Task {
	f.mu.RLock()
	got := make([]*api.Task, 0, len(f.live))
	for id := range f.live {
		got = append(got, f.tasks[id])
	}
	f.mu.RUnlock()
	return refsInOrder(got)
}

// refsInOrder returns ps by submission, ties by ID (byte order, the order
// of their text form; order_test.go checks it against a plain sort). It
// sorts small keys, where sorting the tasks themselves moved each (a
// large struct, through GC write barriers) log(n) times: that sort was a
// third of a leader pass with 10,000 tasks (BenchmarkLeaderPass).
func refsInOrder(ps []*api.Task) []*api.Task {
	keys := make([]taskKey, len(ps))
	for i, t := range ps {
		keys[i] = keyOf(t, i)
	}
	sortKeys(keys)
	out := make([]*api.Task, len(ps))
	for j, k := range keys {
		out[j] = ps[k.i]
	}
	return out
}

// Unconfirmed reports whether the task was given up on while placed and
// its worker has not yet confirmed that its container ended.
func (f *FSM) Unconfirmed(id uuid.UUID) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.unconfirmed[id]
	return ok
}

// UnconfirmedTasks returns the tasks given up on while placed whose
// worker has not yet confirmed that their container ended.
func (f *FSM) UnconfirmedTasks() []api.Task {
	return f.tasksIn(func() map[uuid.UUID]struct{} { return f.unconfirmed })
}

// tasksIn returns the tasks of an index, oldest submission first. The index
// is read under the lock (Restore replaces the maps), hence a function.
func (f *FSM) tasksIn(index func() map[uuid.UUID]struct{}) []api.Task {
	f.mu.RLock()
	ids := index()
	got := make([]*api.Task, 0, len(ids))
	for id := range ids {
		got = append(got, f.tasks[id])
	}
	f.mu.RUnlock()
	return values(refsInOrder(got))
}

// taskKey is what tasks are ordered by (sortTasks), small and without
// pointers, with the task's index in the slice being ordered.
type taskKey struct {
	sec  int64 // SubmitTime: Unix seconds and nanoseconds (UnixNano
	nsec int32 // overflows before 1678, and a zero time is valid here)
	id   uuid.UUID
	i    int
}

// values copies the tasks ps point to, in their order.
func values(ps []*api.Task) []api.Task {
	out := make([]api.Task, len(ps))
	for i, t := range ps {
		out[i] = *t
	}
	return out
}

func keyOf(t *api.Task, i int) taskKey {
	at := t.SubmitTime
	return taskKey{sec: at.Unix(), nsec: int32(at.Nanosecond()), id: t.ID, i: i}
}

func sortKeys(keys []taskKey) {
	slices.SortFunc(keys, func(a, b taskKey) int {
		if c := cmp.Compare(a.sec, b.sec); c != 0 {
			return c
		}
		if c := cmp.Compare(a.nsec, b.nsec); c != 0 {
			return c
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
}

// Tasks returns every task, oldest submission first.
func (f *FSM) Tasks() []api.Task {
	f.mu.RLock()
	got := make([]*api.Task, 0, len(f.tasks))
	for _, t := range f.tasks {
		got = append(got, t)
	}
	f.mu.RUnlock()
	return values(refsInOrder(got))
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

// Workers returns the replicated record of every worker, by name, without
// allocation: the leader's comparison with gossip needs no more, and
// deriving allocation costs a scan of the live tasks (Nodes).
func (f *FSM) Workers() map[string]api.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]api.Node, len(f.workers))
	for name, n := range f.workers {
		out[name] = n
	}
	return out
}

// Nodes returns every worker, by name, with its allocation: the sums of
// the tasks placed on it (Scheduled or Running), kept up to date as tasks
// change (changes.go), so this costs the workers, not the tasks.
func (f *FSM) Nodes() []api.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := make([]string, 0, len(f.workers))
	for name := range f.workers {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]api.Node, 0, len(f.workers))
	for _, name := range names {
		n := f.workers[name]
		f.alloc[name].fill(&n)
		out = append(out, n)
	}
	return out
}

// StateSize is how many items the state holds, each about one log entry's
// worth (tasks, workers, services, tokens): raft's snapshot threshold
// follows it (cluster.StateSizer).
func (f *FSM) StateSize() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.tasks) + len(f.workers) + len(f.services) + len(f.tokens.byAccessor)
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
	// Tokens and TokensUsed came with version 2; a version 1 snapshot
	// has neither and restores to an empty token table that was never used.
	Tokens     []Token `json:",omitempty"`
	TokensUsed bool    `json:",omitempty"`
	// Unconfirmed lists the tasks given up on whose container's end no
	// worker confirmed yet (sorted). An older manager ignores the field and
	// may garbage-collect nothing anyway: it has no garbage collection.
	Unconfirmed []uuid.UUID `json:",omitempty"`
	// Services came with version 3 (sorted by name). Persist writes
	// version 3 only when there are services, so that a state without
	// them still restores on a manager that reads up to version 2 (a
	// rolling upgrade: services cannot exist before every voter applies
	// their commands).
	Services []api.Service `json:",omitempty"`
}

// snapshotVersion is the version Persist writes. Version 2 added tokens:
// a manager that reads only version 1 refuses such a snapshot instead of
// restoring it without its tokens (which would let the managers disagree
// on who may call the API). Restore reads both.
// Version 3 added services; Persist writes it only for a state that holds
// some (else version 2, the same bytes as before).
const snapshotVersion = 3

// snapshotVersionNoServices is the version Persist writes for a state
// without services.
const snapshotVersionNoServices = 2

// oldestSnapshotVersion is the oldest version Restore reads.
const oldestSnapshotVersion = 1

// Snapshot copies the maps (cheap: values are never mutated in place); the
// encoding and I/O happen in Persist, concurrently with Apply.
//
// A stalled FSM refuses: a snapshot would be labelled with raft's applied
// index, past the entries the FSM skipped, and raft would then compact them
// away, so the upgraded manager could never replay them.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.stall != nil {
		return nil, fmt.Errorf("snapshot: %w", f.stall)
	}
	s := &snapshot{
		tasks:      make([]*api.Task, 0, len(f.tasks)),
		workers:    make([]api.Node, 0, len(f.workers)),
		tokens:     make([]Token, 0, len(f.tokens.byAccessor)),
		tokensUsed: f.tokens.used,
		services:   make([]api.Service, 0, len(f.services)),
	}
	for _, sv := range f.services {
		s.services = append(s.services, sv)
	}
	for id := range f.unconfirmed {
		s.unconfirmed = append(s.unconfirmed, id)
	}
	for _, t := range f.tasks {
		s.tasks = append(s.tasks, t) // never changed in place: no copy under the lock
	}
	for _, n := range f.workers {
		s.workers = append(s.workers, n)
	}
	for _, t := range f.tokens.byAccessor {
		s.tokens = append(s.tokens, t)
	}
	return s, nil
}

// Restore replaces the whole state with a snapshot's, and so ends a stall:
// the snapshot holds every entry up to its index, the unknown one included.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	d, err := decodeState(rc)
	if err != nil {
		return err
	}
	tasks := make(map[uuid.UUID]*api.Task, len(d.Tasks))
	for i := range d.Tasks {
		tasks[d.Tasks[i].ID] = &d.Tasks[i]
	}
	workers := make(map[string]api.Node, len(d.Workers))
	for _, n := range d.Workers {
		workers[n.Name] = n
	}
	tokens := newTokenTable()
	for _, t := range d.Tokens {
		tokens.put(t)
	}
	tokens.used = tokens.used || d.TokensUsed
	services := make(map[string]api.Service, len(d.Services))
	for _, s := range d.Services {
		services[s.Name] = s
	}
	live := make(map[uuid.UUID]struct{})
	for id, t := range tasks {
		if !t.Finished() {
			live[id] = struct{}{}
		}
	}
	unconfirmed := make(map[uuid.UUID]struct{}, len(d.Unconfirmed))
	for _, id := range d.Unconfirmed {
		if _, ok := tasks[id]; ok {
			unconfirmed[id] = struct{}{}
		}
	}
	f.mu.Lock()
	f.tasks, f.live, f.unconfirmed, f.workers, f.tokens, f.services = tasks, live, unconfirmed, workers, tokens, services
	f.rebuildAllocLocked()
	f.changes.everything()
	f.stall = nil
	f.mu.Unlock()
	// The changes a subscriber read no longer lead to this state; the feed
	// vouches only for the changes after the snapshot from now on.
	f.feed.restored()
	f.notify()
	return nil
}

type snapshot struct {
	tasks       []*api.Task
	workers     []api.Node
	tokens      []Token
	tokensUsed  bool
	unconfirmed []uuid.UUID
	services    []api.Service
}

// Persist streams the snapshot as JSON into the sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	tasks := refsInOrder(s.tasks)
	sort.Slice(s.workers, func(i, j int) bool { return s.workers[i].Name < s.workers[j].Name })
	sortTokens(s.tokens)
	sort.Slice(s.unconfirmed, func(i, j int) bool { return s.unconfirmed[i].String() < s.unconfirmed[j].String() })
	sortServices(s.services)
	version := snapshotVersion
	if len(s.services) == 0 {
		version = snapshotVersionNoServices
	}
	d := snapshotData{Version: version, Workers: s.workers, Tokens: s.tokens, TokensUsed: s.tokensUsed, Unconfirmed: s.unconfirmed, Services: s.services}
	if err := writeSnapshotData(sink, d, tasks); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// writeSnapshotData writes d with tasks as its Tasks, the bytes that
// json.NewEncoder(w).Encode(d) writes, one task at a time: encoding/json
// builds a whole value in memory before writing any of it, 128 MB for
// 100,000 tasks, on every manager at every snapshot (SCALE.md).
func writeSnapshotData(w io.Writer, d snapshotData, tasks []*api.Task) error {
	d.Tasks = []api.Task{} // "Tasks":[], split around the brackets below
	rest, err := json.Marshal(d)
	if err != nil {
		return err
	}
	const open = `,"Tasks":[`
	at := bytes.Index(rest, []byte(open+"]"))
	if at < 0 {
		return fmt.Errorf("encoded snapshot has no %s] to write the tasks into", open)
	}
	head, tail := rest[:at+len(open)], rest[at+len(open):] // tail starts with the ]
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.Write(head)
	for i, t := range tasks {
		b, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("task %s: %w", t.ID, err)
		}
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.Write(b)
	}
	bw.Write(tail)
	bw.WriteByte('\n')
	return bw.Flush() // the first write error, if any, sticks until here
}

// Release is a no-op: the snapshot holds only copies, and stored tasks
// that are never changed in place.
func (s *snapshot) Release() {}

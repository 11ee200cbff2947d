package fsm

import (
	"bytes"
	"errors"
	"io"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// logger applies commands at increasing indexes, as raft would.
type logger struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func newLogger(t *testing.T) *logger { return &logger{t: t, f: New()} }

func (l *logger) apply(cmd any) *Result {
	l.t.Helper()
	l.index++
	return applyLog(l.t, l.f, l.index, cmd)
}

// placed submits a task and runs it on w at generation 1.
func (l *logger) placed(w string, mod func(*api.Task)) api.Task {
	l.t.Helper()
	task := newTask()
	if mod != nil {
		mod(&task)
	}
	l.apply(SubmitTask{Task: task, Time: t0})
	l.apply(AssignTask{ID: task.ID, Worker: w, Generation: 1, Time: t0})
	l.apply(ReportTask{Task: api.Task{ID: task.ID, Worker: w, Generation: 1, State: api.Running, ContainerID: "c", StartTime: t0}})
	return task
}

func (l *logger) report(task api.Task, w string, gen uint64, s api.State) *Result {
	l.t.Helper()
	return l.apply(ReportTask{Task: api.Task{ID: task.ID, Worker: w, Generation: gen, State: s, ContainerID: "c", StartTime: t0, FinishTime: t0.Add(time.Minute)}})
}

func liveIDs(f *FSM) []uuid.UUID {
	var ids []uuid.UUID
	for _, t := range f.LiveTasks() {
		ids = append(ids, t.ID)
	}
	return ids
}

// TestFSM_CollectGarbage names, for each way a task or worker can be, whether
// garbage collection may remove it, and checks Garbage and CollectGarbage
// agree with that.
func TestFSM_CollectGarbage(t *testing.T) {
	l := newLogger(t)
	l.apply(worker("w1"))
	l.apply(UpsertWorker{Node: api.Node{Name: "gone", State: api.NodeDead, Since: t0}})
	l.apply(UpsertWorker{Node: api.Node{Name: "left", State: api.NodeLeft, Since: t0}})
	l.apply(UpsertWorker{Node: api.Node{Name: "busy", State: api.NodeDead, Since: t0}})

	completed := l.placed("w1", nil)
	l.report(completed, "w1", 1, api.Completed)

	stopped := l.placed("w1", nil)
	l.apply(StopTask{ID: stopped.ID, Time: t0, Reason: "stopped on request"})
	l.report(stopped, "w1", 1, api.Completed)

	stopUnconfirmed := l.placed("w1", nil)
	l.apply(StopTask{ID: stopUnconfirmed.ID, Time: t0, Reason: "stopped on request"})

	neverPlaced := newTask()
	l.apply(SubmitTask{Task: neverPlaced, Time: t0})
	l.apply(StopTask{ID: neverPlaced.ID, Time: t0, Reason: "stopped on request"})

	failedToRestart := l.placed("w1", nil) // on-failure: the leader restarts it
	l.report(failedToRestart, "w1", 1, api.Failed)

	always := l.placed("w1", func(t *api.Task) { t.RestartPolicy = "always" })
	l.report(always, "w1", 1, api.Completed)

	givenUpEnded := l.placed("w1", nil)
	l.report(givenUpEnded, "w1", 1, api.Failed)
	l.apply(GiveUpTask{ID: givenUpEnded.ID, Reason: "limit", Time: t0})

	givenUpRunning := l.placed("w1", nil) // unhealthy at the limit: its container may run on
	l.apply(GiveUpTask{ID: givenUpRunning.ID, Reason: "limit", Time: t0})

	running := l.placed("w1", nil)
	onDead := l.placed("busy", nil) // a live task keeps its dead worker

	collectable := []uuid.UUID{completed.ID, stopped.ID, neverPlaced.ID, givenUpEnded.ID}
	keep := []uuid.UUID{stopUnconfirmed.ID, failedToRestart.ID, always.ID, givenUpRunning.ID, running.ID, onDead.ID}

	g := l.f.Garbage(time.Time{}, time.Time{})
	if !sameIDs(g.Tasks, collectable) || !slices.Equal(g.Workers, []string{"gone", "left"}) {
		t.Fatalf("Garbage = %v %v; want tasks %v and workers [gone left]", g.Tasks, g.Workers, collectable)
	}
	if !sameIDs(liveIDs(l.f), []uuid.UUID{stopUnconfirmed.ID, failedToRestart.ID, always.ID, running.ID, onDead.ID}) {
		t.Fatalf("LiveTasks = %v", liveIDs(l.f))
	}

	// Everything named, even what must stay: the FSM checks each again.
	all := append(append([]uuid.UUID{uuid.New()}, collectable...), keep...)
	res := l.apply(CollectGarbage{Tasks: all, Workers: []string{"gone", "left", "busy", "w1", "never-seen"}})
	if res.Err != nil || res.Collected != (api.GCResult{Tasks: len(collectable), Workers: 2}) || !res.Changed {
		t.Fatalf("CollectGarbage = %+v; want %d tasks and 2 workers", res, len(collectable))
	}
	for _, id := range collectable {
		if _, err := l.f.Task(id); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("task %s still stored after collection: %v", id, err)
		}
	}
	for _, id := range keep {
		if _, err := l.f.Task(id); err != nil {
			t.Fatalf("task %s collected although its container may run or it is to run again: %v", id, err)
		}
	}
	for name, want := range map[string]bool{"gone": false, "left": false, "busy": true, "w1": true} {
		if _, ok := l.f.Worker(name); ok != want {
			t.Fatalf("worker %s stored = %v after collection, want %v", name, ok, want)
		}
	}

	// The worker confirms the end of the container given up on: now it goes.
	if res := l.report(givenUpRunning, "w1", 1, api.Failed); res.Err != nil || !res.Changed {
		t.Fatalf("confirming report: %+v", res)
	}
	if g := l.f.Garbage(time.Time{}, time.Time{}); !sameIDs(g.Tasks, []uuid.UUID{givenUpRunning.ID}) {
		t.Fatalf("Garbage after the confirmation = %v, want only %s", g.Tasks, givenUpRunning.ID)
	}
	// A retried command is harmless.
	if res := l.apply(CollectGarbage{Tasks: collectable}); res.Err != nil || res.Changed || res.Collected != (api.GCResult{}) {
		t.Fatalf("repeated CollectGarbage = %+v, want a no-op", res)
	}
}

// TestFSM_Garbage_Cutoffs: a task's age runs from its FinishTime (its
// SubmitTime if it never ran), a worker's from Since; a zero cutoff takes
// everything, oldest first.
func TestFSM_Garbage_Cutoffs(t *testing.T) {
	l := newLogger(t)
	l.apply(worker("w1"))
	old := l.placed("w1", nil)
	l.apply(ReportTask{Task: api.Task{ID: old.ID, Worker: "w1", Generation: 1, State: api.Completed, ContainerID: "c", StartTime: t0, FinishTime: t0.Add(time.Hour)}})
	recent := l.placed("w1", nil)
	l.apply(ReportTask{Task: api.Task{ID: recent.ID, Worker: "w1", Generation: 1, State: api.Completed, ContainerID: "c", StartTime: t0, FinishTime: t0.Add(3 * time.Hour)}})
	unplaced := newTask()
	l.apply(SubmitTask{Task: unplaced, Time: t0.Add(2 * time.Hour)})
	l.apply(StopTask{ID: unplaced.ID, Time: t0.Add(2 * time.Hour)})
	l.apply(UpsertWorker{Node: api.Node{Name: "d1", State: api.NodeDead, Since: t0}})
	l.apply(UpsertWorker{Node: api.Node{Name: "d2", State: api.NodeDead, Since: t0.Add(2 * time.Hour)}})

	for _, tc := range []struct {
		name        string
		cut         time.Time
		wantTasks   []uuid.UUID
		wantWorkers []string
	}{
		{"zero takes all, oldest first", time.Time{}, []uuid.UUID{old.ID, unplaced.ID, recent.ID}, []string{"d1", "d2"}},
		{"before 2h30", t0.Add(150 * time.Minute), []uuid.UUID{old.ID, unplaced.ID}, []string{"d1", "d2"}},
		{"before 1h30", t0.Add(90 * time.Minute), []uuid.UUID{old.ID}, []string{"d1"}},
		{"before all", t0, nil, nil},
	} {
		g := l.f.Garbage(tc.cut, tc.cut)
		if !slices.Equal(g.Tasks, tc.wantTasks) || !slices.Equal(g.Workers, tc.wantWorkers) {
			t.Errorf("%s: Garbage = %v %v; want %v %v", tc.name, g.Tasks, g.Workers, tc.wantTasks, tc.wantWorkers)
		}
	}
}

// TestFSM_LiveIndex: LiveTasks follows every command (and a restore) and
// never holds a finished task; a restored FSM has the same live set.
func TestFSM_LiveIndex(t *testing.T) {
	l := newLogger(t)
	for _, cmd := range script(newTask()) {
		l.apply(cmd)
		checkLive(t, l.f)
	}
	a := l.placed("w1", nil)
	checkLive(t, l.f)
	l.report(a, "w1", 1, api.Completed)
	checkLive(t, l.f)

	// A task given up on while running stays out of the live set and,
	// unconfirmed, survives a snapshot as such.
	b := l.placed("w1", nil)
	l.apply(GiveUpTask{ID: b.ID, Reason: "limit", Time: t0})
	checkLive(t, l.f)
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(state(t, l.f)))); err != nil {
		t.Fatal(err)
	}
	if !g.Unconfirmed(b.ID) {
		t.Fatal("the unconfirmed mark was lost in the snapshot")
	}
	checkLive(t, g)
	if !sameIDs(liveIDs(g), liveIDs(l.f)) {
		t.Fatalf("restored live set %v, want %v", liveIDs(g), liveIDs(l.f))
	}
}

// checkLive compares LiveTasks with the tasks that are not Finished.
func checkLive(t *testing.T, f *FSM) {
	t.Helper()
	var want []uuid.UUID
	for _, task := range f.Tasks() {
		if !task.Finished() {
			want = append(want, task.ID)
		}
	}
	if got := liveIDs(f); !slices.Equal(got, want) {
		t.Fatalf("LiveTasks = %v, want the unfinished tasks %v", got, want)
	}
}

// TestFSM_SubmitQuota: at MaxTasks a new task is refused with ErrLimit and
// nothing changes; a resubmission still answers; collection makes room.
func TestFSM_SubmitQuota(t *testing.T) {
	l := newLogger(t)
	first, second := newTask(), newTask()
	if res := l.apply(SubmitTask{Task: first, Time: t0, MaxTasks: 1}); !res.Created {
		t.Fatalf("first submit: %+v", res)
	}
	res := l.apply(SubmitTask{Task: second, Time: t0, MaxTasks: 1})
	if !errors.Is(res.Err, api.ErrLimit) || res.Changed || api.StatusOf(res.Err) != 429 {
		t.Fatalf("submit over the quota: %+v; want ErrLimit (429), nothing changed", res)
	}
	if _, err := l.f.Task(second.ID); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("refused task stored: %v", err)
	}
	if res := l.apply(SubmitTask{Task: first, Time: t0, MaxTasks: 1}); res.Err != nil || res.Task.ID != first.ID {
		t.Fatalf("resubmission at the quota: %+v", res)
	}
	l.apply(StopTask{ID: first.ID, Time: t0})
	l.apply(CollectGarbage{Tasks: []uuid.UUID{first.ID}})
	if res := l.apply(SubmitTask{Task: second, Time: t0, MaxTasks: 1}); !res.Created {
		t.Fatalf("submit after collection: %+v", res)
	}
}

// TestFSM_Submit_ResetsClusterFields: what only the cluster may set is
// reset on submission, LastWorker included.
func TestFSM_Submit_ResetsClusterFields(t *testing.T) {
	l := newLogger(t)
	task := newTask()
	task.LastWorker, task.Worker, task.Reason, task.ContainerID = "w9", "w8", "why", "c"
	res := l.apply(SubmitTask{Task: task, Time: t0})
	if got := res.Task; got.LastWorker != "" || got.Worker != "" || got.Reason != "" || got.ContainerID != "" {
		t.Fatalf("stored %+v; want LastWorker, Worker, Reason and ContainerID empty", got)
	}
}

// TestFSM_Nodes_NoOverflow: allocations near 2^63 saturate, never wrap to
// a negative number.
func TestFSM_Nodes_NoOverflow(t *testing.T) {
	l := newLogger(t)
	l.apply(worker("w1"))
	for range 3 {
		l.placed("w1", func(t *api.Task) { t.Memory, t.Disk = math.MaxInt64/2, math.MaxInt64/2 })
	}
	n := l.f.Nodes()[0]
	if n.AllocatedMemory != math.MaxInt64 || n.AllocatedDisk != math.MaxInt64 || n.TaskCount != 3 {
		t.Fatalf("allocation %d / %d bytes, %d tasks; want saturated at MaxInt64, 3 tasks", n.AllocatedMemory, n.AllocatedDisk, n.TaskCount)
	}
}

func sameIDs(a, b []uuid.UUID) bool {
	key := func(ids []uuid.UUID) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = id.String()
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

package manager

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// TestGC_Periodic: the periodic collection removes the finished tasks older
// than TaskGCThreshold and the workers departed longer than
// WorkerGCThreshold, and nothing that could still run.
func TestGC_Periodic(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TaskGCThreshold, c.WorkerGCThreshold = time.Hour, 2*time.Hour })
	h.worker("w1")
	now := time.Now().UTC()
	old := h.placed("old", "w1", 1, api.Running, nil)
	h.seed(fsm.ReportTask{Task: finished(old, now.Add(-90*time.Minute))})
	recent := h.placed("recent", "w1", 1, api.Running, nil)
	h.seed(fsm.ReportTask{Task: finished(recent, now.Add(-30*time.Minute))})
	h.placed("running", "w1", 1, api.Running, nil)
	stopping := h.placed("stopping", "w1", 1, api.Running, nil)
	h.seed(fsm.StopTask{ID: stopping.ID, Time: now.Add(-3 * time.Hour)})
	h.seed(fsm.UpsertWorker{Node: api.Node{Name: "gone", State: api.NodeDead, Since: now.Add(-3 * time.Hour)}})
	h.seed(fsm.UpsertWorker{Node: api.Node{Name: "just-gone", State: api.NodeDead, Since: now.Add(-time.Hour)}})

	h.m.collectDue(h.ctx, now)
	for name, want := range map[string]bool{"old": false, "recent": true, "running": true, "stopping": true} {
		if _, err := h.f.Task(h.id(name)); (err == nil) != want {
			t.Errorf("task %s stored = %v after the periodic collection, want %v (%v)", name, err == nil, want, err)
		}
	}
	for name, want := range map[string]bool{"gone": false, "just-gone": true, "w1": true} {
		if _, ok := h.f.Worker(name); ok != want {
			t.Errorf("worker %s stored = %v after the periodic collection, want %v", name, ok, want)
		}
	}
}

// finished is a worker's report that t's container completed at end.
func finished(t api.Task, end time.Time) api.Task {
	t.State, t.FinishTime, t.ExitCode = api.Completed, end, 0
	return t
}

// TestGC_ForcedWaitsForAConfirmedStop: a task given up on while its
// container runs is kept by every collection, forced ones included, until
// the worker's record shows the container ended: the leader's poll stops the
// copy, the next poll commits the worker's word, and then it goes.
func TestGC_ForcedWaitsForAConfirmedStop(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.placed("t1", "w1", 1, api.Running, nil)
	h.seed(fsm.GiveUpTask{ID: h.id("t1"), Reason: "gave up after 3 restarts: unhealthy", Time: time.Now().UTC()})

	gc := func() api.GCResult {
		t.Helper()
		res, err := h.m.CollectGarbage(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := gc(); res.Tasks != 0 {
		t.Fatalf("forced collection removed %d tasks while the container may run", res.Tasks)
	}
	h.reset()
	h.poll()
	if calls := h.calls(); !same(calls, []string{"w1 list", "w1 stop t1 upto 1"}) {
		t.Fatalf("first poll: calls %q; want the copy stopped", calls)
	}
	if res := gc(); res.Tasks != 0 {
		t.Fatal("collected before the worker's record was read again")
	}
	h.reset()
	h.poll()
	if cmds := h.commands(); !same(cmds, []string{"report t1 w1 gen 1 Completed"}) {
		t.Fatalf("second poll: commands %q; want the worker's word committed", cmds)
	}
	if res := gc(); res.Tasks != 1 {
		t.Fatalf("forced collection after the confirmed stop: %+v, want 1 task", res)
	}
	if _, err := h.f.Task(h.id("t1")); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("t1 still stored: %v", err)
	}
}

// TestGC_DepartedWorkerNotRecordedAgain: gossip remembers a dead member
// for a while; once collected (or never known), the leader does not record
// it again, while a known worker's death is still recorded.
func TestGC_DepartedWorkerNotRecordedAgain(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.worker("w2")
	h.gossipState("w2", cluster.StateDead)
	h.pass()
	if n, _ := h.f.Worker("w2"); n.State != api.NodeDead {
		t.Fatalf("w2 recorded as %q, want dead", n.State)
	}
	if res, err := h.m.CollectGarbage(h.ctx); err != nil || res.Workers != 1 {
		t.Fatalf("CollectGarbage = %+v, %v; want w2 removed", res, err)
	}
	h.reset()
	h.pass()
	if _, ok := h.f.Worker("w2"); ok {
		t.Fatalf("the collected worker was recorded again: %q", h.commands())
	}
	h.gossipState("w2", cluster.StateAlive) // back: recorded again
	h.pass()
	if n, ok := h.f.Worker("w2"); !ok || n.State != api.NodeAlive {
		t.Fatalf("w2 back alive: recorded %v %q", ok, n.State)
	}
}

// TestGC_NotLeader: only the leader collects.
func TestGC_NotLeader(t *testing.T) {
	h := newHarness(t, nil)
	h.raft.mu.Lock()
	h.raft.leader = false
	h.raft.mu.Unlock()
	if _, err := h.m.CollectGarbage(h.ctx); !errors.Is(err, api.ErrNotLeader) {
		t.Fatalf("CollectGarbage on a follower: %v, want ErrNotLeader", err)
	}
}

// TestSubmitTask_Quota: the MaxTasks-th task is the last accepted; the next
// is refused with ErrLimit (429) naming the setting, and nothing is stored.
func TestSubmitTask_Quota(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxTasks = 2 })
	for i := range 2 {
		if _, _, err := h.m.SubmitTask(h.ctx, api.TaskEvent{Task: api.Task{Image: "cube-echo:latest"}}); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	_, _, err := h.m.SubmitTask(h.ctx, api.TaskEvent{Task: api.Task{Image: "cube-echo:latest"}})
	if !errors.Is(err, api.ErrLimit) || api.StatusOf(err) != 429 || !strings.Contains(err.Error(), "max_tasks") {
		t.Fatalf("submit over the quota: %v; want ErrLimit (429) naming max_tasks", err)
	}
	if n := len(h.f.Tasks()); n != 2 {
		t.Fatalf("%d tasks stored, want 2", n)
	}
}

// TestReportTask_Bounded: a report with an oversized field is refused
// before it reaches the log.
func TestReportTask_Bounded(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	rec := h.placed("t1", "w1", 1, api.Running, nil)
	h.reset()
	rec.Reason = strings.Repeat("x", 1<<20)
	var verr *api.ValidationError
	if err := h.m.ReportTask(h.ctx, rec); !errors.As(err, &verr) {
		t.Fatalf("report with a 1 MiB Reason: %v, want a ValidationError", err)
	}
	if cmds := h.commands(); len(cmds) != 0 {
		t.Fatalf("commands %q, want none", cmds)
	}
}

// TestHistory_StaysOutOfTheLog: a submission or a report that carries
// Healthy and a History (a task copied from GET /tasks, a worker's record)
// reaches the log without them, so a command is no larger than before
// History existed; the stored task keeps its own.
func TestHistory_StaysOutOfTheLog(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	full := make([]api.TaskTransition, api.MaxTaskHistory)
	for i := range full {
		full[i] = api.TaskTransition{State: api.Failed, Reason: strings.Repeat("x", 1000)}
	}
	task, _, err := h.m.SubmitTask(h.ctx, api.TaskEvent{Task: api.Task{Image: "cube-echo:latest", Healthy: true, History: full}})
	if err != nil {
		t.Fatal(err)
	}
	h.seed(fsm.AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: time.Now().UTC()})
	rec, _ := h.f.Task(task.ID)
	rec.State, rec.ContainerID, rec.Healthy, rec.History = api.Running, "c1", true, full
	if err := h.m.ReportTask(h.ctx, rec); err != nil {
		t.Fatal(err)
	}
	h.raft.mu.Lock()
	applied := append([]any(nil), h.raft.applied...)
	h.raft.mu.Unlock()
	for _, c := range applied {
		var in api.Task
		switch c := c.(type) {
		case fsm.SubmitTask:
			in = c.Task
		case fsm.ReportTask:
			in = c.Task
			if c.Time.IsZero() {
				t.Errorf("report committed without the leader's time: %+v", c)
			}
		default:
			continue
		}
		if in.Healthy || in.History != nil {
			t.Errorf("%T reached the log with Healthy %v and %d History entries", c, in.Healthy, len(in.History))
		}
	}
	got, _ := h.f.Task(task.ID)
	if got.Healthy || len(got.History) != 3 || got.History[0].Reason != "submitted" || got.History[2].State != api.Running {
		t.Fatalf("stored task: Healthy %v, History %+v; want its own three entries", got.Healthy, got.History)
	}
}

// TestChanges_StreamCap: at most MaxEventStreams at once; one more gets
// ErrLimit (429); a closed stream frees its place.
func TestChanges_StreamCap(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEventStreams = 2 })
	t.Cleanup(h.m.Shutdown)
	ctx1, cancel1 := context.WithCancel(h.ctx)
	ch1, _, err := h.m.Changes(ctx1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.m.Changes(h.ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.m.Changes(h.ctx, nil); !errors.Is(err, api.ErrLimit) || api.StatusOf(err) != 429 {
		t.Fatalf("third stream: %v, want ErrLimit (429)", err)
	}
	cancel1()
	for range ch1 {
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ch, _, err := h.m.Changes(h.ctx, nil)
		if err == nil {
			_ = ch
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream did not free its place: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestChanges_ResumeAfter: a stream from a position starts after it (and
// says so); one from a position the feed no longer holds is refused with a
// *api.GapError (410) and takes no place among the streams.
func TestChanges_ResumeAfter(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEventStreams = 1 })
	t.Cleanup(h.m.Shutdown)
	var ids []uuid.UUID
	for i := range fsm.DefaultFeedSize + 3 {
		id := h.id(fmt.Sprint("resume-", i))
		ids = append(ids, id)
		if _, err := h.m.apply(h.ctx, fsm.SubmitTask{Task: api.Task{ID: id, Image: "x"}, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := h.m.Changes(h.ctx, &api.Position{Index: 1, Seq: 0})
	var gap *api.GapError
	if !errors.As(err, &gap) || api.StatusOf(err) != 410 {
		t.Fatalf("after 1.0, long evicted: %v, want a GapError (410)", err)
	}
	// The refusal freed its place: the one stream allowed still opens.
	last := h.m.fsm.AppliedIndex()
	after := api.Position{Index: last - 1, Seq: 0}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	ch, start, err := h.m.Changes(ctx, &after)
	if err != nil || start != after {
		t.Fatalf("after %s: start %s, %v", after, start, err)
	}
	select {
	case c := <-ch:
		if c.Position() != (api.Position{Index: last}) || c.Task.ID != ids[len(ids)-1] {
			t.Fatalf("first change after %s: %+v, want the last submission at %d.0", after, c, last)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no change streamed")
	}
}

// TestChanges_SlowReaderDroppedAndTold: a stream whose reader stops reading
// never holds up Apply; once it is further behind than the feed keeps, its
// last change says why and the channel closes.
func TestChanges_SlowReaderDroppedAndTold(t *testing.T) {
	h := newHarness(t, nil)
	t.Cleanup(h.m.Shutdown)
	ch, _, err := h.m.Changes(h.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range fsm.DefaultFeedSize + 10 {
		if _, err := h.m.apply(h.ctx, fsm.SubmitTask{Task: api.Task{ID: h.id(time.Now().String()), Image: "x"}, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	var last api.Change
	n := 0
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case c, ok := <-ch:
			if !ok {
				done = true
				break
			}
			last = c
			n++
		case <-timeout:
			t.Fatalf("stream neither dropped nor closed after %d changes", n)
		}
	}
	if !strings.Contains(last.Error, "fell behind") || n > 2 {
		t.Fatalf("after %d changes the last was %+v; want at most one change, then a drop that says it fell behind", n, last)
	}
}

// TestFits_NoOverflow: sizes near 2^63 never wrap around into room.
func TestFits_NoOverflow(t *testing.T) {
	n := api.Node{Name: "w1", State: api.NodeAlive, RuntimeAvailable: true, Memory: 1 << 30, Disk: 1 << 30,
		AllocatedMemory: math.MaxInt64 - 10, AllocatedDisk: 0}
	if fits(&api.Task{Memory: 100}, &n) {
		t.Fatal("a task fits a worker whose allocation is near 2^63")
	}
	n.AllocatedMemory, n.AllocatedDisk = 0, 10
	if fits(&api.Task{Disk: math.MaxInt64 - 5}, &n) {
		t.Fatal("a task of disk near 2^63 fits")
	}
	nodes := []api.Node{n}
	allocate(nodes, "w1", api.Task{Memory: math.MaxInt64})
	allocate(nodes, "w1", api.Task{Memory: math.MaxInt64})
	if nodes[0].AllocatedMemory != math.MaxInt64 {
		t.Fatalf("allocation %d, want saturated at MaxInt64", nodes[0].AllocatedMemory)
	}
}

// TestGC_PollIgnoresEndedRecordsOfCollectedTasks: a worker keeps the record
// of an ended task a while (KeepEnded); once the task is collected, the
// poll neither stops anything nor pays a consistent read for it.
func TestGC_PollIgnoresEndedRecordsOfCollectedTasks(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.placed("t1", "w1", 1, api.Failed, func(t *api.Task) { t.RestartPolicy = "no" })
	h.seed(fsm.GiveUpTask{ID: h.id("t1"), Reason: "policy no", Time: time.Now().UTC()})
	if res, err := h.m.CollectGarbage(h.ctx); err != nil || res.Tasks != 1 {
		t.Fatalf("CollectGarbage = %+v, %v; want t1 collected", res, err)
	}
	h.reset()
	h.poll()
	if calls, cmds := h.calls(), h.commands(); !same(calls, []string{"w1 list"}) || len(cmds) != 0 {
		t.Fatalf("poll: calls %q, commands %q; want the listing only", calls, cmds)
	}
	if err := wantReads(0)(h); err != nil {
		t.Fatal(err)
	}
}

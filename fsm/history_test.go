package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cube-orch/cube/api"
)

// entry is the part of a History entry the tests compare.
type entry struct {
	at       time.Duration // after t0
	state    api.State
	desired  api.State
	worker   string
	restarts int
	healthy  bool
	reason   string
}

func entriesOf(h []api.TaskTransition) []entry {
	out := make([]entry, len(h))
	for i, e := range h {
		out[i] = entry{e.Time.Sub(t0), e.State, e.DesiredState, e.Worker, e.RestartCount, e.Healthy, e.Reason}
	}
	return out
}

// A task's life, command by command: each change of state, worker,
// restarts, desired state or health is one entry, at the time the command
// carries (never the applying manager's clock); a note on a Pending task
// rewrites the newest entry's reason; what changes nothing adds nothing.
func TestFSM_History_RecordsTransitions(t *testing.T) {
	f := New()
	task := newTask()
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	gen1 := api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "c1", StartTime: sec(3)}
	failed := gen1
	failed.State, failed.ExitCode, failed.Reason, failed.FinishTime = api.Failed, 1, "exited with code 1", sec(6)
	gen2 := api.Task{ID: task.ID, Worker: "w2", Generation: 2, State: api.Running, ContainerID: "c2", StartTime: sec(8)}
	done := gen2
	done.State, done.Reason, done.FinishTime = api.Completed, "stopped on request", sec(10)
	log := []any{
		worker("w1"), worker("w2"),
		SubmitTask{Task: task, Time: sec(0)},
		PendingNote{ID: task.ID, Reason: "no worker has 64 MiB free", Time: sec(1)},
		AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: sec(2)},
		ReportTask{Task: gen1, Time: sec(3)},
		ReportTask{Task: gen1, Time: sec(4)}, // the same again: nothing new
		SetHealth{ID: task.ID, Generation: 1, Healthy: true, Time: sec(5)},
		SetHealth{ID: task.ID, Generation: 1, Healthy: true, Time: sec(5)}, // a new leader's first verdict: nothing new
		ReportTask{Task: failed, Time: sec(6)},
		RestartTask{ID: task.ID, Worker: "w2", Generation: 2, Counted: true, Reason: "restarted after: exited with code 1", Time: sec(7)},
		SetHealth{ID: task.ID, Generation: 1, Healthy: true, Time: sec(7)}, // about the old placement: ignored
		ReportTask{Task: gen2, Time: sec(8)},
		StopTask{ID: task.ID, Time: sec(9), Reason: "stopped on request"},
		ReportTask{Task: done}, // an entry written before reports had a Time: the worker's FinishTime
	}
	var res *Result
	for i, cmd := range log {
		res = applyLog(t, f, uint64(i+1), cmd)
		if res.Err != nil {
			t.Fatalf("command %d %T: %v", i+1, cmd, res.Err)
		}
	}
	want := []entry{
		{0, api.Pending, api.Running, "", 0, false, "no worker has 64 MiB free"},
		{2 * time.Second, api.Scheduled, api.Running, "w1", 0, false, ""},
		{3 * time.Second, api.Running, api.Running, "w1", 0, false, ""},
		{5 * time.Second, api.Running, api.Running, "w1", 0, true, "passed its health check"},
		{6 * time.Second, api.Failed, api.Running, "w1", 0, false, "exited with code 1"},
		{7 * time.Second, api.Scheduled, api.Running, "w2", 1, false, "restarted after: exited with code 1"},
		{8 * time.Second, api.Running, api.Running, "w2", 1, false, ""},
		{9 * time.Second, api.Running, api.Completed, "w2", 1, false, "stop requested"},
		{10 * time.Second, api.Completed, api.Completed, "w2", 1, false, "stopped on request"},
	}
	got, _ := f.Task(task.ID)
	if g := entriesOf(got.History); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("History:\n got %v\nwant %v", g, want)
	}
	if fmt.Sprint(entriesOf(res.Task.History)) != fmt.Sprint(want) {
		t.Fatalf("the Result's task carries another History than the stored one:\n%v", entriesOf(res.Task.History))
	}
	if e := got.History[4]; e.ExitCode != 1 || e.Generation != 1 {
		t.Fatalf("the failure's entry: %+v, want exit code 1 at generation 1", e)
	}
}

// Healthy holds for the placement whose check passed, while it runs: a
// report that it ended, a restart, a requeue and a give-up clear it, and a
// failed verdict clears it with the check's reason in the History.
func TestFSM_SetHealth(t *testing.T) {
	f := New()
	task := newTask()
	task.HealthCheck = "/health"
	applyLog(t, f, 1, worker("w1"))
	applyLog(t, f, 2, SubmitTask{Task: task, Time: t0})
	if res := applyLog(t, f, 3, SetHealth{ID: task.ID, Generation: 0, Healthy: true, Time: t0}); res.Changed || res.Task.Healthy {
		t.Fatalf("a verdict on a Pending task: %+v", res)
	}
	applyLog(t, f, 4, AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: t0})
	running := api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "c1", StartTime: t0}
	applyLog(t, f, 5, ReportTask{Task: running, Time: t0})
	if res := applyLog(t, f, 6, SetHealth{ID: task.ID, Generation: 1, Healthy: true, Time: t0}); !res.Changed || !res.Task.Healthy {
		t.Fatalf("healthy verdict: %+v", res)
	}
	moved := running
	moved.HostPorts = api.PortMap{"7777/tcp": {{HostPort: "1"}}}
	if res := applyLog(t, f, 7, ReportTask{Task: moved, Time: t0}); !res.Task.Healthy {
		t.Fatalf("a report of the same Running container cleared Healthy: %+v", res.Task)
	}
	res := applyLog(t, f, 8, SetHealth{ID: task.ID, Generation: 1, Healthy: false, Reason: "GET /health returned 500", Time: t0})
	if !res.Changed || res.Task.Healthy || res.Task.Reason != "" {
		t.Fatalf("unhealthy verdict: %+v (the task's own Reason stays the worker's)", res)
	}
	if last := res.Task.History[len(res.Task.History)-1]; last.Reason != "health check failed: GET /health returned 500" || last.Healthy {
		t.Fatalf("History after the unhealthy verdict ends in %+v", last)
	}
	applyLog(t, f, 9, SetHealth{ID: task.ID, Generation: 1, Healthy: true, Time: t0})
	ended := running
	ended.State, ended.FinishTime = api.Failed, t0
	if res := applyLog(t, f, 10, ReportTask{Task: ended, Time: t0}); res.Task.Healthy {
		t.Fatalf("Healthy after the container ended: %+v", res.Task)
	}
	idx := uint64(11)
	next := func(cmd any) *Result {
		idx++
		return applyLog(t, f, idx, cmd)
	}
	healthyAt := func(gen uint64) {
		t.Helper()
		next(ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: gen, State: api.Running, ContainerID: "c"}, Time: t0})
		if res := next(SetHealth{ID: task.ID, Generation: gen, Healthy: true, Time: t0}); !res.Task.Healthy {
			t.Fatalf("not healthy at generation %d: %+v", gen, res)
		}
	}
	for _, step := range []struct {
		cmd   any
		after func()
	}{
		{RestartTask{ID: task.ID, Worker: "w1", Generation: 2, Counted: true, Time: t0}, func() { healthyAt(2) }},
		{RestartTask{ID: task.ID, Worker: "w1", Generation: 3, Counted: true, Time: t0}, func() {
			next(AssignTask{ID: task.ID, Worker: "w1", Generation: 4, Time: t0})
			healthyAt(4)
		}},
		{RequeueTask{ID: task.ID, Reason: "worker w1 died", Time: t0}, nil},
		{GiveUpTask{ID: task.ID, Reason: "gave up", Time: t0}, nil},
	} {
		if step.cmd == nil {
			continue
		}
		res := next(step.cmd)
		if res.Err != nil || res.Task.Healthy {
			t.Fatalf("%T: %v, Healthy %v; want it cleared", step.cmd, res.Err, res.Task.Healthy)
		}
		if step.after != nil {
			step.after()
		}
	}
}

// The History keeps the newest MaxTaskHistory entries, and an entry's
// reason at most MaxTransitionReason bytes, cut on a character boundary:
// a task restarted for ever stays a few kilobytes.
func TestFSM_History_Bounded(t *testing.T) {
	f := New()
	task := newTask()
	applyLog(t, f, 1, UpsertWorker{Node: api.Node{Name: strings.Repeat("w", 256), State: api.NodeAlive}})
	applyLog(t, f, 2, SubmitTask{Task: task, Time: t0})
	long := "restarted after: " + strings.Repeat("é", 4096)
	idx := uint64(3)
	for gen := uint64(1); gen <= 40; gen++ {
		res := applyLog(t, f, idx, RestartTask{ID: task.ID, Worker: strings.Repeat("w", 256), Generation: gen, Counted: true, Reason: long, Time: t0.Add(time.Duration(gen) * time.Second)})
		if res.Err != nil && gen > 1 {
			t.Fatalf("restart %d: %v", gen, res.Err)
		}
		if gen == 1 {
			applyLog(t, f, idx+1, AssignTask{ID: task.ID, Worker: strings.Repeat("w", 256), Generation: gen, Time: t0})
		}
		idx += 2
	}
	got, _ := f.Task(task.ID)
	if len(got.History) != api.MaxTaskHistory {
		t.Fatalf("%d entries, want %d", len(got.History), api.MaxTaskHistory)
	}
	if last := got.History[len(got.History)-1]; last.Generation != 40 || !last.Time.Equal(t0.Add(40*time.Second)) {
		t.Fatalf("newest entry %+v, want generation 40", last)
	}
	for i, e := range got.History {
		if len(e.Reason) > api.MaxTransitionReason || !utf8.ValidString(e.Reason) || !strings.HasSuffix(e.Reason, "…") {
			t.Fatalf("entry %d: reason of %d bytes, valid UTF-8 %v: %q", i, len(e.Reason), utf8.ValidString(e.Reason), e.Reason)
		}
		if i > 0 && e.Generation != got.History[i-1].Generation+1 {
			t.Fatalf("entries out of order: %d after %d", e.Generation, got.History[i-1].Generation)
		}
	}
	// A History with every bound reached (entries, worker names, reasons)
	// adds at most 16 KiB of JSON to its task, in the state and in the
	// change feed.
	b, _ := json.Marshal(got.History)
	if len(b) > 16<<10 {
		t.Fatalf("a full History encodes to %d bytes", len(b))
	}
	t.Logf("a full History of the longest entries: %d bytes of JSON", len(b))
}

// A submission's Healthy and History (a task copied from GET /tasks) are
// the cluster's: the stored task starts its own.
func TestFSM_Submit_ResetsHistory(t *testing.T) {
	f := New()
	task := newTask()
	task.Healthy = true
	task.History = []api.TaskTransition{{Time: t0.Add(-time.Hour), State: api.Failed, Reason: "from elsewhere"}}
	res := applyLog(t, f, 1, SubmitTask{Task: task, Time: t0})
	want := []api.TaskTransition{{Time: t0, State: api.Pending, DesiredState: api.Running, Reason: "submitted"}}
	if res.Task.Healthy || fmt.Sprint(res.Task.History) != fmt.Sprint(want) {
		t.Fatalf("submitted task: Healthy %v, History %+v; want %+v", res.Task.Healthy, res.Task.History, want)
	}
	svc := ServiceTemplate(api.Service{Task: task})
	if svc.Healthy || svc.History != nil {
		t.Fatalf("a service template keeps Healthy %v, History %+v", svc.Healthy, svc.History)
	}
}

// A snapshot written before History existed (version 2, recorded) restores
// with its tasks as they were; the next change of such a task starts its
// History, and a snapshot taken then carries it through a restore.
func TestFSM_Restore_BeforeHistory(t *testing.T) {
	const v2 = `{"Version":2,"Tasks":[{"ID":"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f","Name":"echo","Image":"cube-echo:latest","State":2,"DesiredState":2,"Worker":"w1","Generation":3,"ContainerID":"c1"}],` +
		`"Workers":[{"Name":"w1","API":"127.0.0.1:5555","State":"alive","Cpu":2}]}` + "\n"
	f := New()
	if err := f.Restore(io.NopCloser(strings.NewReader(v2))); err != nil {
		t.Fatal(err)
	}
	task, err := f.Task(wireID)
	if err != nil || task.Generation != 3 || task.History != nil || task.Healthy {
		t.Fatalf("task from a snapshot without History: %+v, %v", task, err)
	}
	res := applyLog(t, f, 10, StopTask{ID: wireID, Time: t0, Reason: "stopped on request"})
	want := []api.TaskTransition{{Time: t0, State: api.Running, DesiredState: api.Completed, Worker: "w1", Generation: 3, Reason: "stop requested"}}
	if res.Err != nil || fmt.Sprint(res.Task.History) != fmt.Sprint(want) {
		t.Fatalf("first change after the restore: %+v, History %+v; want %+v", res.Err, res.Task.History, want)
	}
	data := state(t, f)
	again := New()
	if err := again.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got, _ := again.Task(wireID); fmt.Sprint(got.History) != fmt.Sprint(want) {
		t.Fatalf("History through a snapshot: %+v, want %+v", got.History, want)
	}
	if !bytes.Contains(data, []byte(`"Version":2,`)) {
		t.Fatalf("a state without services should still be written as version 2 (History needs no new version: older managers ignore the field):\n%.200s", data)
	}
}

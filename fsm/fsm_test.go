package fsm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// applyLog writes cmd through Encode and Apply, as raft would.
func applyLog(t *testing.T, f *FSM, index uint64, cmd any) *Result {
	t.Helper()
	data, err := Encode(cmd)
	if err != nil {
		t.Fatalf("encode %T: %v", cmd, err)
	}
	res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*Result)
	if !ok {
		t.Fatalf("apply %T: result is not *Result", cmd)
	}
	return res
}

func worker(name string) UpsertWorker {
	return UpsertWorker{Node: api.Node{Name: name, API: "127.0.0.1:5555", State: api.NodeAlive, Since: t0, RuntimeAvailable: true, Cpu: 2, Memory: 1 << 30, Disk: 10 << 30}}
}

func newTask() api.Task {
	return api.Task{ID: uuid.New(), Name: "echo", Image: "cube-echo:latest", Memory: 64 << 20, Cpu: 0.5, Disk: 1 << 20}
}

// script is a log that exercises every command.
func script(task api.Task) []any {
	other := newTask()
	boot := uuid.New()
	return []any{
		worker("w1"),
		worker("w2"),
		SubmitTask{Task: task, Time: t0},
		SubmitTask{Task: other, Time: t0.Add(time.Second)},
		PendingNote{ID: other.ID, Reason: "no worker has 64 MiB free"},
		AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: t0},
		ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "c1", StartTime: t0}},
		SetHealth{ID: task.ID, Generation: 1, Healthy: true, Time: t0.Add(time.Second)},
		SetHealth{ID: task.ID, Generation: 1, Healthy: false, Reason: "GET /health returned 500", Time: t0.Add(2 * time.Second)},
		StopTask{ID: other.ID, Time: t0.Add(2 * time.Second), Reason: "stopped on request"},
		RestartTask{ID: task.ID, Worker: "w2", Generation: 2, Counted: true, Reason: "restart", Time: t0},
		ReportTasks{Tasks: []api.Task{
			{ID: task.ID, Worker: "w2", Generation: 2, State: api.Running, ContainerID: "c2", StartTime: t0},
			{ID: other.ID, Worker: "w9", Generation: 7, State: api.Running}, // stale: skipped
		}, Time: t0},
		RequeueTask{ID: task.ID, Reason: "worker w2 died", Time: t0},
		AssignTasks{Assigns: []AssignTask{
			{ID: task.ID, Worker: "w1", Generation: 3, Time: t0},
			{ID: other.ID, Worker: "w1", Generation: 1, Time: t0}, // stopped: refused, the rest applies
		}},
		StopTask{ID: task.ID, Time: t0.Add(3 * time.Second), Reason: "stopped on request"},
		ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 3, State: api.Completed, ContainerID: "c1", Reason: "stopped on request", StartTime: t0, FinishTime: t0.Add(4 * time.Second)}},
		GiveUpTask{ID: other.ID, Reason: "x", Time: t0},
		DrainWorker{Name: "w2", Drain: true},
		BootstrapToken{AccessorID: boot, Hash: hashOf("cube_boot"), CreateTime: t0},
		CreateToken{AccessorID: uuid.New(), Name: "ci", Role: api.RoleSubmit, Hash: hashOf("cube_ci"), CreateTime: t0.Add(time.Second)},
		CreateToken{AccessorID: uuid.New(), Name: "dash", Role: api.RoleRead, Hash: hashOf("cube_dash"), CreateTime: t0.Add(time.Second)},
		DeleteToken{AccessorID: boot},
		BootstrapToken{AccessorID: uuid.New(), Hash: hashOf("cube_boot2"), CreateTime: t0}, // a no-op: tokens were stored
		UpsertWorker{Node: api.Node{Name: "w3", State: api.NodeDead, Since: t0}},
		CollectGarbage{Tasks: []uuid.UUID{other.ID, task.ID}, Workers: []string{"w3"}},
		PutService{Service: api.Service{Name: "web", Count: 2, Task: api.Task{Image: "cube-echo:latest"}}, Mode: PutCreate, Time: t0, By: "ci"},
		PutService{Service: api.Service{Name: "web", Count: 3, Task: api.Task{Image: "cube-echo:2"}}, Time: t0.Add(time.Second)},
		SetRollout{Name: "web", Expect: 2, Healthy: 1, Rollout: &api.Rollout{From: 1, To: 2, State: api.RolloutCompleted, Replaced: 2, StartTime: t0, UpdateTime: t0}, Time: t0},
		PutService{Service: api.Service{Name: "gone", Task: api.Task{Image: "cube-echo:latest"}}, Time: t0},
		DeleteService{Name: "gone", Time: t0},
	}
}

func TestFSM_Apply_Commands(t *testing.T) {
	f := New()
	task := newTask()
	applyLog(t, f, 1, worker("w1"))

	// Submit: Pending, desired Running; a second submit creates nothing.
	res := applyLog(t, f, 2, SubmitTask{Task: task, Time: t0})
	if res.Err != nil || !res.Created || res.Task.State != api.Pending || res.Task.DesiredState != api.Running || !res.Task.SubmitTime.Equal(t0) {
		t.Fatalf("submit: %+v", res)
	}
	dup := task
	dup.Image = "other:latest"
	if res := applyLog(t, f, 3, SubmitTask{Task: dup, Time: t0.Add(time.Hour)}); res.Err != nil || res.Created || res.Changed || res.Task.Image != task.Image {
		t.Fatalf("resubmit: %+v", res)
	}

	// PendingNote only while Pending.
	if res := applyLog(t, f, 4, PendingNote{ID: task.ID, Reason: "fits nowhere"}); res.Task.Reason != "fits nowhere" {
		t.Fatalf("pending note: %+v", res)
	}

	// Assign: needs a known worker and a higher generation.
	if res := applyLog(t, f, 5, AssignTask{ID: task.ID, Worker: "nope", Generation: 1}); !errors.Is(res.Err, api.ErrNotFound) {
		t.Fatalf("assign to unknown worker: %v", res.Err)
	}
	res = applyLog(t, f, 6, AssignTask{ID: task.ID, Worker: "w1", Generation: 1})
	if res.Err != nil || res.Task.State != api.Scheduled || res.Task.Worker != "w1" || res.Task.Generation != 1 || res.Task.Reason != "" {
		t.Fatalf("assign: %+v", res)
	}
	if res := applyLog(t, f, 7, AssignTask{ID: task.ID, Worker: "w1", Generation: 1}); !errors.Is(res.Err, api.ErrStaleGeneration) {
		t.Fatalf("assign at the same generation: %v", res.Err)
	}

	// Report: fenced by worker and generation; duplicates change nothing.
	running := api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "c1", StartTime: t0,
		HostPorts: api.PortMap{"7777/tcp": {{HostIp: "0.0.0.0", HostPort: "32768"}}}}
	if res := applyLog(t, f, 8, ReportTask{Task: running}); res.Err != nil || !res.Changed || res.Task.State != api.Running || res.Task.ContainerID != "c1" {
		t.Fatalf("report running: %+v", res)
	}
	if res := applyLog(t, f, 9, ReportTask{Task: running}); res.Err != nil || res.Changed {
		t.Fatalf("duplicate report: %+v", res)
	}
	stale := running
	stale.Generation = 0
	stale.State = api.Failed
	if res := applyLog(t, f, 10, ReportTask{Task: stale}); !errors.Is(res.Err, api.ErrStaleGeneration) {
		t.Fatalf("stale report: %v", res.Err)
	}
	elsewhere := running
	elsewhere.Worker = "w2"
	if res := applyLog(t, f, 11, ReportTask{Task: elsewhere}); !errors.Is(res.Err, api.ErrStaleGeneration) {
		t.Fatalf("report from another worker: %v", res.Err)
	}
	if got, _ := f.Task(task.ID); got.State != api.Running {
		t.Fatalf("fenced reports changed the task: %+v", got)
	}

	// Allocation is derived from placed tasks.
	nodes := f.Nodes()
	if len(nodes) != 1 || nodes[0].TaskCount != 1 || nodes[0].AllocatedMemory != task.Memory || nodes[0].AllocatedCpu != task.Cpu {
		t.Fatalf("nodes: %+v", nodes)
	}

	// Stop: desired Completed; the state follows the worker's confirmation.
	res = applyLog(t, f, 12, StopTask{ID: task.ID, Time: t0, Reason: "stopped on request"})
	if res.Err != nil || res.Task.DesiredState != api.Completed || res.Task.State != api.Running {
		t.Fatalf("stop: %+v", res)
	}
	if res := applyLog(t, f, 13, StopTask{ID: task.ID, Time: t0}); res.Err != nil || res.Changed {
		t.Fatalf("second stop: %+v", res)
	}
	if res := applyLog(t, f, 14, AssignTask{ID: task.ID, Worker: "w1", Generation: 2}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("assign a stopping task: %v", res.Err)
	}
	done := running
	done.State = api.Completed
	done.Reason = "stopped on request"
	if res := applyLog(t, f, 15, ReportTask{Task: done}); res.Err != nil || res.Task.State != api.Completed {
		t.Fatalf("report stopped: %+v", res)
	}
	if res := applyLog(t, f, 16, StopTask{ID: task.ID, Time: t0}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("stop a completed task: %v", res.Err)
	}
	late := running // a late report of the old Running state cannot revive it
	if res := applyLog(t, f, 17, ReportTask{Task: late}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("late running report after completion: %v", res.Err)
	}
	if nodes := f.Nodes(); nodes[0].TaskCount != 0 || nodes[0].AllocatedMemory != 0 {
		t.Fatalf("allocation after stop: %+v", nodes)
	}

	// A Pending task stops at once.
	p := newTask()
	applyLog(t, f, 18, SubmitTask{Task: p, Time: t0})
	if res := applyLog(t, f, 19, StopTask{ID: p.ID, Time: t0, Reason: "stopped on request"}); res.Task.State != api.Completed || res.Task.Reason != "stopped on request" {
		t.Fatalf("stop pending: %+v", res)
	}

	// Unknown IDs.
	for i, cmd := range []any{AssignTask{ID: uuid.New(), Worker: "w1", Generation: 1}, StopTask{ID: uuid.New()}, ReportTask{Task: api.Task{ID: uuid.New()}}, PendingNote{ID: uuid.New()}} {
		if res := applyLog(t, f, uint64(20+i), cmd); !errors.Is(res.Err, api.ErrNotFound) {
			t.Fatalf("%T on an unknown task: %v", cmd, res.Err)
		}
	}
	if f.AppliedIndex() != 23 {
		t.Fatalf("applied index %d, want 23", f.AppliedIndex())
	}
}

func TestFSM_UpsertWorker(t *testing.T) {
	f := New()
	if res := applyLog(t, f, 1, worker("w1")); !res.Changed {
		t.Fatal("first upsert changed nothing")
	}
	if res := applyLog(t, f, 2, worker("w1")); res.Changed {
		t.Fatal("identical upsert reported a change")
	}
	dead := worker("w1")
	dead.Node.State = api.NodeDead
	applyLog(t, f, 3, dead)
	if n := f.Nodes(); len(n) != 1 || n[0].State != api.NodeDead {
		t.Fatalf("nodes: %+v", n)
	}
	if res := applyLog(t, f, 4, UpsertWorker{}); res.Err == nil {
		t.Fatal("nameless worker accepted")
	}
}

func TestFSM_IgnoreIfUnknown(t *testing.T) {
	f := New()
	// An unknown command with the ignore bit is skipped.
	res := f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: []byte{0xFE, '{', '}'}})
	if r, ok := res.(*Result); !ok || r.Err != nil || f.AppliedIndex() != 7 {
		t.Fatalf("ignorable unknown command: %+v, applied %d", res, f.AppliedIndex())
	}
	// A malformed payload of a known command is an error value, not a panic.
	res = f.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: []byte{byte(CmdSubmitTask), 'x'}})
	if r := res.(*Result); r.Err == nil {
		t.Fatal("malformed payload accepted")
	}
	// An unknown command without the bit stalls the FSM (upgrade_test.go).
	res = f.Apply(&raft.Log{Index: 9, Type: raft.LogCommand, Data: []byte{0x7E, '{', '}'}})
	if r := res.(*Result); !errors.Is(r.Err, ErrStalled) || f.AppliedIndex() != 8 {
		t.Fatalf("unknown non-ignorable command: %+v, applied %d; want a stall at 8", r, f.AppliedIndex())
	}
}

// state returns the FSM's persisted bytes: equal states give equal bytes.
func state(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func TestFSM_DrainWorker(t *testing.T) {
	f := New()
	applyLog(t, f, 1, worker("w1"))
	if res := applyLog(t, f, 2, DrainWorker{Name: "w1", Drain: true}); !res.Changed || res.Err != nil {
		t.Fatalf("drain: %+v", res)
	}
	if res := applyLog(t, f, 3, DrainWorker{Name: "w1", Drain: true}); res.Changed {
		t.Fatal("draining a drained worker reported a change")
	}
	// Gossip's view of the worker (liveness, address) never clears the drain.
	dead := worker("w1")
	dead.Node.State = api.NodeDead
	applyLog(t, f, 4, dead)
	if res := applyLog(t, f, 5, worker("w1")); !res.Changed {
		t.Fatal("liveness change not recorded")
	}
	if n := f.Nodes(); len(n) != 1 || !n[0].Drain || n[0].State != api.NodeAlive {
		t.Fatalf("after gossip upserts: %+v, want alive and still draining", n)
	}
	if res := applyLog(t, f, 6, DrainWorker{Name: "w1"}); !res.Changed || f.Nodes()[0].Drain {
		t.Fatalf("undrain: %+v, nodes %+v", res, f.Nodes())
	}
	res := applyLog(t, f, 7, DrainWorker{Name: "w9", Drain: true})
	if !errors.Is(res.Err, api.ErrNotFound) || len(f.Nodes()) != 1 {
		t.Fatalf("drain of an unknown worker: %v, nodes %+v", res.Err, f.Nodes())
	}
}

func TestFSM_SameLogSameState(t *testing.T) {
	task := newTask()
	a, b := New(), New()
	for i, cmd := range script(task) {
		ra := applyLog(t, a, uint64(i+1), cmd)
		rb := applyLog(t, b, uint64(i+1), cmd)
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("command %d (%T): results differ:\n%+v\n%+v", i, cmd, ra, rb)
		}
	}
	if sa, sb := state(t, a), state(t, b); !bytes.Equal(sa, sb) {
		t.Fatalf("states differ:\n%s\n%s", sa, sb)
	}
}

func TestFSM_SnapshotRestore(t *testing.T) {
	src := New()
	for i, cmd := range script(newTask()) {
		applyLog(t, src, uint64(i+1), cmd)
	}
	data := state(t, src)

	dst := New()
	applyLog(t, dst, 1, SubmitTask{Task: newTask(), Time: t0}) // replaced by Restore
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got := state(t, dst); !bytes.Equal(got, data) {
		t.Fatalf("restored state differs:\n%s\n%s", got, data)
	}
	if !reflect.DeepEqual(src.Tasks(), dst.Tasks()) || !reflect.DeepEqual(src.Nodes(), dst.Nodes()) || !reflect.DeepEqual(src.Tokens(), dst.Tokens()) {
		t.Fatal("restored reads differ")
	}
	if err := dst.Restore(io.NopCloser(bytes.NewReader([]byte(`{"Version":99}`)))); err == nil {
		t.Fatal("unknown snapshot version accepted")
	}
}

func TestFSM_ChangedSignals(t *testing.T) {
	f := New()
	applyLog(t, f, 1, worker("w1"))
	select {
	case <-f.Changed():
	default:
		t.Fatal("no change signal after a change")
	}
	applyLog(t, f, 2, worker("w1"))
	select {
	case <-f.Changed():
		t.Fatal("change signal after a no-op")
	default:
	}
}

func TestEncodeDecode_RoundTrip(t *testing.T) {
	for _, cmd := range script(newTask()) {
		data, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("decode %T: %v", cmd, err)
		}
		a, _ := json.Marshal(cmd)
		b, _ := json.Marshal(got)
		if reflect.TypeOf(got) != reflect.TypeOf(cmd) || !bytes.Equal(a, b) {
			t.Fatalf("round trip of %T gave %T %s, want %s", cmd, got, b, a)
		}
	}
	if _, err := Encode(42); err == nil {
		t.Fatal("encoded a non-command")
	}
}

// FuzzDecode: no byte string may panic the command decoder or Apply.
func FuzzDecode(f *testing.F) {
	for _, cmd := range script(newTask()) {
		data, _ := Encode(cmd)
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(CmdReportTask), '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := Decode(data)
		if err != nil {
			return
		}
		fsm := New()
		applyLog(t, fsm, 1, worker("w1"))
		direct := fsm.ApplyCommand(cmd)
		// The raft path dispatches on the type byte, ApplyCommand on the
		// struct: both must reach the same applier.
		viaLog := New()
		applyLog(t, viaLog, 1, worker("w1"))
		logged := viaLog.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
		if !reflect.DeepEqual(logged, direct) {
			t.Fatalf("Apply(%q) = %+v, ApplyCommand = %+v", data, logged, direct)
		}
	})
}

type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

func TestFSM_Apply_RestartRequeueGiveUp(t *testing.T) {
	f := New()
	applyLog(t, f, 1, worker("w1"))
	applyLog(t, f, 2, worker("w2"))
	task := newTask()
	applyLog(t, f, 3, SubmitTask{Task: task, Time: t0})
	applyLog(t, f, 4, AssignTask{ID: task.ID, Worker: "w1", Generation: 1})
	applyLog(t, f, 5, ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Failed, ExitCode: 1, Reason: "exited with code 1"}})

	// Restart counted, same worker, new generation.
	res := applyLog(t, f, 6, RestartTask{ID: task.ID, Worker: "w1", Generation: 2, Counted: true, Reason: "restart after: exited with code 1"})
	if res.Err != nil || res.Task.State != api.Scheduled || res.Task.Generation != 2 || res.Task.RestartCount != 1 || res.Task.ExitCode != 0 {
		t.Fatalf("restart: %+v", res)
	}
	if res := applyLog(t, f, 7, RestartTask{ID: task.ID, Worker: "w1", Generation: 2, Counted: true}); !errors.Is(res.Err, api.ErrStaleGeneration) {
		t.Fatalf("restart at the same generation: %v", res.Err)
	}
	// A late report from generation 1 is fenced off.
	if res := applyLog(t, f, 8, ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running}}); !errors.Is(res.Err, api.ErrStaleGeneration) {
		t.Fatalf("late report: %v", res.Err)
	}
	applyLog(t, f, 9, ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 2, State: api.Running}})

	// Worker lost: back to Pending, not counted; placed again at a higher generation.
	res = applyLog(t, f, 10, RequeueTask{ID: task.ID, Reason: "worker w1 died"})
	if res.Err != nil || res.Task.State != api.Pending || res.Task.Worker != "" || res.Task.LastWorker != "w1" || res.Task.RestartCount != 1 {
		t.Fatalf("requeue: %+v", res)
	}
	if res := applyLog(t, f, 11, RestartTask{ID: task.ID, Worker: "w2", Generation: 3}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("restart of a Pending task: %v", res.Err)
	}
	if res := applyLog(t, f, 12, AssignTask{ID: task.ID, Worker: "w2", Generation: 3}); res.Err != nil || res.Task.Worker != "w2" {
		t.Fatalf("assign after requeue: %+v", res)
	}
	if res := applyLog(t, f, 13, ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 2, State: api.Running}}); !errors.Is(res.Err, api.ErrStaleGeneration) {
		t.Fatalf("report from the lost worker: %v", res.Err)
	}

	// Give up: Failed for good, never restarted, never revived by a report.
	res = applyLog(t, f, 14, GiveUpTask{ID: task.ID, Reason: "gave up after 3 restarts: exited with code 1", Time: t0})
	if res.Err != nil || res.Task.State != api.Failed || res.Task.DesiredState != api.Failed {
		t.Fatalf("give up: %+v", res)
	}
	if res := applyLog(t, f, 15, RestartTask{ID: task.ID, Worker: "w2", Generation: 4, Counted: true}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("restart after give-up: %v", res.Err)
	}
	if res := applyLog(t, f, 16, ReportTask{Task: api.Task{ID: task.ID, Worker: "w2", Generation: 3, State: api.Running}}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("report revived a given-up task: %v", res.Err)
	}
	if res := applyLog(t, f, 17, StopTask{ID: task.ID, Time: t0}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("stop of a given-up task: %v", res.Err)
	}

	// "always": a Completed task may be restarted while it is to run.
	a := newTask()
	a.RestartPolicy = "always"
	applyLog(t, f, 18, SubmitTask{Task: a, Time: t0})
	applyLog(t, f, 19, AssignTask{ID: a.ID, Worker: "w1", Generation: 1})
	applyLog(t, f, 20, ReportTask{Task: api.Task{ID: a.ID, Worker: "w1", Generation: 1, State: api.Completed}})
	if res := applyLog(t, f, 21, RestartTask{ID: a.ID, Worker: "w1", Generation: 2, Counted: true}); res.Err != nil || res.Task.State != api.Scheduled {
		t.Fatalf("restart of a completed always task: %+v", res)
	}
}

var (
	wireID   = uuid.MustParse("6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f")
	wireTime = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	wireHash = strings.Repeat("ab", 32)
)

// wireCases is one command of every type with its type byte, written as a
// literal (not the constant) so that renumbering a command fails the test.
func wireCases() []struct {
	typ byte
	cmd any
} {
	return []struct {
		typ byte
		cmd any
	}{
		{0x01, SubmitTask{Task: api.Task{ID: wireID, Name: "echo", Image: "cube-echo:latest"}, Time: wireTime}},
		{0x02, AssignTask{ID: wireID, Worker: "w1", Generation: 3, Time: wireTime}},
		{0x03, ReportTask{Task: api.Task{ID: wireID, Worker: "w1", Generation: 3, State: api.Running, ContainerID: "c1"}}},
		{0x04, StopTask{ID: wireID, Time: wireTime, Reason: "stopped on request"}},
		{0x05, UpsertWorker{Node: api.Node{Name: "w1", API: "127.0.0.1:5555", State: api.NodeAlive, Cpu: 2}}},
		{0x86, PendingNote{ID: wireID, Reason: "fits nowhere"}},
		{0x07, RestartTask{ID: wireID, Worker: "w2", Generation: 4, Counted: true, Reason: "exited", Time: wireTime}},
		{0x08, RequeueTask{ID: wireID, Reason: "worker w1 died", Time: wireTime}},
		{0x09, GiveUpTask{ID: wireID, Reason: "gave up", Time: wireTime}},
		{0x0a, DrainWorker{Name: "w1", Drain: true}},
		{0x0b, CreateToken{AccessorID: wireID, Name: "ci", Role: api.RoleSubmit, Hash: wireHash, CreateTime: wireTime}},
		{0x0c, DeleteToken{AccessorID: wireID}},
		{0x0d, BootstrapToken{AccessorID: wireID, Hash: wireHash, CreateTime: wireTime}},
		{0x0e, CollectGarbage{Tasks: []uuid.UUID{wireID}, Workers: []string{"w3"}}},
		{0x0f, PutService{Service: api.Service{Name: "web", Count: 3, Task: api.Task{Image: "cube-echo:latest"}}, Mode: PutCreate, Time: wireTime, By: "ci"}},
		{0x10, DeleteService{Name: "web", Time: wireTime, Reason: "deleted"}},
		{0x11, SetRollout{Name: "web", Expect: 2, Rollout: &api.Rollout{From: 1, To: 2, State: api.RolloutFailed, Reason: "x"}, Current: 1, Healthy: 1, Time: wireTime}},
		{0x01, SubmitTask{Task: api.Task{ID: wireID, Image: "cube-echo:latest"}, Time: wireTime, MaxTasks: 100}},
		{0x92, SetHealth{ID: wireID, Generation: 3, Healthy: true, Time: wireTime}},
		{0x03, ReportTask{Task: api.Task{ID: wireID, Worker: "w1", Generation: 3, State: api.Running, ContainerID: "c1"}, Time: wireTime}},
		{0x86, PendingNote{ID: wireID, Reason: "fits nowhere", Time: wireTime}},
		{0x14, AssignTasks{Assigns: []AssignTask{{ID: wireID, Worker: "w1", Generation: 3, Time: wireTime}}}},
		{0x13, ReportTasks{Tasks: []api.Task{{ID: wireID, Worker: "w1", Generation: 3, State: api.Running, ContainerID: "c1"}}, Time: wireTime}},
	}
}

// TestEncode_WireFormat pins the log entry format that raft logs and
// snapshots on disk depend on: the type byte, then the plain JSON of the
// struct, whether Encode is given the struct or a pointer to it.
func TestEncode_WireFormat(t *testing.T) {
	for _, tc := range wireCases() {
		payload, err := json.Marshal(tc.cmd)
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte{tc.typ}, payload...)
		ptr := reflect.New(reflect.TypeOf(tc.cmd))
		ptr.Elem().Set(reflect.ValueOf(tc.cmd))
		for _, cmd := range []any{tc.cmd, ptr.Interface()} {
			got, err := Encode(cmd)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Encode(%T) = %q, %v; want %q", cmd, got, err, want)
			}
		}
	}
}

// TestDecode_RecordedEntries decodes entries byte for byte as earlier Cube
// versions wrote them (fields a version did not know yet are absent).
func TestDecode_RecordedEntries(t *testing.T) {
	const id = `"ID":"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f"`
	const at = `"Time":"2026-11-26T12:00:00Z"`
	for _, tc := range []struct {
		entry string
		want  any
	}{
		{"\x01{\"Task\":{" + id + `,"Name":"echo","Image":"cube-echo:latest"},` + at + "}", SubmitTask{Task: api.Task{ID: wireID, Name: "echo", Image: "cube-echo:latest"}, Time: wireTime}},
		{"\x02{" + id + `,"Worker":"w1","Generation":3,` + at + "}", AssignTask{ID: wireID, Worker: "w1", Generation: 3, Time: wireTime}},
		{"\x03{\"Task\":{" + id + `,"ContainerID":"c1","State":2,"Worker":"w1","Generation":3}}`, ReportTask{Task: api.Task{ID: wireID, Worker: "w1", Generation: 3, State: api.Running, ContainerID: "c1"}}},
		{"\x04{" + id + "," + at + `,"Reason":"stopped on request"}`, StopTask{ID: wireID, Time: wireTime, Reason: "stopped on request"}},
		{"\x05{\"Node\":{\"Name\":\"w1\",\"API\":\"127.0.0.1:5555\",\"State\":\"alive\",\"Cpu\":2}}", UpsertWorker{Node: api.Node{Name: "w1", API: "127.0.0.1:5555", State: api.NodeAlive, Cpu: 2}}},
		{"\x86{" + id + `,"Reason":"fits nowhere"}`, PendingNote{ID: wireID, Reason: "fits nowhere"}},
		{"\x07{" + id + `,"Worker":"w2","Generation":4,"Counted":true,"Reason":"exited",` + at + "}", RestartTask{ID: wireID, Worker: "w2", Generation: 4, Counted: true, Reason: "exited", Time: wireTime}},
		{"\x08{" + id + `,"Reason":"worker w1 died",` + at + "}", RequeueTask{ID: wireID, Reason: "worker w1 died", Time: wireTime}},
		{"\x09{" + id + `,"Reason":"gave up",` + at + "}", GiveUpTask{ID: wireID, Reason: "gave up", Time: wireTime}},
		{"\x0a{\"Name\":\"w1\",\"Drain\":true}", DrainWorker{Name: "w1", Drain: true}},
		{"\x0b{\"AccessorID\":\"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f\",\"Name\":\"ci\",\"Role\":\"submit\",\"Hash\":\"" + wireHash + `","CreateTime":"2026-11-26T12:00:00Z"}`,
			CreateToken{AccessorID: wireID, Name: "ci", Role: api.RoleSubmit, Hash: wireHash, CreateTime: wireTime}},
		{"\x0c{\"AccessorID\":\"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f\"}", DeleteToken{AccessorID: wireID}},
		{"\x0d{\"AccessorID\":\"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f\",\"Hash\":\"" + wireHash + `","CreateTime":"2026-11-26T12:00:00Z"}`,
			BootstrapToken{AccessorID: wireID, Hash: wireHash, CreateTime: wireTime}},
		{"\x0e{\"Tasks\":[\"6f1c2a4e-8b3d-4f5a-9c7e-0d1b2c3d4e5f\"],\"Workers\":[\"w3\"]}", CollectGarbage{Tasks: []uuid.UUID{wireID}, Workers: []string{"w3"}}},
		{"\x01{\"Task\":{" + id + `,"Image":"cube-echo:latest"},` + at + `,"MaxTasks":100}`, SubmitTask{Task: api.Task{ID: wireID, Image: "cube-echo:latest"}, Time: wireTime, MaxTasks: 100}},
	} {
		got, err := Decode([]byte(tc.entry))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("Decode(%q) = %#v, %v; want %#v", tc.entry, got, err, tc.want)
		}
	}
}

// TestDecode_Errors pins the errors of entries this version cannot read.
func TestDecode_Errors(t *testing.T) {
	for _, tc := range []struct {
		entry   string
		wantErr string
		unknown bool
	}{
		{"", "decode: empty log entry", false},
		{"\x7e{}", "decode: unknown command type cmd(0x7e)", true},
		{"\xfe{}", "decode: unknown command type cmd(0xfe)", true},
		{"\x00{}", "decode: unknown command type cmd(0x0)", true},
		{"\x01x", "decode submit-task: invalid character 'x' looking for beginning of value", false},
		{"\x86", "decode pending-note: unexpected end of JSON input", false},
	} {
		got, err := Decode([]byte(tc.entry))
		if got != nil || err == nil || err.Error() != tc.wantErr || errors.Is(err, ErrUnknownCommand) != tc.unknown {
			t.Fatalf("Decode(%q) = %v, %v; want error %q (unknown %v)", tc.entry, got, err, tc.wantErr, tc.unknown)
		}
	}
}

// TestApplyCommand_NotACommand: ApplyCommand takes command structs (values,
// as Decode returns them); anything else is an error value, not a panic.
func TestApplyCommand_NotACommand(t *testing.T) {
	f := New()
	for _, tc := range []struct {
		cmd  any
		want string
	}{
		{42, "apply: int is not a command"},
		{nil, "apply: <nil> is not a command"},
		{&DrainWorker{Name: "w1"}, "apply: *fsm.DrainWorker is not a command"},
	} {
		if res := f.ApplyCommand(tc.cmd); res.Err == nil || res.Err.Error() != tc.want || res.Changed {
			t.Fatalf("ApplyCommand(%#v) = %+v, want error %q", tc.cmd, res, tc.want)
		}
	}
}

// TestCommands_Table checks the command table against three lists kept
// apart from it: the CmdType constants in the package source, wireCases and
// script. A command missing from any of them fails here; every one must
// have a name, round-trip through Encode and Decode with its own type byte,
// and a struct of its own.
func TestCommands_Table(t *testing.T) {
	declared := declaredCmdTypes(t)
	names := make(map[string]bool)
	for name, typ := range declared {
		c, ok := commands[typ]
		if !ok {
			t.Fatalf("%s (%#x) is declared but has no row in commands", name, uint8(typ))
		}
		if c.name == "" || names[c.name] || typ.String() != c.name || strings.HasPrefix(c.name, "cmd(") {
			t.Fatalf("%s: name %q (empty, taken or a number), String() %q", name, c.name, typ)
		}
		names[c.name] = true
	}
	if len(declared) != len(commands) || len(byGoType) != len(commands) {
		t.Fatalf("%d constants, %d rows, %d structs: each command needs all three", len(declared), len(commands), len(byGoType))
	}
	inWire := make(map[CmdType]bool)
	for _, tc := range wireCases() {
		typ := CmdType(tc.typ)
		inWire[typ] = true
		data, err := Encode(tc.cmd)
		if err != nil || data[0] != tc.typ {
			t.Fatalf("Encode(%T) = %q, %v; want type byte %#x", tc.cmd, data, err, tc.typ)
		}
		got, err := Decode(data)
		if err != nil || !reflect.DeepEqual(got, tc.cmd) {
			t.Fatalf("%s: Decode(Encode(%#v)) = %#v, %v", typ, tc.cmd, got, err)
		}
	}
	inScript := make(map[CmdType]bool)
	for _, cmd := range script(newTask()) {
		data, _ := Encode(cmd)
		inScript[CmdType(data[0])] = true
	}
	for typ := range commands {
		if !inWire[typ] || !inScript[typ] {
			t.Fatalf("%s: in wireCases %v, in script %v; add it to both", typ, inWire[typ], inScript[typ])
		}
	}
}

// declaredCmdTypes returns the CmdType constants the package declares (but
// the IgnoreIfUnknown flag), read from its source, so that a constant no
// code uses yet is found too. Only constants are needed: the imports are
// not loaded, and the type errors that follow are ignored.
func declaredCmdTypes(t *testing.T) map[string]CmdType {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	paths, _ := filepath.Glob("*.go")
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file)
	}
	info := &types.Info{Defs: make(map[*ast.Ident]types.Object)}
	conf := types.Config{Importer: noImports{}, Error: func(error) {}}
	pkg, _ := conf.Check("fsm", fset, files, info)
	out := make(map[string]CmdType)
	for _, obj := range info.Defs {
		c, ok := obj.(*types.Const)
		if !ok || c.Parent() != pkg.Scope() || c.Name() == "IgnoreIfUnknown" {
			continue
		}
		if named, ok := c.Type().(*types.Named); ok && named.Obj().Name() == "CmdType" {
			v, _ := constant.Uint64Val(c.Val())
			out[c.Name()] = CmdType(v)
		}
	}
	if len(out) == 0 {
		t.Fatal("found no CmdType constants in the package source")
	}
	return out
}

// noImports loads no package: declaredCmdTypes needs none.
type noImports struct{}

func (noImports) Import(path string) (*types.Package, error) {
	return nil, errors.New("not loaded")
}

// TestFSM_ReportTasks: a batch applies each report as ReportTask would,
// skips the ones that do not apply, lists the tasks it changed in the
// batch's order, and the change feed gets each of them.
func TestFSM_ReportTasks(t *testing.T) {
	f := New()
	applyLog(t, f, 1, worker("w1"))
	a, b, c := newTask(), newTask(), newTask()
	for i, task := range []api.Task{a, b, c} {
		applyLog(t, f, uint64(2+2*i), SubmitTask{Task: task, Time: t0})
		applyLog(t, f, uint64(3+2*i), AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: t0})
	}
	sub, _, err := f.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	res := applyLog(t, f, 8, ReportTasks{Tasks: []api.Task{
		{ID: b.ID, Worker: "w1", Generation: 1, State: api.Running, ContainerID: "cb", StartTime: t0},
		{ID: a.ID, Worker: "w1", Generation: 9, State: api.Running},                               // another placement
		{ID: uuid.New(), Worker: "w1", Generation: 1, State: api.Running},                         // unknown
		{ID: c.ID, Worker: "w1", Generation: 1, State: api.Failed, StartTime: t0, FinishTime: t0}, // ended
	}, Time: t0.Add(time.Second)})
	if res.Err != nil || !res.Changed || len(res.Tasks) != 2 || res.Tasks[0].ID != b.ID || res.Tasks[1].ID != c.ID {
		t.Fatalf("ReportTasks result: %+v; want b then c changed", res)
	}
	for id, want := range map[uuid.UUID]api.State{a.ID: api.Scheduled, b.ID: api.Running, c.ID: api.Failed} {
		if got, _ := f.Task(id); got.State != want {
			t.Fatalf("task %s is %s after the batch, want %s", id, got.State, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, want := range []uuid.UUID{b.ID, c.ID} {
		ch, err := sub.Next(ctx)
		if err != nil || ch.Task.ID != want || ch.Index != 8 {
			t.Fatalf("feed: %+v, %v; want the change of %s at index 8", ch, err, want)
		}
	}
}

// TestFSM_AssignTasks: each assignment of a batch applies or fails on its
// own, with its result in Each, and the feed gets the placed tasks.
func TestFSM_AssignTasks(t *testing.T) {
	f := New()
	applyLog(t, f, 1, worker("w1"))
	a, b := newTask(), newTask()
	applyLog(t, f, 2, SubmitTask{Task: a, Time: t0})
	applyLog(t, f, 3, SubmitTask{Task: b, Time: t0})
	res := applyLog(t, f, 4, AssignTasks{Assigns: []AssignTask{
		{ID: a.ID, Worker: "w1", Generation: 1, Time: t0},
		{ID: uuid.New(), Worker: "w1", Generation: 1, Time: t0}, // unknown task
		{ID: b.ID, Worker: "w9", Generation: 1, Time: t0},       // unknown worker
	}})
	if res.Err != nil || !res.Changed || len(res.Each) != 3 || len(res.Tasks) != 1 || res.Tasks[0].ID != a.ID {
		t.Fatalf("AssignTasks result %+v; want a placed, two refused", res)
	}
	if e := res.Each[0]; e.Err != nil || e.Task.Worker != "w1" || e.Task.Generation != 1 || e.Task.State != api.Scheduled {
		t.Fatalf("Each[0] = %+v; want a Scheduled on w1 at generation 1", e)
	}
	if !errors.Is(res.Each[1].Err, api.ErrNotFound) || !errors.Is(res.Each[2].Err, api.ErrNotFound) {
		t.Fatalf("Each[1], Each[2] errors: %v, %v; want not found (task, worker)", res.Each[1].Err, res.Each[2].Err)
	}
	if got, _ := f.Task(b.ID); got.State != api.Pending {
		t.Fatalf("b is %s after a refused assignment, want Pending", got.State)
	}
}

package fsm

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// scanNodes is what Nodes returned before allocations were kept as running
// sums: every worker with the sums of a scan of its placed live tasks.
// CPU is summed in nanocores, as the running sums are.
func scanNodes(f *FSM) []api.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := make([]string, 0, len(f.workers))
	for name := range f.workers {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []api.Node
	for _, name := range names {
		n := f.workers[name]
		var nano int64
		for id := range f.live {
			t := f.tasks[id]
			if t.Worker != name || (t.State != api.Scheduled && t.State != api.Running) {
				continue
			}
			nano += api.NanoCPU(t.Cpu)
			n.AllocatedMemory = api.AddBytes(n.AllocatedMemory, t.Memory)
			n.AllocatedDisk = api.AddBytes(n.AllocatedDisk, t.Disk)
			n.TaskCount++
			if t.Service != "" {
				if n.ServiceTasks == nil {
					n.ServiceTasks = map[string]int{}
				}
				n.ServiceTasks[t.Service]++
			}
		}
		n.AllocatedCpu = float64(nano) / 1e9
		out = append(out, n)
	}
	return out
}

// TestNodes_RunningSumsEqualAScan drives an FSM through random placements,
// reports, restarts, moves, stops, give-ups and garbage collection, and
// checks after every command that the allocations Nodes keeps as running
// sums equal a scan of the tasks, and still do after a snapshot is
// restored into another FSM.
func TestNodes_RunningSumsEqualAScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := New()
	workers := []string{"w1", "w2", "w3"}
	for _, w := range workers {
		f.ApplyCommand(worker(w))
	}
	cpus := []float64{0, 0.1, 0.2, 0.25, 0.3, 1.5}
	var ids []uuid.UUID
	gen := map[uuid.UUID]uint64{}
	for step := range 3000 {
		var cmd any
		at := t0.Add(time.Duration(step) * time.Millisecond)
		switch k := rng.IntN(9); {
		case k == 0 || len(ids) == 0:
			task := newTask()
			task.Cpu = cpus[rng.IntN(len(cpus))]
			task.Memory = int64(rng.IntN(4)) << 28
			task.Disk = int64(rng.IntN(2)) << 62 // sums past MaxInt64 saturate, as AddBytes does
			if rng.IntN(3) == 0 {
				task.Service = "web"
			}
			ids = append(ids, task.ID)
			cmd = SubmitTask{Task: task, Time: at}
		default:
			id := ids[rng.IntN(len(ids))]
			w := workers[rng.IntN(len(workers))]
			g := gen[id]
			switch k {
			case 1, 2:
				gen[id] = g + 1
				cmd = AssignTask{ID: id, Worker: w, Generation: g + 1, Time: at}
			case 3:
				cur, _ := f.Task(id)
				cmd = ReportTask{Task: api.Task{ID: id, Worker: cur.Worker, Generation: g, State: api.Running, ContainerID: "c", StartTime: at}}
			case 4:
				cur, _ := f.Task(id)
				cmd = ReportTask{Task: api.Task{ID: id, Worker: cur.Worker, Generation: g, State: api.Failed, ExitCode: 1, StartTime: at, FinishTime: at}}
			case 5:
				gen[id] = g + 1
				cmd = RestartTask{ID: id, Worker: w, Generation: g + 1, Counted: true, Reason: "r", Time: at}
			case 6:
				cmd = StopTask{ID: id, Time: at, Reason: "stopped on request"}
			case 7:
				cmd = GiveUpTask{ID: id, Reason: "x", Time: at}
			case 8:
				cmd = CollectGarbage{Tasks: slices.Clone(ids[:min(len(ids), 5)])}
			}
		}
		f.ApplyCommand(cmd)
		if got, want := f.Nodes(), scanNodes(f); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d (%T): Nodes\n%+v\nscan\n%+v", step, cmd, got, want)
		}
		if got, want := placedIDs(f), scanPlacedIDs(f); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d (%T): the tasks placed on each worker\n%v\nscan\n%v", step, cmd, got, want)
		}
	}
	var sink memSink
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Nodes(), f.Nodes()) {
		t.Fatalf("restored Nodes differ:\n%+v\n%+v", g.Nodes(), f.Nodes())
	}
	placed := 0
	for _, n := range f.Nodes() {
		placed += n.TaskCount
	}
	if placed == 0 {
		t.Fatal("the walk placed nothing in the end: it tests little")
	}
}

func TestTakeChanges(t *testing.T) {
	f := New()
	if ids, all := f.TakeChanges(); !all || ids != nil {
		t.Fatalf("first TakeChanges = %v, %v; want everything", ids, all)
	}
	if ids, all := f.TakeChanges(); all || len(ids) != 0 {
		t.Fatalf("nothing changed: TakeChanges = %v, %v", ids, all)
	}
	applyLog(t, f, 1, worker("w1"))
	if ids, all := f.TakeChanges(); all || len(ids) != 0 {
		t.Fatalf("a new worker, no task on it: TakeChanges = %v, %v; want nothing", ids, all)
	}
	a, b := newTask(), newTask()
	applyLog(t, f, 2, SubmitTask{Task: a, Time: t0})
	applyLog(t, f, 3, SubmitTask{Task: b, Time: t0.Add(time.Second)})
	applyLog(t, f, 4, AssignTask{ID: a.ID, Worker: "w1", Generation: 1, Time: t0})
	ids, all := f.TakeChanges()
	slices.SortFunc(ids, func(x, y uuid.UUID) int { return bytes.Compare(x[:], y[:]) })
	want := []uuid.UUID{a.ID, b.ID}
	slices.SortFunc(want, func(x, y uuid.UUID) int { return bytes.Compare(x[:], y[:]) })
	if all || !slices.Equal(ids, want) {
		t.Fatalf("TakeChanges = %v, %v; want %v", ids, all, want)
	}
	if got := f.LiveTaskRefsOf([]uuid.UUID{b.ID, uuid.New(), a.ID}); len(got) != 2 || got[0].ID != a.ID || got[1].ID != b.ID {
		t.Fatalf("LiveTaskRefsOf: %d tasks, want a then b (submission order), unknown IDs left out", len(got))
	}
	// A worker's record changing is a change of the tasks placed on it
	// (a, not the Pending b, nor a task on another worker); the same
	// record again changes nothing.
	c := newTask()
	f.ApplyCommand(worker("w2"))
	f.ApplyCommand(SubmitTask{Task: c, Time: t0})
	f.ApplyCommand(AssignTask{ID: c.ID, Worker: "w2", Generation: 1, Time: t0})
	f.TakeChanges()
	for _, cmd := range []any{
		UpsertWorker{Node: api.Node{Name: "w1", API: "w1:api", State: api.NodeDead, RuntimeAvailable: true, Cpu: 2, Memory: 1 << 30}},
		DrainWorker{Name: "w1", Drain: true},
	} {
		f.ApplyCommand(cmd)
		if ids, all := f.TakeChanges(); all || !slices.Equal(ids, []uuid.UUID{a.ID}) {
			t.Fatalf("%T on w1: TakeChanges = %v, %v; want [a] (%v)", cmd, ids, all, a.ID)
		}
		f.ApplyCommand(cmd)
		if ids, all := f.TakeChanges(); all || len(ids) != 0 {
			t.Fatalf("%T on w1 again: TakeChanges = %v, %v; want nothing", cmd, ids, all)
		}
	}
	// Tokens and services change no task: everything.
	applyLog(t, f, 5, PutService{Service: api.Service{Name: "web", Count: 1, Task: api.Task{Image: "cube-echo:latest"}}, Mode: PutCreate, Time: t0})
	if _, all := f.TakeChanges(); !all {
		t.Fatal("a service changed: TakeChanges did not say everything")
	}
	// A change that changes nothing (the same report twice) lists nothing
	// new; stopping and collecting a task lists it.
	applyLog(t, f, 6, StopTask{ID: b.ID, Time: t0, Reason: "stopped on request"})
	applyLog(t, f, 7, CollectGarbage{Tasks: []uuid.UUID{b.ID}})
	if ids, all := f.TakeChanges(); all || !slices.Equal(ids, []uuid.UUID{b.ID}) {
		t.Fatalf("stop + collect: TakeChanges = %v, %v; want [b]", ids, all)
	}
	// A follower never takes: past maxChanges it stops listing.
	for i := range maxChanges + 1 {
		task := newTask()
		task.Name = fmt.Sprint("t", i)
		f.ApplyCommand(SubmitTask{Task: task, Time: t0})
	}
	if ids, all := f.TakeChanges(); !all || ids != nil {
		t.Fatalf("after %d changes TakeChanges listed %d, all=%v; want everything", maxChanges+1, len(ids), all)
	}
	// A restored state is everything.
	var sink memSink
	snap, _ := f.Snapshot()
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if _, all := f.TakeChanges(); !all {
		t.Fatal("after Restore TakeChanges did not say everything")
	}
}

func TestAddCPU_MatchesTheStoredSums(t *testing.T) {
	f := New()
	f.ApplyCommand(worker("w1"))
	var sum float64
	for i, c := range []float64{0.1, 0.2, 0.3, 0.7, 1.1} {
		task := newTask()
		task.Cpu = c
		f.ApplyCommand(SubmitTask{Task: task, Time: t0})
		f.ApplyCommand(AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: t0})
		sum = api.AddCPU(sum, c)
		if got := f.Nodes()[0].AllocatedCpu; got != sum {
			t.Fatalf("after %d tasks: stored %v, AddCPU %v", i+1, got, sum)
		}
	}
	if sum != 2.4 {
		t.Fatalf("0.1+0.2+0.3+0.7+1.1 = %v in nanocores, want 2.4", sum)
	}
}

// placedIDs is the FSM's index of the tasks placed on each worker.
func placedIDs(f *FSM) map[string]map[uuid.UUID]struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	got := map[string]map[uuid.UUID]struct{}{}
	for w, a := range f.alloc {
		got[w] = maps.Clone(a.ids)
	}
	return got
}

// scanPlacedIDs is the same, from every stored task.
func scanPlacedIDs(f *FSM) map[string]map[uuid.UUID]struct{} {
	want := map[string]map[uuid.UUID]struct{}{}
	for _, t := range f.Tasks() {
		if placed(&t) {
			if want[t.Worker] == nil {
				want[t.Worker] = map[uuid.UUID]struct{}{}
			}
			want[t.Worker][t.ID] = struct{}{}
		}
	}
	return want
}

package manager

import (
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

func node(name string, cpu float64, mem int64, allocCPU float64, allocMem int64, tasks int) api.Node {
	return api.Node{Name: name, State: api.NodeAlive, RuntimeAvailable: true, Cpu: cpu, Memory: mem, Disk: 100 << 30,
		AllocatedCpu: allocCPU, AllocatedMemory: allocMem, TaskCount: tasks}
}

func TestPlace_Fits(t *testing.T) {
	const gib = 1 << 30
	dead := node("dead", 8, 8*gib, 0, 0, 0)
	dead.State = api.NodeDead
	noDocker := node("nodocker", 8, 8*gib, 0, 0, 0)
	noDocker.RuntimeAvailable = false
	drained := node("drained", 8, 8*gib, 0, 0, 0)
	drained.Drain = true
	cases := []struct {
		name       string
		task       api.Task
		nodes      []api.Node
		want       string // "" = fits nowhere
		wantReason string
	}{
		{"no workers", api.Task{}, nil, "", "waiting for a live worker"},
		{"only dead", api.Task{}, []api.Node{dead}, "", "waiting for a live worker"},
		{"dead never picked", api.Task{Memory: gib}, []api.Node{dead, node("w1", 2, 2*gib, 1.5, gib, 3)}, "w1", ""},
		{"runtime down never picked", api.Task{}, []api.Node{noDocker}, "", "container runtime unavailable"},
		{"draining never picked", api.Task{}, []api.Node{drained}, "", "drained: draining"},
		{"draining passed over for a busier node", api.Task{}, []api.Node{drained, node("w1", 2, 2*gib, 1.5, gib, 3)}, "w1", ""},
		{"memory too big everywhere", api.Task{Memory: 4 * gib}, []api.Node{node("w1", 2, 2*gib, 0, 0, 0), node("w2", 2, 3*gib, 0, 0, 0)}, "", "no worker has room"},
		{"memory fits on one", api.Task{Memory: 2 * gib}, []api.Node{node("w1", 2, 2*gib, 0, gib, 1), node("w2", 2, 3*gib, 0, 0, 0)}, "w2", ""},
		{"cpu full", api.Task{Cpu: 1}, []api.Node{node("w1", 2, 2*gib, 1.5, 0, 1)}, "", "cores free"},
		{"exact fit", api.Task{Cpu: 0.5, Memory: gib}, []api.Node{node("w1", 2, 2*gib, 1.5, gib, 1)}, "w1", ""},
		{"epvm prefers the quieter node", api.Task{Cpu: 0.5, Memory: gib / 2}, []api.Node{node("busy", 2, 2*gib, 1.5, gib, 3), node("idle", 2, 2*gib, 0, 0, 0)}, "idle", ""},
		{"epvm spreads zero-size tasks by count", api.Task{}, []api.Node{node("a", 2, gib, 0, 0, 2), node("b", 2, gib, 0, 0, 1)}, "b", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, reason := Place(EPVM{}, tc.task, tc.nodes)
			if tc.want == "" {
				if ok || !strings.Contains(reason, tc.wantReason) {
					t.Fatalf("placed on %q (reason %q), want no placement with reason containing %q", got.Name, reason, tc.wantReason)
				}
				return
			}
			if !ok || got.Name != tc.want {
				t.Fatalf("placed on %q (ok %v, reason %q), want %q", got.Name, ok, reason, tc.want)
			}
		})
	}
}

func TestRoundRobin_Cycles(t *testing.T) {
	rr := &RoundRobin{}
	nodes := []api.Node{node("w3", 0, 0, 0, 0, 0), node("w1", 0, 0, 0, 0, 0), node("w2", 0, 0, 0, 0, 0)}
	var got []string
	for i := 0; i < 5; i++ {
		n, ok, _ := Place(rr, api.Task{}, nodes)
		if !ok {
			t.Fatal("no placement")
		}
		got = append(got, n.Name)
	}
	if strings.Join(got, ",") != "w1,w2,w3,w1,w2" {
		t.Fatalf("round robin order %v", got)
	}
}

func TestNewScheduler(t *testing.T) {
	for _, k := range []string{"epvm", "roundrobin", ""} {
		if _, err := NewScheduler(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	if _, err := NewScheduler("random"); err == nil || !strings.Contains(err.Error(), "roundrobin, epvm") {
		t.Errorf("unknown scheduler: %v", err)
	}
}

// TestScheduler_AccountingFollowsTheFSM: allocation comes from placed tasks
// in the replicated state, so a stopped task frees its room.
func TestScheduler_AccountingFollowsTheFSM(t *testing.T) {
	const gib = 1 << 30
	f := fsm.New()
	now := time.Now()
	f.ApplyCommand(fsm.UpsertWorker{Node: api.Node{Name: "w1", State: api.NodeAlive, RuntimeAvailable: true, Cpu: 2, Memory: 2 * gib}})
	big := api.Task{ID: uuid.New(), Image: "x", Memory: 1536 << 20}
	f.ApplyCommand(fsm.SubmitTask{Task: big, Time: now})
	if r := f.ApplyCommand(fsm.AssignTask{ID: big.ID, Worker: "w1", Generation: 1}); r.Err != nil {
		t.Fatal(r.Err)
	}
	second := api.Task{ID: uuid.New(), Image: "x", Memory: gib}
	if _, ok, reason := Place(EPVM{}, second, f.Nodes()); ok {
		t.Fatal("placed a task on a worker without room")
	} else if !strings.Contains(reason, "536870912 bytes of memory free") {
		t.Fatalf("reason %q does not say how much is free", reason)
	}
	f.ApplyCommand(fsm.StopTask{ID: big.ID, Time: now})
	f.ApplyCommand(fsm.ReportTask{Task: api.Task{ID: big.ID, Worker: "w1", Generation: 1, State: api.Completed}})
	if n, ok, reason := Place(EPVM{}, second, f.Nodes()); !ok || n.Name != "w1" {
		t.Fatalf("after the stop: placed %v on %q (%s), want w1", ok, n.Name, reason)
	}
}

// TestPlaceAll_CountsEachDecision: a burst placed in one pass spreads by
// E-PVM and never over-commits a worker, because each decision counts
// against its node before the next (the decisions are then committed
// together, so the FSM's own accounting comes too late to help).
func TestPlaceAll_CountsEachDecision(t *testing.T) {
	const gib = 1 << 30
	nodes := []api.Node{node("w1", 2, 2*gib, 0, 0, 0), node("w2", 2, 2*gib, 0, 0, 0), node("w3", 2, 2*gib, 0, 0, 0)}
	var tasks []api.Task
	for i := 0; i < 7; i++ {
		tasks = append(tasks, api.Task{ID: uuid.New(), Image: "x", Memory: gib})
	}
	got := PlaceAll(EPVM{}, tasks, nodes)
	if len(got) != len(tasks) {
		t.Fatalf("%d decisions for %d tasks", len(got), len(tasks))
	}
	per := map[string]int{}
	for i, p := range got {
		if p.Task.ID != tasks[i].ID {
			t.Fatalf("decision %d is for task %s, want %s (order kept)", i, p.Task.ID, tasks[i].ID)
		}
		if p.OK {
			per[p.Node.Name]++
		}
	}
	for _, n := range nodes {
		if per[n.Name] != 2 {
			t.Errorf("worker %s got %d tasks of 1 GiB, want 2 (2 GiB each): %v", n.Name, per[n.Name], per)
		}
	}
	if last := got[6]; last.OK || !strings.Contains(last.Reason, "no worker has room") {
		t.Errorf("7th task: placed %v on %q (reason %q), want it to wait for room", last.OK, last.Node.Name, last.Reason)
	}
	for _, n := range nodes {
		if n.AllocatedMemory != 0 || n.TaskCount != 0 {
			t.Errorf("PlaceAll modified its input: %+v", n)
		}
	}
	// Zero-size tasks (no resources asked) spread by count.
	per = map[string]int{}
	var small []api.Task
	for i := 0; i < 9; i++ {
		small = append(small, api.Task{ID: uuid.New(), Image: "x"})
	}
	for _, p := range PlaceAll(EPVM{}, small, nodes) {
		per[p.Node.Name]++
	}
	if per["w1"] != 3 || per["w2"] != 3 || per["w3"] != 3 {
		t.Errorf("9 zero-size tasks on 3 idle workers: %v, want 3 each", per)
	}
}

package manager

import (
	"fmt"
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
	got := PlaceAll(EPVM{}, tasks, nodes, nil)
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
	for _, p := range PlaceAll(EPVM{}, small, nodes, nil) {
		per[p.Node.Name]++
	}
	if per["w1"] != 3 || per["w2"] != 3 || per["w3"] != 3 {
		t.Errorf("9 zero-size tasks on 3 idle workers: %v, want 3 each", per)
	}
}

func withPort(t api.Task, container, host string) api.Task {
	if t.ExposedPorts == nil {
		t.ExposedPorts = api.PortSet{}
		t.PortBindings = map[string]string{}
	}
	t.ExposedPorts[container] = struct{}{}
	t.PortBindings[container] = host
	return t
}

func TestStaticHostPorts(t *testing.T) {
	task := api.Task{PortBindings: map[string]string{
		"7777/tcp": "7777", "53/udp": "127.0.0.1:5353", "80/tcp": "", "81/tcp": "0", "82/tcp": "[::1]:8082", "83/tcp": "7777",
	}}
	if got := strings.Join(task.StaticHostPorts(), ","); got != "5353/udp,7777/tcp,8082/tcp" {
		t.Fatalf("StaticHostPorts = %s", got)
	}
	if got := (api.Task{}).StaticHostPorts(); got != nil {
		t.Fatalf("no bindings: %v", got)
	}
}

// TestPlace_HostPorts: a static host port is exclusive per worker; a worker
// whose port another placed task holds is no candidate, and a task that finds
// its port taken everywhere waits with a reason naming the port and holders.
func TestPlace_HostPorts(t *testing.T) {
	const gib = 1 << 30
	holder1, holder2 := uuid.New(), uuid.New()
	w1, w2 := node("w1", 2, 2*gib, 0, 0, 0), node("w2", 2, 2*gib, 1, gib, 1)
	used := UsedHostPorts(refs(
		withPort(api.Task{ID: holder1, Worker: "w1", State: api.Running}, "7777/tcp", "7777"),
		withPort(api.Task{ID: holder2, Worker: "w2", State: api.Scheduled}, "80/tcp", "127.0.0.1:7777"),
		withPort(api.Task{ID: uuid.New(), Worker: "w2", State: api.Failed}, "9999/tcp", "9999"),  // ended: holds nothing
		withPort(api.Task{ID: uuid.New(), Worker: "w2", State: api.Running}, "8888/tcp", ""),     // random host port
		withPort(api.Task{ID: uuid.New(), Worker: "w2", State: api.Running}, "8888/udp", "7777"), // other protocol
	))
	want7777 := withPort(api.Task{ID: uuid.New()}, "7777/tcp", "7777")

	// Without host ports, EPVM prefers the idle w1.
	if n, ok, _ := PlaceFree(EPVM{}, api.Task{ID: uuid.New()}, []api.Node{w1, w2}, used); !ok || n.Name != "w1" {
		t.Fatalf("portless task on %q, want w1", n.Name)
	}
	if n, ok, _ := PlaceFree(EPVM{}, withPort(api.Task{ID: uuid.New()}, "9999/tcp", "9999"), []api.Node{w1, w2}, used); !ok || n.Name != "w1" {
		t.Fatalf("free port: on %q, want w1 (an ended task holds no port)", n.Name)
	}
	// Nothing held: the idle w1, as for a portless task.
	if n, ok, reason := PlaceFree(EPVM{}, want7777, []api.Node{w1, w2}, UsedHostPorts(nil)); !ok || n.Name != "w1" {
		t.Fatalf("nothing used: on %q (%s)", n.Name, reason)
	}
	// w1 holds 7777/tcp: the busier w2 is used, although it holds 7777/udp.
	onlyW1 := UsedHostPorts(refs(
		withPort(api.Task{ID: holder1, Worker: "w1", State: api.Running}, "7777/tcp", "7777"),
		withPort(api.Task{ID: uuid.New(), Worker: "w2", State: api.Running}, "8888/udp", "7777"),
	))
	if n, ok, reason := PlaceFree(EPVM{}, want7777, []api.Node{w1, w2}, onlyW1); !ok || n.Name != "w2" {
		t.Fatalf("7777/tcp taken on w1: on %q (ok %v, %s), want w2", n.Name, ok, reason)
	}
	// Taken everywhere (on w2 by a binding on one host address).
	_, ok, reason := PlaceFree(EPVM{}, want7777, []api.Node{w1, w2}, used)
	wantReason := "host port 7777/tcp is taken on every live worker (w1: task " + holder1.String() + "; w2: task " + holder2.String() + ")"
	if ok || reason != wantReason {
		t.Fatalf("taken everywhere: ok %v, reason %q, want %q", ok, reason, wantReason)
	}
	// The holder itself is not kept off its own worker (restart in place).
	self := withPort(api.Task{ID: holder1}, "7777/tcp", "7777")
	if n, ok, reason := PlaceFree(EPVM{}, self, []api.Node{w1}, used); !ok || n.Name != "w1" {
		t.Fatalf("holder on its own worker: on %q (%s)", n.Name, reason)
	}
	// Mixed: one worker full, the other holding the port.
	full := node("w2", 2, 2*gib, 2, gib, 1)
	_, ok, reason = PlaceFree(EPVM{}, withPort(api.Task{ID: uuid.New(), Cpu: 1}, "7777/tcp", "7777"), []api.Node{w1, full}, used)
	if ok || reason != "no worker has room for cpu 1.00, memory 0, disk 0 and host ports 7777/tcp (w1: host port 7777/tcp taken by task "+holder1.String()+"; w2: 0.00 cores free)" {
		t.Fatalf("mixed: ok %v, reason %q", ok, reason)
	}
	// Place (no port view) ignores ports, as before.
	if n, ok, _ := Place(EPVM{}, want7777, []api.Node{w1, w2}); !ok || n.Name != "w1" {
		t.Fatalf("Place without ports: on %q", n.Name)
	}
}

// TestPlaceAll_HostPortsCountAgainstEachOther: tasks of one pass asking the
// same host port go to different workers; the one too many waits, and the
// given view is not modified.
func TestPlaceAll_HostPortsCountAgainstEachOther(t *testing.T) {
	const gib = 1 << 30
	nodes := []api.Node{node("w1", 2, 2*gib, 0, 0, 0), node("w2", 2, 2*gib, 0, 0, 0), node("w3", 2, 2*gib, 0, 0, 0)}
	used := UsedHostPorts(nil)
	var tasks []api.Task
	for i := 0; i < 4; i++ {
		tasks = append(tasks, withPort(api.Task{ID: uuid.New(), Image: "x"}, "7777/tcp", "7777"))
	}
	tasks = append(tasks, api.Task{ID: uuid.New(), Image: "x"})
	got := PlaceAll(&RoundRobin{}, tasks, nodes, used)
	seen := map[string]bool{}
	for _, p := range got[:3] {
		if !p.OK || seen[p.Node.Name] {
			t.Fatalf("decisions %+v: want the first three on three different workers", got)
		}
		seen[p.Node.Name] = true
	}
	if p := got[3]; p.OK || !strings.HasPrefix(p.Reason, "host port 7777/tcp is taken on every live worker (w1: task ") {
		t.Fatalf("4th task: placed %v on %q, reason %q", p.OK, p.Node.Name, p.Reason)
	}
	if !got[4].OK {
		t.Fatalf("a portless task after them waits: %q", got[4].Reason)
	}
	if len(used) != 0 {
		t.Fatalf("PlaceAll modified the port view: %v", used)
	}
}

// With hundreds of workers a pending task's reason names ten of them and
// counts the rest: it is replicated and shown in listings.
func TestPlace_ReasonNamesAtMostTenWorkers(t *testing.T) {
	var nodes []api.Node
	for i := range 300 {
		nodes = append(nodes, node(fmt.Sprintf("w%03d", i), 1, 0, 1, 0, 1))
	}
	_, ok, reason := Place(EPVM{}, api.Task{Cpu: 1}, nodes)
	if ok {
		t.Fatal("placed a task on full workers")
	}
	if !strings.HasPrefix(reason, "no worker has room for cpu 1.00, memory 0, disk 0 (w000: 0.00 cores free; ") ||
		!strings.HasSuffix(reason, "w009: 0.00 cores free; and 290 more workers)") || strings.Contains(reason, "w010") {
		t.Fatalf("reason %q: want the first ten workers named and 290 counted", reason)
	}
}

// refs returns pointers to copies of ts, as FSM.LiveTaskRefs gives them.
func refs(ts ...api.Task) []*api.Task {
	out := make([]*api.Task, len(ts))
	for i := range ts {
		out[i] = &ts[i]
	}
	return out
}

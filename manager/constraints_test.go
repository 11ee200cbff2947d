package manager

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// labelled is an alive worker with room, carrying labels "k=v" and, for the
// spreading tests, tasks per service ("web=2").
func labelled(name string, labels ...string) api.Node {
	n := api.Node{Name: name, State: api.NodeAlive, RuntimeAvailable: true, Cpu: 4, Memory: 4 << 30, Disk: 4 << 30}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[k] = v
	}
	return n
}

func withService(n api.Node, service string, count int) api.Node {
	n.ServiceTasks = map[string]int{service: count}
	n.TaskCount += count
	return n
}

// Constraints are required, Prefer ranks, and a task no worker meets waits
// with a reason naming the constraints and what the live workers carry.
func TestPlace_Constraints(t *testing.T) {
	a1, a2, b := labelled("a1", "zone=a"), labelled("a2", "zone=a", "disk=ssd"), labelled("b", "zone=b", "disk=hdd")
	bare := labelled("bare")
	deadB := labelled("deadb", "zone=b")
	deadB.State = api.NodeDead
	drainedB := labelled("drainedb", "zone=b")
	drainedB.Drain = true
	busyB := labelled("busyb", "zone=b")
	busyB.AllocatedCpu, busyB.TaskCount = 2.5, 7
	task := func(cons, prefer []string) api.Task {
		return api.Task{ID: uuid.New(), Image: "x", Cpu: 1, Constraints: cons, Prefer: prefer}
	}
	cases := []struct {
		name   string
		task   api.Task
		nodes  []api.Node
		want   string // the node chosen, or the reason
		placed bool
	}{
		{"no constraint: anywhere", task(nil, nil), []api.Node{bare}, "bare", true},
		{"required zone", task([]string{"zone==b"}, nil), []api.Node{a1, a2, b, bare}, "b", true},
		{"two required", task([]string{"zone==a", "disk==ssd"}, nil), []api.Node{a1, a2, b}, "a2", true},
		{"!= excludes the value", task([]string{"zone!=a"}, nil), []api.Node{a1, a2, b}, "b", true},
		{"!= holds without the key", task([]string{"disk!=hdd", "zone!=b"}, nil), []api.Node{b, a1}, "a1", true},
		{"required beats load", task([]string{"zone==b"}, nil), []api.Node{busyB, bare}, "busyb", true},
		{"nobody meets it", task([]string{"zone==b"}, nil), []api.Node{a1, a2, bare},
			"no worker meets zone==b (3 alive workers: zone=a ×2, no zone ×1)", false},
		{"one alive worker", task([]string{"zone==c"}, nil), []api.Node{a1},
			"no worker meets zone==c (1 alive worker: zone=a ×1)", false},
		{"dead workers do not count", task([]string{"zone==b"}, nil), []api.Node{a1, deadB},
			"no worker meets zone==b (1 alive worker: zone=a ×1)", false},
		{"only the unmet constraint is named", task([]string{"zone==a", "gpu==yes"}, nil), []api.Node{a1, b},
			"no worker meets gpu==yes (2 alive workers: no gpu ×2)", false},
		{"each met somewhere, never together", task([]string{"zone==a", "disk==hdd"}, nil), []api.Node{a1, a2, b},
			"no worker meets all of zone==a, disk==hdd (3 alive workers: zone=a disk=ssd ×1, zone=a no disk ×1, zone=b disk=hdd ×1)", false},
		{"met only by a draining worker: the room is the reason", task([]string{"zone==b"}, nil), []api.Node{a1, drainedB},
			"no worker has room for cpu 1.00, memory 0, disk 0 (drainedb: draining)", false},
		{"met only by a full worker: the room is the reason", api.Task{ID: uuid.New(), Image: "x", Cpu: 2, Constraints: []string{"zone==b"}}, []api.Node{a1, busyB},
			"no worker has room for cpu 2.00, memory 0, disk 0 (busyb: 1.50 cores free)", false},
		{"no live worker at all", task([]string{"zone==b"}, nil), []api.Node{deadB}, "waiting for a live worker", false},
		{"an invalid constraint never holds", task([]string{"zone=b"}, nil), []api.Node{b},
			`no worker meets invalid constraint "zone=b" (1 alive worker)`, false},
		{"prefer ranks first", task(nil, []string{"disk==ssd"}), []api.Node{a1, a2, b}, "a2", true},
		{"prefer beats load", task(nil, []string{"zone==b"}), []api.Node{a1, busyB}, "busyb", true},
		{"more preferences met rank first", task(nil, []string{"zone==a", "disk==ssd"}), []api.Node{b, a1, a2}, "a2", true},
		{"prefer met nowhere: anywhere", task(nil, []string{"gpu==yes"}), []api.Node{a1}, "a1", true},
		{"prefer among the required", task([]string{"zone==a"}, []string{"disk==hdd", "zone==b"}), []api.Node{a1, b}, "a1", true},
		{"a preferred worker without room is passed over", task(nil, []string{"zone==b"}), []api.Node{a1, func() api.Node {
			n := labelled("fullb", "zone=b")
			n.AllocatedCpu = 4
			return n
		}()}, "a1", true},
	}
	for _, tc := range cases {
		for _, s := range []Scheduler{EPVM{}, &RoundRobin{}} {
			t.Run(fmt.Sprintf("%s/%T", tc.name, s), func(t *testing.T) {
				n, ok, reason := Place(s, tc.task, tc.nodes)
				got := reason
				if ok {
					got = n.Name
				}
				if ok != tc.placed || got != tc.want {
					t.Fatalf("placed %v %q, want %v %q", ok, got, tc.placed, tc.want)
				}
			})
		}
	}
}

// The tasks of one service go to the workers running fewest of them: the
// decisions of one pass count (PlaceAll), and so do the tasks placed in
// earlier passes (fsm.Nodes counts them per service). Spreading comes after
// constraints and Prefer, and before the scheduler's own order.
func TestPlaceAll_SpreadsAService(t *testing.T) {
	svc := func(service string, n int, edit func(*api.Task)) []api.Task {
		var out []api.Task
		for i := 0; i < n; i++ {
			t := api.Task{ID: uuid.New(), Image: "x", Service: service}
			if edit != nil {
				edit(&t)
			}
			out = append(out, t)
		}
		return out
	}
	per := func(ps []Placement) string {
		count := map[string]int{}
		for _, p := range ps {
			if !p.OK {
				count["pending"]++
				continue
			}
			count[p.Node.Name]++
		}
		var out []string
		for n, c := range count {
			out = append(out, fmt.Sprintf("%s:%d", n, c))
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	// w1 is the quietest by far: E-PVM alone would put everything there.
	quiet := labelled("w1", "zone=a")
	busy2, busy3 := labelled("w2", "zone=a"), labelled("w3", "zone=b")
	busy2.AllocatedCpu, busy2.TaskCount = 2, 10
	busy3.AllocatedCpu, busy3.TaskCount = 2, 10
	nodes := []api.Node{quiet, busy2, busy3}
	for _, s := range []Scheduler{EPVM{}, &RoundRobin{}} {
		name := fmt.Sprintf("%T", s)
		if got := per(PlaceAll(s, svc("web", 3, nil), nodes, nil)); got != "w1:1 w2:1 w3:1" {
			t.Errorf("%s: 3 tasks of a service on 3 workers in one pass: %s, want one each", name, got)
		}
		if got := per(PlaceAll(s, svc("web", 6, nil), nodes, nil)); got != "w1:2 w2:2 w3:2" {
			t.Errorf("%s: 6 tasks of a service on 3 workers: %s, want two each", name, got)
		}
		if got := per(PlaceAll(s, svc("web", 4, func(t *api.Task) { t.Constraints = []string{"zone==a"} }), nodes, nil)); got != "w1:2 w2:2" {
			t.Errorf("%s: 4 tasks constrained to zone a: %s, want two on each zone-a worker", name, got)
		}
		if got := per(PlaceAll(s, svc("web", 3, func(t *api.Task) { t.Prefer = []string{"zone==b"} }), nodes, nil)); got != "w3:3" {
			t.Errorf("%s: preferring zone b: %s, want all on w3 (Prefer ranks before spreading)", name, got)
		}
		// Other services' tasks do not count; this one's already placed do.
		placed := []api.Node{withService(quiet, "web", 1), withService(busy2, "api", 3), busy3}
		if got := per(PlaceAll(s, svc("web", 2, nil), placed, nil)); got != "w2:1 w3:1" {
			t.Errorf("%s: with one web task on w1 already: %s, want the next two on w2 and w3", name, got)
		}
	}
	// A task of no service is placed by the scheduler's order alone.
	if got := per(PlaceAll(EPVM{}, svc("", 3, nil), nodes, nil)); got != "w1:3" {
		t.Errorf("tasks of no service: %s, want all on the quiet w1", got)
	}
	// PlaceAll leaves its caller's nodes alone.
	if nodes[0].ServiceTasks != nil || nodes[0].TaskCount != 0 {
		t.Errorf("PlaceAll changed its caller's nodes: %+v", nodes[0])
	}
}

// Across passes the count comes from the replicated state: fsm.Nodes counts
// the live tasks of each service per worker.
func TestPlace_SpreadAcrossPasses(t *testing.T) {
	f := fsm.New()
	now := time.Now()
	for _, w := range []string{"w1", "w2", "w3"} {
		f.ApplyCommand(fsm.UpsertWorker{Node: api.Node{Name: w, State: api.NodeAlive, RuntimeAvailable: true, Cpu: 4, Memory: 4 << 30}})
	}
	if r := f.ApplyCommand(fsm.PutService{Service: api.Service{Name: "web", Count: 3, Task: api.Task{Image: "x"}}, Time: now}); r.Err != nil {
		t.Fatal(r.Err)
	}
	var got []string
	for i := 0; i < 3; i++ {
		task := api.Task{ID: uuid.New(), Image: "x", Service: "web"}
		f.ApplyCommand(fsm.SubmitTask{Task: task, Time: now})
		n, ok, reason := Place(&RoundRobin{}, task, f.Nodes()) // a new cursor each time: only spreading can help
		if !ok {
			t.Fatal(reason)
		}
		if r := f.ApplyCommand(fsm.AssignTask{ID: task.ID, Worker: n.Name, Generation: 1}); r.Err != nil {
			t.Fatal(r.Err)
		}
		got = append(got, n.Name)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "w1,w2,w3" {
		t.Fatalf("three tasks of one service placed one pass each on %v, want one per worker", got)
	}
	for _, n := range f.Nodes() {
		if n.ServiceTasks["web"] != 1 {
			t.Errorf("worker %s counts %v tasks per service, want web:1", n.Name, n.ServiceTasks)
		}
	}
}

// The leader records the labels a worker gossips, places a constrained task
// on the worker meeting it, and records the reason of one nobody meets.
func TestLoop_LabelsAndConstraints(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.worker("w2")
	h.gossip.mu.Lock()
	h.gossip.members[0].Meta.Labels = map[string]string{"zone": "a"}
	h.gossip.members[1].Meta.Labels = map[string]string{"zone": "b"}
	h.gossip.mu.Unlock()
	h.submit("tb", func(t *api.Task) { t.Constraints = []string{"zone==b"} })
	h.submit("tc", func(t *api.Task) { t.Constraints = []string{"zone==c"} })
	// A service of one: the leader makes its task at the end of a pass
	// and places it in the next.
	h.seed(fsm.PutService{Service: api.Service{Name: "web", Count: 1, Task: api.Task{Image: "cube-echo:latest"}}, Time: time.Now().UTC()})
	h.pass()
	h.pass()
	if n := h.f.Nodes(); n[0].ServiceTasks["web"]+n[1].ServiceTasks["web"] != 1 {
		t.Errorf("the service's task is not counted on its worker: %v, %v", n[0].ServiceTasks, n[1].ServiceTasks)
	}
	for w, zone := range map[string]string{"w1": "a", "w2": "b"} {
		if n, _ := h.f.Worker(w); n.Labels["zone"] != zone {
			t.Errorf("worker %s recorded with labels %v, want zone=%s", w, n.Labels, zone)
		}
	}
	if tb := h.task("tb"); tb.Worker != "w2" {
		t.Errorf("task constrained to zone b placed on %q, want w2", tb.Worker)
	}
	tc := h.task("tc")
	if want := "no worker meets zone==c (2 alive workers: zone=a ×1, zone=b ×1)"; tc.State != api.Pending || tc.Reason != want {
		t.Errorf("task constrained to zone c: %s %q, want Pending %q", tc.State, tc.Reason, want)
	}
	// A pass with nothing changed records nothing again (the derived
	// per-service counts do not make a worker look changed).
	h.reset()
	h.pass()
	for _, c := range h.commands() {
		if strings.HasPrefix(c, "upsert ") || strings.HasPrefix(c, "note ") {
			t.Errorf("a quiet pass committed %s", c)
		}
	}
	// A worker restarted with the label is recorded, and the task placed.
	h.gossip.mu.Lock()
	h.gossip.members[0].Meta.Labels = map[string]string{"zone": "c"}
	h.gossip.mu.Unlock()
	h.pass()
	if tc := h.task("tc"); tc.Worker != "w1" {
		t.Errorf("after w1 was labelled zone=c: task %s on %q, want w1", tc.State, tc.Worker)
	}
}

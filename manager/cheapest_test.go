package manager

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// threeSteps hides EPVM's one-pass choice: PlaceFree then takes the three
// steps of the Scheduler interface.
type threeSteps struct{ Scheduler }

// EPVM's one-pass choice (cheapest) is the three steps' choice: on random
// workers (labels, liveness, drain, capacity, allocations, service tasks,
// held host ports) and tasks (resources, constraints, preferences, some
// invalid, services, static host ports), both pick the same worker, or both
// none with the same reason. The deciding ties are made frequent: few
// label values, equal capacities, equal task counts.
func TestPlaceFree_OnePassChoosesAsTheThreeSteps(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	rules := []string{"zone==a", "zone!=b", "disk==ssd", "rack in (r1,r2)", "gpu", "not a rule ==="}
	var slow threeSteps
	for trial := range 5000 {
		n := 1 + rng.IntN(12)
		nodes := make([]api.Node, n)
		ports := HostPortUse{}
		for i := range nodes {
			nd := api.Node{
				Name: fmt.Sprintf("w%02d", rng.IntN(100)*100+i), State: api.NodeAlive, RuntimeAvailable: rng.IntN(10) > 0,
				Drain: rng.IntN(10) == 0, Cpu: float64(rng.IntN(3) * 2), Memory: int64(rng.IntN(3)) << 30, Disk: int64(rng.IntN(2)) << 34,
				TaskCount: rng.IntN(3), Labels: map[string]string{"zone": pick("a", "b", "c"), "disk": pick("ssd", "hdd"), "rack": pick("r1", "r2", "r3")},
			}
			if rng.IntN(8) == 0 {
				nd.State = api.NodeDead
			}
			if rng.IntN(3) == 0 {
				nd.Labels["gpu"] = "1"
			}
			nd.AllocatedCpu = float64(rng.IntN(3))
			nd.AllocatedMemory = int64(rng.IntN(2)) << 30
			if rng.IntN(2) == 0 {
				nd.ServiceTasks = map[string]int{"web": rng.IntN(3)}
			}
			if rng.IntN(3) == 0 {
				ports[nd.Name] = map[string]uuid.UUID{"7777/tcp": uuid.New()}
			}
			nodes[i] = nd
		}
		task := api.Task{ID: uuid.New(), Image: "x", Cpu: float64(rng.IntN(2)), Memory: int64(rng.IntN(2)) << 29}
		for range rng.IntN(3) {
			task.Constraints = append(task.Constraints, pick(rules...))
		}
		for range rng.IntN(3) {
			task.Prefer = append(task.Prefer, pick(rules...))
		}
		if rng.IntN(2) == 0 {
			task.Service = "web"
		}
		if rng.IntN(3) == 0 {
			task.PortBindings = map[string]string{"7777/tcp": "7777"}
		}
		slow.Scheduler = EPVM{}
		fn, fok, freason := PlaceFree(EPVM{}, task, nodes, ports)
		sn, sok, sreason := PlaceFree(slow, task, nodes, ports)
		if fok != sok || fn.Name != sn.Name || freason != sreason {
			t.Fatalf("trial %d: one pass chose %q (%v, %q), the three steps %q (%v, %q)\ntask %+v\nnodes %+v\nports %v",
				trial, fn.Name, fok, freason, sn.Name, sok, sreason, task, nodes, ports)
		}
	}
}

// PlaceAll with EPVM spreads a burst as before: each decision counts against
// its worker before the next (the one pass reads the view PlaceAll updates).
func TestPlaceAll_OnePassSpreadsABurst(t *testing.T) {
	nodes := []api.Node{node("w1", 4, 4<<30, 0, 0, 0), node("w2", 4, 4<<30, 0, 0, 0), node("w3", 4, 4<<30, 0, 0, 0)}
	var tasks []api.Task
	for range 9 {
		tasks = append(tasks, api.Task{ID: uuid.New(), Image: "x", Cpu: 0.5})
	}
	per := map[string]int{}
	for _, p := range PlaceAll(EPVM{}, tasks, nodes, nil) {
		if !p.OK {
			t.Fatalf("not placed: %s", p.Reason)
		}
		per[p.Node.Name]++
	}
	if per["w1"] != 3 || per["w2"] != 3 || per["w3"] != 3 {
		t.Fatalf("9 tasks on 3 equal workers: %v, want 3 each", per)
	}
}

// BenchmarkPlaceAll: a burst of 5,000 tasks (no resources asked, as make
// scale's) on 200 workers, EPVM's one pass against the three steps.
func BenchmarkPlaceAll(b *testing.B) {
	nodes := make([]api.Node, 200)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("w%03d", i), 2, 4<<30, 0, 0, 0)
		nodes[i].Labels = map[string]string{"zone": "a"}
	}
	tasks := make([]api.Task, 5000)
	for i := range tasks {
		tasks[i] = api.Task{ID: uuid.New(), Image: "x"}
	}
	for _, s := range []struct {
		name string
		s    Scheduler
	}{{"one-pass", EPVM{}}, {"three-steps", threeSteps{EPVM{}}}} {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ps := PlaceAll(s.s, tasks, nodes, nil); !ps[len(ps)-1].OK {
					b.Fatal(ps[len(ps)-1].Reason)
				}
			}
		})
	}
}

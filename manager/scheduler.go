package manager

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Scheduler chooses a worker for a task, behind the seed's three-step
// interface. Every input comes from the replicated state (capacity and the
// allocation derived from placed tasks), so a decision costs microseconds and
// never samples a machine.
type Scheduler interface {
	// SelectCandidateNodes keeps the live workers with room for the task.
	SelectCandidateNodes(t api.Task, nodes []api.Node) []api.Node
	// Score rates each candidate; lower is better.
	Score(t api.Task, candidates []api.Node) map[string]float64
	// Pick returns the best candidate.
	Pick(scores map[string]float64, candidates []api.Node) api.Node
}

// NewScheduler returns the scheduler named kind: "roundrobin" or "epvm".
func NewScheduler(kind string) (Scheduler, error) {
	switch kind {
	case "roundrobin", "round-robin":
		return &RoundRobin{}, nil
	case "epvm", "e-pvm", "":
		return EPVM{}, nil
	}
	return nil, fmt.Errorf("scheduler %q is not one of roundrobin, epvm", kind)
}

// Place runs the three steps. ok is false when no worker fits; reason then
// says why, for a person. It ignores host ports; see PlaceFree.
func Place(s Scheduler, t api.Task, nodes []api.Node) (node api.Node, ok bool, reason string) {
	return PlaceFree(s, t, nodes, nil)
}

// PlaceFree is Place that also treats each static host port of t as exclusive
// per worker: a worker on which ports records one of them as held by another
// task is not a candidate. A task without static host ports is placed
// exactly as by Place.
//
// Both place in this order (see constraints.go): only workers whose labels
// meet every one of t.Constraints are candidates; of the candidates with
// room, those meeting the most of t.Prefer, then, for a task of a service,
// those with the fewest live tasks of its service (Node.ServiceTasks) are
// kept; the scheduler's Score and Pick choose among them.
func PlaceFree(s Scheduler, t api.Task, nodes []api.Node, ports HostPortUse) (node api.Node, ok bool, reason string) {
	if c, fast := s.(coster); fast {
		if i := cheapest(c, t, nodes, ports); i >= 0 {
			return nodes[i], true, ""
		}
		return api.Node{}, false, whyNotPlaced(t, nodes, ports)
	}
	cands := s.SelectCandidateNodes(t, portFree(t, meeting(parseRules(t.Constraints), nodes), ports))
	if len(cands) == 0 {
		return api.Node{}, false, whyNotPlaced(t, nodes, ports)
	}
	cands = rank(t, parseRules(t.Prefer), cands)
	return s.Pick(s.Score(t, cands), cands), true, ""
}

// coster is a Scheduler whose choice is the lowest cost of a task on a
// worker, ties by name, with no state between decisions (EPVM). PlaceFree
// then chooses in one pass over the workers (cheapest) instead of the three
// steps' lists and score map: the same choice, without copying every
// fitting worker and building a map of them for each task (PlaceAll is
// tasks × workers; the copies were a sixth of a leader's CPU in a burst at
// 200 workers, bench/scale/SCALE.md).
type coster interface {
	cost(t *api.Task, n *api.Node) float64
}

// cheapest returns the index in nodes of the worker PlaceFree's three steps
// would choose for t with c's Score and Pick, or -1 if none is a candidate:
// among the workers meeting every constraint, with room and t's static host
// ports free, the lowest of (prefer rules not met, live tasks of t's
// service, cost, name).
func cheapest(c coster, t api.Task, nodes []api.Node, ports HostPortUse) int {
	cons, prefer := parseRules(t.Constraints), parseRules(t.Prefer)
	checkPorts := len(ports) > 0 && len(t.PortBindings) > 0
	best, bMiss, bSvc, bCost := -1, 0, 0, 0.0
	for i := range nodes {
		n := &nodes[i]
		if !meetsAll(cons, n.Labels) || !fits(&t, n) {
			continue
		}
		if checkPorts {
			if _, _, taken := ports.taken(n.Name, t); taken {
				continue
			}
		}
		miss := 0
		for _, r := range prefer {
			if !r.holds(n.Labels) {
				miss++
			}
		}
		svc := 0
		if t.Service != "" {
			svc = n.ServiceTasks[t.Service]
		}
		cost := c.cost(&t, n)
		if best >= 0 && cmp.Or(cmp.Compare(miss, bMiss), cmp.Compare(svc, bSvc), cmp.Compare(cost, bCost),
			strings.Compare(n.Name, nodes[best].Name)) >= 0 {
			continue
		}
		best, bMiss, bSvc, bCost = i, miss, svc, cost
	}
	return best
}

// Placement is one decision of PlaceAll: the task goes to Node, or, if !OK,
// waits for the Reason given.
type Placement struct {
	Task   api.Task
	Node   api.Node
	OK     bool
	Reason string
}

// PlaceAll places tasks one after the other, counting each decision's
// allocation, service and static host ports against its node before the
// next one, so that a burst of submissions is spread (the tasks of one
// service over different workers) and never over-commits a worker nor
// binds one host port twice, although the decisions are committed together.
// ports holds the host ports already taken (nil: none); neither nodes nor
// ports is modified.
func PlaceAll(s Scheduler, tasks []api.Task, nodes []api.Node, ports HostPortUse) []Placement {
	view := append([]api.Node(nil), nodes...)
	held := ports.clone()
	out := make([]Placement, 0, len(tasks))
	for _, t := range tasks {
		n, ok, reason := PlaceFree(s, t, view, held)
		out = append(out, Placement{Task: t, Node: n, OK: ok, Reason: reason})
		if !ok {
			continue
		}
		allocate(view, n.Name, t)
		held.take(n.Name, t)
	}
	return out
}

// allocate counts task t against the node named name in nodes.
func allocate(nodes []api.Node, name string, t api.Task) {
	for i := range nodes {
		if nodes[i].Name == name {
			nodes[i].AllocatedCpu = api.AddCPU(nodes[i].AllocatedCpu, t.Cpu)
			nodes[i].AllocatedMemory = api.AddBytes(nodes[i].AllocatedMemory, t.Memory)
			nodes[i].AllocatedDisk = api.AddBytes(nodes[i].AllocatedDisk, t.Disk)
			nodes[i].TaskCount++
			countService(&nodes[i], t.Service, 1)
		}
	}
}

// fits reports whether the node is alive, can run containers, is not being
// drained, allows what the task asks (see allowed) and has room.
// A capacity of 0 means "unknown" and does not constrain (a worker that did
// not advertise it).
func fits(t *api.Task, n *api.Node) bool {
	if n.State != api.NodeAlive || !n.RuntimeAvailable || n.Drain || !allowed(t, n) {
		return false
	}
	if n.Memory > 0 && !roomFor(n.AllocatedMemory, t.Memory, n.Memory) {
		return false
	}
	if n.Disk > 0 && !roomFor(n.AllocatedDisk, t.Disk, n.Disk) {
		return false
	}
	if n.Cpu > 0 && n.AllocatedCpu+t.Cpu > n.Cpu+1e-9 {
		return false
	}
	return true
}

// roomFor reports whether want more bytes fit beside allocated within
// capacity, without computing allocated+want, which could overflow int64
// and wrap to a negative number that fits anywhere.
func roomFor(allocated, want, capacity int64) bool {
	return want <= capacity-allocated
}

func selectFitting(t api.Task, nodes []api.Node) []api.Node {
	var out []api.Node
	for i := range nodes {
		if fits(&t, &nodes[i]) {
			out = append(out, nodes[i])
		}
	}
	return out
}

// noFitReason explains why no worker was chosen: per live worker, the first
// thing that rules it out (runtime, drain, a resource, then a host port).
func noFitReason(t api.Task, nodes []api.Node, ports HostPortUse) string {
	var alive int
	var why, byPort, blocked []string
	for _, n := range nodes {
		if n.State != api.NodeAlive {
			continue
		}
		alive++
		switch {
		case !n.RuntimeAvailable:
			why = append(why, n.Name+": container runtime unavailable")
		case n.Drain:
			why = append(why, n.Name+": draining")
		case n.Memory > 0 && !roomFor(n.AllocatedMemory, t.Memory, n.Memory):
			why = append(why, fmt.Sprintf("%s: %d bytes of memory free", n.Name, n.Memory-n.AllocatedMemory))
		case n.Disk > 0 && !roomFor(n.AllocatedDisk, t.Disk, n.Disk):
			why = append(why, fmt.Sprintf("%s: %d bytes of disk free", n.Name, n.Disk-n.AllocatedDisk))
		case n.Cpu > 0 && n.AllocatedCpu+t.Cpu > n.Cpu:
			why = append(why, fmt.Sprintf("%s: %.2f cores free", n.Name, n.Cpu-n.AllocatedCpu))
		default:
			if p, holder, taken := ports.taken(n.Name, t); taken {
				by := "task " + holder.String()
				if holder == uuid.Nil {
					by = "something else on its machine (a start failed there)"
				}
				why = append(why, fmt.Sprintf("%s: host port %s taken by %s", n.Name, p, by))
				byPort = append(byPort, fmt.Sprintf("%s: %s", n.Name, by))
				if !slices.Contains(blocked, p) {
					blocked = append(blocked, p)
				}
			}
		}
	}
	if alive == 0 {
		return "waiting for a live worker"
	}
	if len(byPort) == alive && len(blocked) == 1 {
		return fmt.Sprintf("host port %s is taken on every live worker (%s)", blocked[0], listed(byPort))
	}
	if len(byPort) == alive {
		return fmt.Sprintf("its host ports %s are taken on every live worker (%s)", strings.Join(t.StaticHostPorts(), ", "), listed(why))
	}
	ask := fmt.Sprintf("cpu %.2f, memory %d, disk %d", t.Cpu, t.Memory, t.Disk)
	if len(byPort) > 0 {
		ask += " and host ports " + strings.Join(t.StaticHostPorts(), ", ")
	}
	return fmt.Sprintf("no worker has room for %s (%s)", ask, listed(why))
}

// maxListed bounds the workers a pending task's reason names: the reason
// is replicated, shown in listings and recommitted when it changes, so with
// hundreds of workers it names the first few and counts the rest.
const maxListed = 10

// listed joins per-worker explanations with "; ", naming at most maxListed
// of them and counting the others.
func listed(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more workers", strings.Join(items[:maxListed], "; "), len(items)-maxListed)
}

// RoundRobin places tasks on the fitting workers in turn. Its cursor lives on
// the leader only; a new leader starts over, which is harmless.
type RoundRobin struct {
	last string
}

// SelectCandidateNodes keeps the fitting workers.
func (r *RoundRobin) SelectCandidateNodes(t api.Task, nodes []api.Node) []api.Node {
	return selectFitting(t, nodes)
}

// Score gives the first candidate after the previous pick (by name) score 0,
// the next 1, and so on.
func (r *RoundRobin) Score(_ api.Task, cands []api.Node) map[string]float64 {
	names := make([]string, len(cands))
	for i, n := range cands {
		names[i] = n.Name
	}
	sort.Strings(names)
	start := sort.SearchStrings(names, r.last)
	if start < len(names) && names[start] == r.last {
		start++
	}
	scores := make(map[string]float64, len(names))
	for i := range names {
		scores[names[(start+i)%len(names)]] = float64(i)
	}
	return scores
}

// Pick returns the lowest score and remembers it.
func (r *RoundRobin) Pick(scores map[string]float64, cands []api.Node) api.Node {
	best := pickLowest(scores, cands)
	r.last = best.Name
	return best
}

// EPVM is the Enhanced Parallel Virtual Machine scheduler of the seed, done
// right: a task's cost on a node is the growth of sum over resources of
// base^utilisation, so filling an already busy node costs more than a quiet
// one. CPU, memory and disk all count (the seed's CPU term cancelled out),
// utilisation comes from replicated allocation (the seed never tracked it),
// and dead nodes are filtered out before scoring (the seed scored them 0).
type EPVM struct{}

// epvmBase is the seed's base, the Lieb square-ice constant.
const epvmBase = 1.53960071783900203869

// SelectCandidateNodes keeps the fitting workers.
func (EPVM) SelectCandidateNodes(t api.Task, nodes []api.Node) []api.Node {
	return selectFitting(t, nodes)
}

// Score returns each candidate's marginal cost. Ties (tasks asking nothing)
// are broken by task count, so placement still spreads.
func (e EPVM) Score(t api.Task, cands []api.Node) map[string]float64 {
	scores := make(map[string]float64, len(cands))
	for i := range cands {
		scores[cands[i].Name] = e.cost(&t, &cands[i])
	}
	return scores
}

// cost is t's marginal cost on n, plus its task count as a tie-break.
func (EPVM) cost(t *api.Task, n *api.Node) float64 {
	cost := 0.0
	cost += marginal(n.AllocatedCpu, t.Cpu, n.Cpu)
	cost += marginal(float64(n.AllocatedMemory), float64(t.Memory), float64(n.Memory))
	cost += marginal(float64(n.AllocatedDisk), float64(t.Disk), float64(n.Disk))
	return cost + float64(n.TaskCount)*1e-6
}

func marginal(used, want, capacity float64) float64 {
	if capacity <= 0 || want == 0 {
		return 0 // nothing asked: no growth (and no math.Pow, twice per resource and worker)
	}
	return math.Pow(epvmBase, (used+want)/capacity) - math.Pow(epvmBase, used/capacity)
}

// Pick returns the lowest cost.
func (EPVM) Pick(scores map[string]float64, cands []api.Node) api.Node {
	return pickLowest(scores, cands)
}

// pickLowest returns the candidate with the lowest score, ties by name, so the
// choice is deterministic.
func pickLowest(scores map[string]float64, cands []api.Node) api.Node {
	best := cands[0]
	for _, n := range cands[1:] {
		s, b := scores[n.Name], scores[best.Name]
		if s < b || (s == b && n.Name < best.Name) {
			best = n
		}
	}
	return best
}

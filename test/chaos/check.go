package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/manager"
	"github.com/google/uuid"
)

// Input is everything the checks look at after a run, once the faults were
// healed and the cluster converged.
type Input struct {
	// Ops is the recorded history (Recorder.Ops).
	Ops []Op
	// Final is the task list from a consistent read on the leader.
	Final []api.Task
	// Running counts running containers per task ID, as the Docker engines of
	// the live workers list them by the cube.task label (not Cube's state).
	Running map[string]int
	// States is each manager's task list, taken at an equal applied index.
	States map[string][]api.Task
	// Leaders are the leadership observations polled from /cluster during
	// the run.
	Leaders []LeaderObs
	// Logs maps a node's name to its log.
	Logs map[string]string
	// Timeout bounds the linearizability check; 0 means no bound.
	Timeout time.Duration
	// Events are the connections of the /events subscribers (CheckEvents);
	// EventViews the caller's findings on their final views (a
	// subscriber's folded view that differs from its manager's state).
	Events     []EventConn
	EventViews []string
	// Services are the services from the same read as Final (after
	// convergence); nil when the run made none.
	Services []api.Service
}

// Check runs every check on in and returns the report, and the porcupine
// linearization info for WriteArtifacts.
func Check(in Input) (Report, porcupine.LinearizationInfo) {
	res, info := CheckLinearizable(in.Ops, in.Timeout)
	r := Report{Linearizable: res, Ops: make(map[Kind]Counts)}
	r.Lost, r.IneffectiveStops = CheckAcknowledged(in.Ops, in.Final)
	r.Duplicates, r.Orphans = CheckRunningOnce(in.Final, in.Running)
	r.Divergent = CheckSameState(in.States)
	r.LeaderTerms = CheckOneLeaderPerTerm(in.Leaders)
	r.Panics = ScanPanics(in.Logs)
	r.UnaskedStops = ScanLines(in.Logs, manager.StoppedUnaskedLog)
	r.Events = append(CheckEvents(in.Events), in.EventViews...)
	r.EventStats = SumEvents(in.Events)
	r.ServiceState = CheckServiceState(in.Services, in.Final, in.Running)
	r.LostServices = CheckServicesAcknowledged(in.Ops, in.Services)
	r.ServiceStats = SumServices(in.Ops, in.Services, in.Final)
	acked := make(map[uuid.UUID]bool)
	for _, op := range in.Ops {
		c := r.Ops[op.Kind]
		switch op.Outcome {
		case OK:
			c.OK++
		case Fail:
			c.Fail++
		default:
			c.Unknown++
		}
		r.Ops[op.Kind] = c
		if op.Kind == Submit && op.Outcome == OK {
			acked[op.TaskID] = true
		}
	}
	r.Acknowledged = len(acked)
	return r, info
}

// CheckLinearizable checks the history against RegistryModel, one task ID at
// a time. porcupine.Unknown means the checker ran out of time: inconclusive,
// which Report.OK counts as a failure. A timeout of 0 means no bound.
func CheckLinearizable(ops []Op, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(RegistryModel(), operations(ops), timeout)
}

// CheckAcknowledged checks the final state against the answers clients got:
// lost lists tasks whose submission was answered 201 or 200 but which the
// final state lacks; ineffectiveStops lists tasks whose stop was answered 200
// but whose final DesiredState is not Completed. A stop answered 409 promised
// nothing (the task had ended) and is not checked here.
func CheckAcknowledged(ops []Op, final []api.Task) (lost, ineffectiveStops []uuid.UUID) {
	byID := make(map[uuid.UUID]api.Task, len(final))
	for _, t := range final {
		byID[t.ID] = t
	}
	lostSet := make(map[uuid.UUID]bool)
	stopSet := make(map[uuid.UUID]bool)
	for _, op := range ops {
		if op.Outcome != OK {
			continue
		}
		t, ok := byID[op.TaskID]
		switch {
		case op.Kind == Submit && !ok:
			lostSet[op.TaskID] = true
		case op.Kind == Stop && !op.Ended && (!ok || t.DesiredState != api.Completed):
			stopSet[op.TaskID] = true
		}
	}
	return sortedIDs(lostSet), sortedIDs(stopSet)
}

// shouldRun reports whether a converged cluster must run the task: it was
// neither stopped nor given up on, and its current placement did not fail.
// A task that exited on its own (Completed, DesiredState Running) counts as
// one to run: the chaos workload is long-running servers that never exit.
func shouldRun(t api.Task) bool {
	return t.DesiredState == api.Running && t.State != api.Failed
}

// CheckRunningOnce compares the final state with the containers the Docker
// engines run. running maps a task ID (the cube.task label) to its count of
// running containers. dups maps every task that should run (DesiredState
// Running, State not Failed) but has other than exactly one container to
// its count (0 or 2+); orphans lists the label values of running containers
// whose task is stopped, failed or unknown to the final state.
func CheckRunningOnce(final []api.Task, running map[string]int) (dups map[uuid.UUID]int, orphans []string) {
	counts := make(map[string]int, len(running))
	for label, n := range running {
		if id, err := uuid.Parse(label); err == nil {
			label = id.String()
		}
		counts[label] += n
	}
	expected := make(map[string]bool)
	for _, t := range final {
		if !shouldRun(t) {
			continue
		}
		expected[t.ID.String()] = true
		if n := counts[t.ID.String()]; n != 1 {
			if dups == nil {
				dups = make(map[uuid.UUID]int)
			}
			dups[t.ID] = n
		}
	}
	for label, n := range counts {
		if n > 0 && !expected[label] {
			orphans = append(orphans, label)
		}
	}
	slices.Sort(orphans)
	return dups, orphans
}

// CheckSameState compares the managers' task lists, taken at an equal
// applied index. The largest group of equal lists (ties: the group holding
// the first manager by name) is the reference; it returns one line per
// manager outside it, naming the manager and the first difference.
func CheckSameState(states map[string][]api.Task) []string {
	groups := make(map[string][]string) // canonical JSON → managers
	for _, m := range slices.Sorted(maps.Keys(states)) {
		k := string(canonical(states[m]))
		groups[k] = append(groups[k], m)
	}
	if len(groups) <= 1 {
		return nil
	}
	var refKey string
	for k, g := range groups {
		ref := groups[refKey]
		if len(g) > len(ref) || (len(g) == len(ref) && g[0] < ref[0]) {
			refKey = k
		}
	}
	ref := groups[refKey][0]
	var out []string
	for k, g := range groups {
		if k == refKey {
			continue
		}
		for _, m := range g {
			out = append(out, fmt.Sprintf("%s differs from %s: %s", m, ref, diffTasks(states[ref], states[m])))
		}
	}
	slices.Sort(out)
	return out
}

// canonical encodes tasks sorted by ID, so that equal states encode equally.
func canonical(tasks []api.Task) []byte {
	s := append([]api.Task{}, tasks...) // nil and empty encode alike
	slices.SortFunc(s, func(a, b api.Task) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	b, _ := json.Marshal(s) // a Task always encodes
	return b
}

// diffTasks describes how tasks b differ from tasks a: how many differ and
// the first (by ID).
func diffTasks(a, b []api.Task) string {
	enc := func(tasks []api.Task) map[uuid.UUID][]byte {
		m := make(map[uuid.UUID][]byte, len(tasks))
		for _, t := range tasks {
			m[t.ID], _ = json.Marshal(t)
		}
		return m
	}
	ea, eb := enc(a), enc(b)
	ids := make(map[uuid.UUID]bool)
	for id := range ea {
		ids[id] = true
	}
	for id := range eb {
		ids[id] = true
	}
	n, first := 0, ""
	for _, id := range sortedIDs(ids) {
		ja, inA := ea[id]
		jb, inB := eb[id]
		var what string
		switch {
		case !inB:
			what = "missing"
		case !inA:
			what = "extra"
		case !bytes.Equal(ja, jb):
			what = "different"
		default:
			continue
		}
		if n++; n == 1 {
			first = fmt.Sprintf("task %s %s", id, what)
		}
	}
	if n == 0 {
		return "same tasks, different order or duplicates"
	}
	return fmt.Sprintf("%d task(s) differ, first %s", n, first)
}

// LeaderObs is one manager's answer to GET /cluster during the run.
type LeaderObs struct {
	// Manager is the answering manager's raft ID.
	Manager string
	// Term is its current raft term; Leader whether it said it leads.
	Term   uint64
	Leader bool
	// At is when the answer came.
	At time.Time
}

// ObserveLeader turns a /cluster answer into a LeaderObs. Only the
// manager's claim about itself is used: what it says about others is
// hearsay, possibly from an older term.
func ObserveLeader(info api.ClusterInfo, at time.Time) LeaderObs {
	return LeaderObs{Manager: info.Self, Term: info.Term, Leader: info.Self != "" && info.LeaderID == info.Self, At: at}
}

// CheckOneLeaderPerTerm returns every term in which more than one manager
// said it was the leader, with those managers sorted.
func CheckOneLeaderPerTerm(observations []LeaderObs) map[uint64][]string {
	leaders := make(map[uint64]map[string]bool)
	for _, o := range observations {
		if !o.Leader {
			continue
		}
		if leaders[o.Term] == nil {
			leaders[o.Term] = make(map[string]bool)
		}
		leaders[o.Term][o.Manager] = true
	}
	var out map[uint64][]string
	for term, ms := range leaders {
		if len(ms) > 1 {
			if out == nil {
				out = make(map[uint64][]string)
			}
			out[term] = slices.Sorted(maps.Keys(ms))
		}
	}
	return out
}

// panicMarkers are the substrings of log lines that report a crash: a Go
// panic or fatal runtime error, a data race report, and a handler panic that
// net/http recovered from (still a bug).
var panicMarkers = []string{"panic:", "fatal error:", "DATA RACE", "http: panic serving"}

// maxLogLine bounds one reported log line.
const maxLogLine = 300

// ScanPanics returns the lines of the logs (node name → log text) that
// report a crash, each prefixed by its node, nodes in name order.
func ScanPanics(logs map[string]string) []string { return ScanLines(logs, panicMarkers...) }

// ScanLines returns the lines of the logs (node name → log text) that hold
// any of markers, each prefixed by its node, nodes in name order.
func ScanLines(logs map[string]string, markers ...string) []string {
	var out []string
	for _, node := range slices.Sorted(maps.Keys(logs)) {
		for line := range strings.Lines(logs[node]) {
			line = strings.TrimSpace(line)
			for _, m := range markers {
				if strings.Contains(line, m) {
					if len(line) > maxLogLine {
						line = line[:maxLogLine] + "…"
					}
					out = append(out, node+": "+line)
					break
				}
			}
		}
	}
	return out
}

// sortedIDs returns the set's IDs in byte order.
func sortedIDs(set map[uuid.UUID]bool) []uuid.UUID {
	if len(set) == 0 {
		return nil
	}
	ids := slices.Collect(maps.Keys(set))
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

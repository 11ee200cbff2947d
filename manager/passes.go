package manager

import (
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Two kinds of pass. A full pass reads every live task: what it decides
// depends on all of them (host ports held, services' replicas, health
// checks to run, soft state to forget, the poll) or on time (back-offs,
// Scheduled timeouts, blocked tasks' recheck). A pass over changes reads
// only the tasks changed since the previous pass (fsm.TakeChanges) and
// those whose worker call just finished: a submission is placed, a report
// of an exit restarts its task, a stop is carried out, each at the cost of
// the change. Worker allocations come from the FSM's running sums either
// way (fsm.Nodes), not from a scan.
//
// With 100,000 live tasks a full pass costs about 170 ms on this machine
// (BenchmarkLeaderPass); done on every change, as before, it made every
// placement, restart and stop wait for it and for the rest after it, and
// placement fell to 60-80 a second when the state was large
// (bench/scale/SCALE.md). Full passes now come every max(Tick,
// fullEvery × their cost): every Tick on a small cluster, as before, and
// at most a quarter of a core on a large one. A full pass is owed sooner
// (as soon as the last one's cost has passed since it ended) when the
// change is not one task's: a service's record, a removed worker, a
// restored state, freed capacity while tasks are blocked, a changed task
// asking static host ports, belonging to a service or health-checked. A
// worker's record changing (gossip sees it dead, it is drained) is a
// change of the tasks placed on it (fsm.TakeChanges), read by a pass over
// changes.
const fullEvery = 3

// passPlan is the loop's memory of its passes.
type passPlan struct {
	// owed is set when something calls for a full pass that the
	// throttle put off.
	owed bool
	// fullEnd and fullCost are when the last full pass ended and what
	// it took.
	fullEnd  time.Time
	fullCost time.Duration
	// finished holds the tasks whose worker call ended since the last
	// pass: what the call learnt is the pass's to act on.
	finished map[uuid.UUID]struct{}
	// print is the workers' fingerprint (capacityPrint) after the last
	// pass's placements: another one at the next pass means capacity
	// changed, and blocked tasks must be tried again.
	print uint64
}

// opEnded notes a task whose op finished, for the next pass.
func (p *passPlan) opEnded(id uuid.UUID) {
	if p.finished == nil {
		p.finished = make(map[uuid.UUID]struct{})
	}
	p.finished[id] = struct{}{}
}

// full decides whether the pass starting at now reads every live task:
// all says the FSM saw a change that is not one task's, print is the
// workers' fingerprint now and blocked whether tasks wait for room.
func (p *passPlan) full(now time.Time, tick time.Duration, all bool, print uint64, blocked bool) bool {
	if all || (blocked && print != p.print) {
		p.owed = true
	}
	if p.fullEnd.IsZero() {
		return true // a new leader's first pass
	}
	since := now.Sub(p.fullEnd)
	return (p.owed && p.deferFor(now) == 0) || since >= max(tick, fullEvery*p.fullCost)
}

// deferFor is how long an owed full pass waits: until as long as the last
// one took has passed since it ended, so that full passes called for back
// to back take at most half a core, as the rest after a pass over changes
// does (rest). A full pass that costs less than restAfter is never put off.
func (p *passPlan) deferFor(now time.Time) time.Duration {
	if !p.owed || p.fullCost < restAfter {
		return 0
	}
	return max(0, p.fullCost-now.Sub(p.fullEnd))
}

// changed returns the IDs the pass over changes reads: those the FSM
// reported and those whose op finished.
func (p *passPlan) changed(ids []uuid.UUID) []uuid.UUID {
	for _, id := range ids {
		delete(p.finished, id) // listed once: a task read twice was placed twice
	}
	for id := range p.finished {
		ids = append(ids, id)
	}
	p.finished = nil
	return ids
}

// fullDone records a full pass that started at start.
func (p *passPlan) fullDone(start time.Time) {
	p.owed, p.finished = false, nil
	p.fullEnd = time.Now()
	p.fullCost = p.fullEnd.Sub(start)
}

// needsAll reports whether a changed task asks for a full pass: what is
// decided about it reads other tasks (the host ports held on each worker,
// its service's other replicas) or the set of all of them (the health
// checks to run).
func needsAll(t *api.Task) bool {
	return t.Service != "" || t.HealthCheck != "" || len(t.StaticHostPorts()) > 0
}

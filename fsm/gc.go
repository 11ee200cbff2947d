package fsm

import (
	"sort"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// collectGarbageLocked removes what c names and still qualifies (see
// CollectGarbage). Result.Collected counts what went.
func (f *FSM) collectGarbageLocked(c CollectGarbage) *Result {
	var res Result
	for _, id := range c.Tasks {
		if f.collectableLocked(id) {
			f.deleteLocked(id)
			res.Collected.Tasks++
		}
	}
	if len(c.Workers) > 0 {
		placed := f.placedWorkersLocked()
		for _, name := range c.Workers {
			n, ok := f.workers[name]
			if !ok || !departed(n) || placed[name] {
				continue
			}
			delete(f.workers, name)
			f.changes.everything()
			res.Collected.Workers++
			// A task given up on at this worker can no longer be confirmed
			// by it; should the worker come back with the container, the
			// leader stops it as unknown to the cluster.
			for id := range f.unconfirmed {
				if t := f.tasks[id]; t == nil || t.Worker == name {
					delete(f.unconfirmed, id)
				}
			}
		}
	}
	res.Changed = res.Collected.Tasks+res.Collected.Workers > 0
	return &res
}

// collectableLocked reports whether the task may be removed: it is
// finished and no container of its current placement can still run.
func (f *FSM) collectableLocked(id uuid.UUID) bool {
	t, ok := f.tasks[id]
	if !ok || !t.Finished() {
		return false
	}
	_, unconfirmed := f.unconfirmed[id]
	return !unconfirmed
}

// placedWorkersLocked returns the workers a live task is placed on.
func (f *FSM) placedWorkersLocked() map[string]bool {
	placed := make(map[string]bool)
	for id := range f.live {
		if t := f.tasks[id]; t != nil && t.Worker != "" {
			w := t.Worker
			placed[w] = true
		}
	}
	return placed
}

// departed reports whether gossip last saw the worker dead or gone.
func departed(n api.Node) bool { return n.State == api.NodeDead || n.State == api.NodeLeft }

// Garbage is what a garbage collection would remove now.
type Garbage struct {
	Tasks   []uuid.UUID
	Workers []string
}

// Garbage returns the tasks finished before taskCutoff and the workers
// departed before workerCutoff, which collectGarbageLocked would remove,
// oldest first. A zero cutoff takes everything that qualifies, whatever its
// age. A task's age runs from its FinishTime (its SubmitTime if it never
// ran); a worker's from Since, when gossip last changed its state.
func (f *FSM) Garbage(taskCutoff, workerCutoff time.Time) Garbage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var g Garbage
	type aged struct {
		id uuid.UUID
		at time.Time
	}
	var tasks []aged
	if len(f.tasks) > len(f.live) {
		for id, t := range f.tasks {
			if _, live := f.live[id]; live || !f.collectableLocked(id) {
				continue
			}
			at := endTime(*t)
			if taskCutoff.IsZero() || at.Before(taskCutoff) {
				tasks = append(tasks, aged{id, at})
			}
		}
	}
	sort.Slice(tasks, func(i, j int) bool {
		if !tasks[i].at.Equal(tasks[j].at) {
			return tasks[i].at.Before(tasks[j].at)
		}
		return tasks[i].id.String() < tasks[j].id.String()
	})
	for _, a := range tasks {
		g.Tasks = append(g.Tasks, a.id)
	}
	placed := f.placedWorkersLocked()
	for name, n := range f.workers {
		if departed(n) && !placed[name] && (workerCutoff.IsZero() || n.Since.Before(workerCutoff)) {
			g.Workers = append(g.Workers, name)
		}
	}
	sort.Strings(g.Workers)
	return g
}

// endTime is when a finished task ended, as far as the state knows.
func endTime(t api.Task) time.Time {
	if !t.FinishTime.IsZero() {
		return t.FinishTime
	}
	return t.SubmitTime
}

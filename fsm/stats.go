package fsm

import "github.com/cube-orch/cube/api"

// ScanTasks calls fn with every task, in no order, under the FSM's read
// lock: a pass over the state that copies and sorts nothing (Tasks does
// both), for counting. fn must be quick, must not change the task (it is
// the stored one) and must not call the FSM.
func (f *FSM) ScanTasks(fn func(t *api.Task)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, t := range f.tasks {
		fn(t)
	}
}

// WorkerStates counts the recorded workers by liveness (api.NodeAlive, ...).
func (f *FSM) WorkerStates() map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]int)
	for _, n := range f.workers {
		out[n.State]++
	}
	return out
}

package fsm

import (
	"time"
	"unicode/utf8"

	"github.com/cube-orch/cube/api"
)

// A task's History (api.Task.History) is written here, and only here:
// putLocked, the one place a task is stored, compares the task a command
// leaves with the stored copy and records the difference. So no applier
// can forget it, and the same log gives the same History on every manager:
// the time of an entry is the command's (chosen by the leader before it was
// written), never a clock read during Apply.

// putLocked stores t, the task as a command committed at time at leaves
// it, and returns it as stored: with what changed from the stored copy
// recorded in its History (why, if not empty, is the new entry's reason
// instead of t.Reason), and the live index in step.
func (f *FSM) putLocked(t api.Task, at time.Time, why string) api.Task {
	var prev api.Task
	p, existed := f.tasks[t.ID]
	if existed {
		prev = *p
	}
	t.History = nextHistory(prev, existed, t, at, why)
	// A new copy each time, never a change in place: readers that hold
	// the stored copy (LiveTaskRefs, a snapshot being written) keep the
	// task as it was when they read it.
	stored := t
	f.allocLocked(p, -1)
	f.allocLocked(&stored, 1)
	f.changes.task(t.ID)
	f.tasks[t.ID] = &stored
	if t.Finished() {
		delete(f.live, t.ID)
	} else {
		f.live[t.ID] = struct{}{}
	}
	return t
}

// nextHistory returns the History of next, the task after a change of
// prev (existed is false for a new task). A new task, or a change of its
// State, DesiredState, Worker, Generation, RestartCount or Healthy, adds an
// entry; a change of the reason alone (a Pending task's note: why it is
// not placed yet) rewrites the newest entry's reason, so that notes do not
// push the transitions out. Anything else (ports, container, times) adds
// nothing. The stored slice is never changed in place: snapshots share it.
func nextHistory(prev api.Task, existed bool, next api.Task, at time.Time, why string) []api.TaskTransition {
	reason := why
	if reason == "" {
		reason = next.Reason
	}
	reason = cutReason(reason)
	hist := prev.History
	if !existed {
		hist = nil
	}
	switch {
	case !existed || transitioned(prev, next):
	case reason != "" && len(hist) > 0 && hist[len(hist)-1].Reason != reason:
		out := append([]api.TaskTransition(nil), hist...)
		out[len(out)-1].Reason = reason
		return out
	case reason != "" && len(hist) == 0:
		// A task stored before History existed: its first entry.
	default:
		return hist
	}
	e := api.TaskTransition{
		Time: at, State: next.State, DesiredState: next.DesiredState, Worker: next.Worker,
		Generation: next.Generation, RestartCount: next.RestartCount, Healthy: next.Healthy,
		ExitCode: next.ExitCode, Reason: reason,
	}
	drop := max(0, len(hist)+1-api.MaxTaskHistory)
	out := make([]api.TaskTransition, 0, len(hist)-drop+1)
	return append(append(out, hist[drop:]...), e)
}

// transitioned reports whether a change from a to b is an entry of the
// History.
func transitioned(a, b api.Task) bool {
	return a.State != b.State || a.DesiredState != b.DesiredState || a.Worker != b.Worker ||
		a.Generation != b.Generation || a.RestartCount != b.RestartCount || a.Healthy != b.Healthy
}

// cutReason bounds an entry's reason to api.MaxTransitionReason bytes, cut
// at a character boundary and ending in "…".
func cutReason(s string) string {
	if len(s) <= api.MaxTransitionReason {
		return s
	}
	const ellipsis = "…"
	n := api.MaxTransitionReason - len(ellipsis)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}

package manager

import (
	"context"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// A task stays Scheduled from its assignment until its worker reports the
// container running (or failed). The worker bounds each start itself, and
// fails the task rather than leave it half started, but a leader must not
// trust that for ever: a record the worker could not write, a report lost
// with a leader, a worker whose API answers while its engine or disk does
// not. So the leader watches how long each placement has been Scheduled
// (soft state, like sent): past ScheduledTimeout it sends the assignment
// again, at the same generation, which is idempotent (a worker holding it
// answers with its record, committed at once; one without it starts it);
// past twice that, it gives up on the placement: the task goes back to
// Pending (not counted as a restart) to be placed at a higher generation,
// and the copy on the worker is stopped up to its generation, so at most
// the new placement runs.

// scheduledWatch is how long this leader has seen one placement Scheduled.
type scheduledWatch struct {
	worker string
	gen    uint64
	since  time.Time
	resent bool // the assignment was sent again after ScheduledTimeout
}

// keepScheduled carries a Scheduled task forward: dispatches it if this
// leader has not delivered it yet, sends it again once Scheduled past
// ScheduledTimeout, and places it again past twice that.
func (l *loop) keepScheduled(ctx context.Context, t api.Task) {
	w, ok := l.scheduled[t.ID]
	if !ok || w.worker != t.Worker || w.gen != t.Generation {
		w = scheduledWatch{worker: t.Worker, gen: t.Generation, since: time.Now()}
		l.scheduled[t.ID] = w
	}
	timeout := l.m.cfg.ScheduledTimeout
	age := time.Since(w.since)
	switch {
	case age >= 2*timeout:
		l.requeueStuck(ctx, t)
	case age >= timeout && !w.resent:
		w.resent = true
		l.scheduled[t.ID] = w
		delete(l.sent, t.ID)
		l.log.Warn("task still Scheduled; sending its assignment again", "task_id", t.ID, "worker", t.Worker,
			"generation", t.Generation, "scheduled_for", age.Round(time.Second))
		l.ensureOp(ctx, t, opDispatch)
	case l.sent[t.ID] != t.Generation:
		l.ensureOp(ctx, t, opDispatch)
	}
}

// requeueStuck gives up on a placement Scheduled for twice ScheduledTimeout:
// the task goes back to Pending, not counted, and its copy on the worker is
// stopped, fenced by its generation (a newer placement on the same worker
// is never touched).
func (l *loop) requeueStuck(ctx context.Context, t api.Task) {
	reason := fmt.Sprintf("Scheduled on worker %s for more than %s without starting; placing it again", t.Worker, 2*l.m.cfg.ScheduledTimeout)
	if _, err := l.m.apply(ctx, fsm.RequeueTask{ID: t.ID, Reason: reason, Time: time.Now().UTC()}); err != nil {
		l.log.Warn("requeue a task stuck in Scheduled", "task_id", t.ID, "worker", t.Worker, "error", err)
		return
	}
	delete(l.scheduled, t.ID)
	delete(l.sent, t.ID)
	if o, ok := l.ops[t.ID]; ok {
		o.cancel() // its placement is gone; the next assignment starts its own
	}
	l.log.Warn("task requeued: it stayed Scheduled too long", "task_id", t.ID, "worker", t.Worker, "generation", t.Generation)
	l.stopCopy(ctx, t.Worker, t.ID, t.Generation, "it stayed Scheduled too long and is placed again")
}

// pruneScheduled forgets the watches of tasks no longer Scheduled.
func (l *loop) pruneScheduled(scheduled map[uuid.UUID]bool) {
	for id := range l.scheduled {
		if !scheduled[id] {
			delete(l.scheduled, id)
		}
	}
}

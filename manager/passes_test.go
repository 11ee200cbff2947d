package manager

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPassPlan_WhenAPassIsFull(t *testing.T) {
	const tick = 100 * time.Millisecond
	now := time.Now()
	var p passPlan
	if !p.full(now, tick, false, 1, false) {
		t.Fatal("a new leader's first pass is not full")
	}
	p.fullEnd, p.fullCost, p.print = now, time.Millisecond, 1
	if p.full(now.Add(time.Millisecond), tick, false, 1, false) {
		t.Fatal("a pass right after a full one, with nothing owed, is full")
	}
	if !p.full(now.Add(tick), tick, false, 1, false) {
		t.Fatal("a pass a Tick after the last full one is not full")
	}
	if !p.full(now.Add(time.Millisecond), tick, true, 1, false) || !p.owed {
		t.Fatal("a change that is not one task's does not make a cheap pass full at once")
	}
	p.owed = false
	if p.full(now.Add(time.Millisecond), tick, false, 2, false) {
		t.Fatal("capacity changed with no task blocked, and the pass is full")
	}
	if !p.full(now.Add(time.Millisecond), tick, false, 2, true) {
		t.Fatal("capacity changed while tasks are blocked, and the pass is not full")
	}

	// A costly full pass (100,000 tasks: ~170 ms) spaces out the next.
	p = passPlan{fullEnd: now, fullCost: 170 * time.Millisecond, print: 1}
	if p.full(now.Add(tick), tick, false, 1, false) {
		t.Fatal("a 170 ms full pass was followed by another a Tick later: full passes would take most of a core")
	}
	if !p.full(now.Add(3*170*time.Millisecond), tick, false, 1, false) {
		t.Fatal("no full pass 3 × its cost after the last")
	}
	if p.full(now.Add(50*time.Millisecond), tick, true, 1, false) {
		t.Fatal("an owed full pass 50 ms after a 170 ms one was not put off")
	}
	if d := p.deferFor(now.Add(50 * time.Millisecond)); d != 120*time.Millisecond {
		t.Fatalf("owed full pass put off by %s, want the rest of the last one's cost (120ms)", d)
	}
	if !p.full(now.Add(170*time.Millisecond), tick, false, 1, false) {
		t.Fatal("the owed full pass did not come once the last one's cost had passed")
	}
	p.fullDone(now)
	if p.owed || p.deferFor(time.Now()) != 0 {
		t.Fatal("a full pass did not pay what was owed")
	}
}

// After a full pass, a pass reads only the tasks changed since: a new
// submission is placed, a reported exit restarted, a stop carried out,
// while a decision that waits on time alone (a restart whose back-off has
// passed) waits for the next full pass.
func TestLoop_PassOverChangesReadsTheChangedTasks(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.placed("running", "w1", 1, api.Running, nil)
	h.placed("crashes", "w1", 1, api.Running, nil)
	h.placed("stopped", "w1", 1, api.Running, nil)
	h.pass()
	h.changesPass() // what the full pass wrote
	fulls := testutil.ToFloat64(h.m.metrics.fullPasses)

	h.submit("new", nil)
	h.observe("crashes", "w1", 1, api.Failed)
	h.seed(fsm.StopTask{ID: h.id("stopped"), Reason: "stopped on request", Time: time.Now().UTC()})
	if h.changesPass() {
		t.Fatal("a pass after a submission, a report and a stop read every task")
	}
	if got := h.task("new"); got.Worker != "w1" || got.State == api.Pending || h.l.sent[got.ID] != got.Generation {
		t.Fatalf("new after a pass over changes: %s on %q, want placed on w1 and sent there", got.State, got.Worker)
	}
	if got := h.task("crashes"); got.RestartCount != 1 {
		t.Fatalf("crashes after a pass over changes: %d restarts, want 1", got.RestartCount)
	}
	if got := h.task("stopped"); got.State != api.Completed {
		t.Fatalf("stopped after a pass over changes: %s, want Completed", got.State)
	}

	// A second crash in a row waits for its back-off; once it has passed,
	// only a full pass (every Tick) restarts it: nothing changed it.
	h.changesPass()
	h.observe("crashes", "w1", 2, api.Failed)
	h.changesPass()
	rs := h.l.restarts[h.id("crashes")]
	if got := h.task("crashes"); got.RestartCount != 1 || rs == nil || !rs.notBefore.After(time.Now()) {
		t.Fatalf("a second crash in a row was restarted without a back-off (%d restarts)", got.RestartCount)
	}
	rs.notBefore = time.Now().Add(-time.Millisecond)
	h.submit("other", nil)
	if h.changesPass() {
		t.Fatal("a pass after a submission read every task")
	}
	if got := h.task("crashes"); got.RestartCount != 1 {
		t.Fatal("a pass over changes restarted a task that had not changed: it read every task")
	}
	if got := testutil.ToFloat64(h.m.metrics.fullPasses); got != fulls {
		t.Fatalf("cube_leader_full_passes_total went from %v to %v in passes over changes", fulls, got)
	}
	h.pass()
	if got := h.task("crashes"); got.RestartCount != 2 {
		t.Fatalf("the next full pass did not restart crashes once its back-off had passed (%d restarts)", got.RestartCount)
	}
}

// Changes that are not one task's, or tasks whose decision reads others,
// make the next pass full.
func TestLoop_ChangesThatCallForAFullPass(t *testing.T) {
	for name, change := range map[string]func(h *harness){
		"a worker joins while a task is blocked": func(h *harness) { h.worker("w3") },
		"a task asking a static host port changes": func(h *harness) {
			h.submit("ported", func(t *api.Task) {
				t.ExposedPorts = map[string]struct{}{"7777/tcp": {}}
				t.PortBindings = map[string]string{"7777/tcp": "7777"}
			})
		},
		"a health-checked task changes": func(h *harness) {
			h.submit("checked", func(t *api.Task) {
				t.ExposedPorts = map[string]struct{}{"7777/tcp": {}}
				t.HealthCheck = "/health"
			})
		},
		"a service changes": func(h *harness) { h.put(svc(1, "cube-echo:latest", nil)) },
		"capacity freed while a task is blocked": func(h *harness) {
			h.observe("big", "w1", 1, api.Failed)
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.worker("w1")
			h.worker("w2")
			h.placed("big", "w1", 1, api.Running, func(t *api.Task) { t.Cpu = 2; t.RestartPolicy = "no" })
			h.submit("blocked", func(t *api.Task) { t.Cpu = 3 })
			h.pass()
			if _, ok := h.l.blocked[h.id("blocked")]; !ok {
				t.Fatal("the blocked task is not marked blocked")
			}
			if h.changesPass() {
				t.Fatal("a pass with nothing changed was full")
			}
			change(h)
			if !h.changesPass() {
				t.Fatal("the pass after the change was not full")
			}
		})
	}
}

// A worker's record changing (gossip sees it dead, an operator drains it)
// is a change of the tasks placed on it: a pass over changes reads those
// and acts (probes and requeues them, moves them off) without reading the
// others (fsm.TakeChanges).
func TestLoop_AWorkersChangeIsAPassOverItsTasks(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(h *harness)
		want   func(h *harness, name string) error
	}{
		"it dies (gossip)": {
			change: func(h *harness) { h.gossipState("w2", cluster.StateDead) },
			want: func(h *harness, name string) error {
				if got := h.task(name); got.Worker == "w2" || got.State != api.Pending {
					return fmt.Errorf("%s: %s on %q, want Pending again, off w2", name, got.State, got.Worker)
				}
				return nil
			},
		},
		"it is drained": {
			change: func(h *harness) { h.seed(fsm.DrainWorker{Name: "w2", Drain: true}) },
			want: func(h *harness, name string) error {
				if got := h.task(name); got.Worker == "w2" {
					return fmt.Errorf("%s: still on the drained w2 (%s)", name, got.State)
				}
				return nil
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.worker("w1")
			h.worker("w2")
			h.placed("stays", "w1", 1, api.Running, nil)
			h.placed("crashes", "w1", 1, api.Running, nil)
			h.placed("on-w2-a", "w2", 1, api.Running, nil)
			h.placed("on-w2-b", "w2", 1, api.Scheduled, nil)
			h.pass()
			h.changesPass()
			fulls := testutil.ToFloat64(h.m.metrics.fullPasses)
			// A restart due on time alone: only a pass that reads every
			// task would carry it out.
			h.observe("crashes", "w1", 1, api.Failed)
			h.changesPass()
			h.observe("crashes", "w1", 2, api.Failed)
			h.changesPass()
			h.l.restarts[h.id("crashes")].notBefore = time.Now().Add(-time.Millisecond)
			restarts := h.task("crashes").RestartCount

			tc.change(h)
			if h.changesPass() {
				t.Fatal("the pass after the worker's change read every task")
			}
			for _, n := range []string{"on-w2-a", "on-w2-b"} {
				if err := tc.want(h, n); err != nil {
					t.Fatal(err)
				}
			}
			if got := h.task("crashes").RestartCount; got != restarts {
				t.Fatal("the pass after the worker's change restarted a task of another worker that had not changed: it read every task")
			}
			if got := h.task("stays"); got.Worker != "w1" || got.State != api.Running {
				t.Fatalf("stays: %s on %q, want Running on w1, untouched", got.State, got.Worker)
			}
			h.reset()
			h.changesPass() // what the requeues wrote: placed on w1
			for _, n := range []string{"on-w2-a", "on-w2-b"} {
				if got := h.task(n); got.Worker != "w1" {
					t.Fatalf("%s after the next pass over changes: %s on %q, want placed on w1", n, got.State, got.Worker)
				}
				// Changed by its requeue and by its probe's end, a task is
				// still read once, and placed once.
				assigns := 0
				for _, c := range h.commands() {
					if strings.HasPrefix(c, "assign "+n+" ") {
						assigns++
					}
				}
				if assigns > 1 {
					t.Fatalf("%s was assigned %d times in one pass: %q", n, assigns, h.commands())
				}
			}
			if got := testutil.ToFloat64(h.m.metrics.fullPasses); got != fulls {
				t.Fatalf("cube_leader_full_passes_total went from %v to %v", fulls, got)
			}
		})
	}
}

// A task both changed in the FSM and whose op just ended is read once by
// the pass over changes.
func TestPassPlan_ChangedListsEachTaskOnce(t *testing.T) {
	var p passPlan
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	p.opEnded(a)
	p.opEnded(c)
	got := p.changed([]uuid.UUID{a, b})
	slices.SortFunc(got, func(x, y uuid.UUID) int { return strings.Compare(x.String(), y.String()) })
	want := []uuid.UUID{a, b, c}
	slices.SortFunc(want, func(x, y uuid.UUID) int { return strings.Compare(x.String(), y.String()) })
	if !slices.Equal(got, want) {
		t.Fatalf("changed = %v, want %v, each once", got, want)
	}
	if again := p.changed(nil); len(again) != 0 {
		t.Fatalf("the ended ops listed again at the next pass: %v", again)
	}
}

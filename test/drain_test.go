package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Draining a worker (cube node drain) moves its tasks to the other workers,
// each to exactly one new container, not counted as a restart; nothing new is
// placed on it while it drains; undrained, it takes placements again.
func TestDrain_MovesTasksOffAndKeepsNewOnesAway(t *testing.T) {
	r := newRecRT(t, 3)
	var ids []uuid.UUID
	for i := range 6 {
		ids = append(ids, r.submit(echoTask(fmt.Sprintf("drain-%d", i))))
	}
	before := r.waitRunning(ids...)
	victim := r.busiestWorker(before)
	moving := recTasksOn(before, victim.Name)

	out, err := r.c.Cube("node", "drain", victim.Name)
	if err != nil || !strings.Contains(out, "is draining") {
		t.Fatalf("cube node drain: %v\n%s", err, out)
	}
	drained := time.Now()
	for _, id := range moving {
		old := before[id]
		got, took := r.waitTask(id, recDeadline, func(x api.Task) error {
			if err := recIsRunning(x); err != nil {
				return err
			}
			if x.Worker == victim.Name || x.Generation <= old.Generation {
				return fmt.Errorf("still on %s gen %d", x.Worker, x.Generation)
			}
			return nil
		})
		t.Logf("task %s moved %s → %s (gen %d → %d) in %s", id, old.Worker, got.Worker, old.Generation, got.Generation, took)
		if got.RestartCount != old.RestartCount {
			t.Errorf("task %s: RestartCount %d → %d; a move off a draining worker is not a restart", id, old.RestartCount, got.RestartCount)
		}
		if got.LastWorker != victim.Name {
			t.Errorf("task %s: LastWorker %q, want %s", id, got.LastWorker, victim.Name)
		}
	}
	t.Logf("%d task(s) moved off %s in %s", len(moving), victim.Name, recSince(drained))
	// Tasks on the other workers were left alone.
	for id, old := range before {
		if old.Worker == victim.Name {
			continue
		}
		if got := r.task(id); got.Generation != old.Generation || got.ContainerID != old.ContainerID {
			t.Errorf("task %s on %s was touched by the drain of %s: gen %d → %d", id, old.Worker, victim.Name, old.Generation, got.Generation)
		}
	}
	r.converged()
	if n := r.runningOn(victim.Name); n != 0 {
		t.Fatalf("%d containers still run on the drained worker %s", n, victim.Name)
	}
	out, err = r.c.Cube("node")
	if err != nil || !strings.Contains(lineOf(out, victim.Name), "draining") {
		t.Fatalf("cube node does not show %s draining: %v\n%s", victim.Name, err, out)
	}

	// Nothing new lands on it, though it is now the emptiest worker.
	var later []uuid.UUID
	for i := range 3 {
		later = append(later, r.submit(echoTask(fmt.Sprintf("after-drain-%d", i))))
	}
	for id, task := range r.waitRunning(later...) {
		if task.Worker == victim.Name {
			t.Fatalf("task %s placed on the draining worker %s", id, victim.Name)
		}
	}

	// Undrained, it is the emptiest worker again: the next task goes there.
	out, err = r.c.Cube("node", "undrain", victim.Name)
	if err != nil || !strings.Contains(out, "eligible again") {
		t.Fatalf("cube node undrain: %v\n%s", err, out)
	}
	back := r.submit(echoTask("after-undrain"))
	if got := r.waitRunning(back)[back]; got.Worker != victim.Name {
		t.Fatalf("after undrain the next task went to %s, want the empty worker %s", got.Worker, victim.Name)
	}
	r.converged()

	// An unknown worker is a clear 404 and changes nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.cl.DrainNode(ctx, "no-such-worker", true); err == nil || !strings.Contains(err.Error(), "never seen") {
		t.Fatalf("drain of an unknown worker: %v", err)
	}
}

// runningOn counts the running containers of one worker, from the engine.
func (r *recRT) runningOn(worker string) int {
	r.t.Helper()
	for _, w := range r.c.Workers {
		if w.Name != worker {
			continue
		}
		n := 0
		for _, cts := range r.c.ContainersOn(w) {
			n += len(cts)
		}
		return n
	}
	r.t.Fatalf("no worker %s", worker)
	return 0
}

// lineOf returns the first line of out that starts with prefix.
func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

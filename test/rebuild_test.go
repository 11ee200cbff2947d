package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/google/uuid"
)

// Two ways a worker and the replicated state can disagree about what runs,
// each ending with the task running exactly once (manager/DESIGN.md: "a
// worker without a record" and "a worker that outlived its cluster").

// A worker that comes back with an empty data directory has no record of the
// tasks the cluster placed on it (and removes their containers, which carry
// its label but no record). A task without a health check would stay Running
// for ever with no container anywhere; the leader's poll requeues it and it
// runs again, once, at a higher generation, not counted as a restart.
func TestRebuild_WorkerBackWithEmptyDataDir(t *testing.T) {
	r := newRecRT(t, 1)
	ev := r.watch()
	time.Sleep(500 * time.Millisecond) // let the event stream connect
	task := echoTask("no-health-check")
	task.HealthCheck = "" // nothing but the worker's records tells the leader it runs
	id := r.submit(task)
	before := r.waitRunning(id)[id]
	w := r.c.Workers[0]

	r.c.Kill(w)
	if err := os.RemoveAll(filepath.Join(r.c.Dir, w.Name)); err != nil {
		t.Fatal(err)
	}
	wiped := time.Now()
	r.c.Start(w)
	t.Logf("worker %s killed, its data directory removed, started again", w.Name)

	after, took := r.waitTask(id, 2*recDeadline, func(x api.Task) error {
		if err := recIsRunning(x); err != nil {
			return err
		}
		if x.Generation <= before.Generation {
			return fmt.Errorf("still at generation %d, container %.12s", x.Generation, x.ContainerID)
		}
		return nil
	})
	t.Logf("task Running again at generation %d (was %d) on %s in %s", after.Generation, before.Generation, after.Worker, took)
	// Normally the poll finds the worker without a record; if gossip held
	// the worker dead long enough for an orphan probe to find the container
	// gone, the lost-worker path requeues it instead. Either way once.
	requeued, ok := ev.waitFor(id, 30*time.Second, func(x api.Task) bool { return x.State == api.Pending && x.Generation == before.Generation })
	if !ok {
		t.Fatalf("no requeue of generation %d was streamed: %v", before.Generation, ev)
	}
	t.Logf("requeued: %q", requeued.ch.Task.Reason)
	if after.RestartCount != before.RestartCount {
		t.Errorf("RestartCount %d → %d: a worker losing its data is not the task's failure", before.RestartCount, after.RestartCount)
	}
	r.converged()
	gens := runningGenerations(t, r.c, id)
	if len(gens) != 1 || gens[0] != after.Generation {
		t.Fatalf("running containers of the task at generations %v, want exactly one at %d", gens, after.Generation)
	}
	t.Logf("empty data dir → running once again in %s", recSince(wiped))
}

// A rebuilt cluster (every manager's data wiped) faces workers that still run
// the old cluster's containers at generations above 1. A task resubmitted
// with the same ID ends running exactly once, at the new cluster's
// generation; a task the new cluster never heard of has its container
// stopped. (Before, the worker answered 409 for ever, and the old containers
// ran on unmanaged.)
func TestRebuild_NewClusterFacesOldWorkers(t *testing.T) {
	r := newRecRT(t, 2)
	kept, dropped := echoTask("resubmitted"), echoTask("never-resubmitted")
	ids := []uuid.UUID{r.submit(kept), r.submit(dropped)}
	running := r.waitRunning(ids...)
	// Crash each once so that the workers hold generations above 1.
	for _, id := range ids {
		recCrash(t, running[id])
	}
	for _, id := range ids {
		got, _ := r.waitTask(id, recDeadline, func(x api.Task) error {
			if err := recIsRunning(x); err != nil {
				return err
			}
			if x.Generation < 2 {
				return fmt.Errorf("generation %d", x.Generation)
			}
			return nil
		})
		t.Logf("old cluster: task %s (%s) Running on %s at generation %d", id, got.Name, got.Worker, got.Generation)
	}

	// Rebuild: every manager killed, its data removed, started afresh.
	for _, m := range r.c.Managers {
		r.c.Kill(m)
	}
	for _, m := range r.c.Managers {
		if err := os.RemoveAll(filepath.Join(r.c.Dir, m.Name)); err != nil {
			t.Fatal(err)
		}
	}
	rebuilt := time.Now()
	for _, m := range r.c.Managers {
		r.c.Start(m)
	}
	r.c.WaitReady(len(r.c.Workers))
	r.cl = r.c.Client()
	t.Logf("managers rebuilt with empty data in %s", recSince(rebuilt))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if tasks, err := r.cl.Tasks(ctx, true); err != nil || len(tasks) != 0 {
		t.Fatalf("the rebuilt cluster knows tasks %v (%v), want none", tasks, err)
	}

	resubmitted := kept
	resubmitted.ID = ids[0]
	r.submit(resubmitted)
	final, took := r.waitTask(ids[0], 2*recDeadline, recIsRunning)
	t.Logf("resubmitted task Running on %s at the new cluster's generation %d in %s (reason %q)", final.Worker, final.Generation, took, final.Reason)

	testkit.Eventually(t, 2*recDeadline, func() error {
		cur := r.task(ids[0])
		if err := recIsRunning(cur); err != nil {
			return err
		}
		if gens := runningGenerations(t, r.c, ids[0]); len(gens) != 1 || gens[0] != cur.Generation {
			return fmt.Errorf("resubmitted task: running containers at generations %v, want exactly one at %d", gens, cur.Generation)
		}
		if gens := runningGenerations(t, r.c, ids[1]); len(gens) != 0 {
			return fmt.Errorf("the task the new cluster never heard of still runs at generations %v", gens)
		}
		return nil
	})
	t.Logf("rebuilt cluster converged in %s: the resubmitted task runs once, the unknown one's container is stopped", recSince(rebuilt))
	r.converged()
	if cur := r.task(ids[0]); cur.RestartCount != 0 {
		t.Errorf("RestartCount %d in the new cluster; placing above an old generation is not a restart", cur.RestartCount)
	}
}

// runningGenerations returns the generation labels of the task's running
// containers on the cluster's workers, counted from the engine.
func runningGenerations(t *testing.T, c *ProcCluster, id uuid.UUID) []uint64 {
	t.Helper()
	cli := dockerClient(t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []uint64
	for _, w := range c.Workers {
		list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "cube.worker="+w.Name), filters.Arg("label", "cube.task="+id.String()), filters.Arg("status", "running"))})
		if err != nil {
			t.Fatalf("list containers: %v", err)
		}
		for _, ct := range list {
			g, _ := strconv.ParseUint(ct.Labels["cube.generation"], 10, 64)
			out = append(out, g)
		}
	}
	return out
}

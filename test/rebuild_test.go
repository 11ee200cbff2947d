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

// Workers that come back with empty data directories (lost, or new machines
// started under the old names) hold no record of the containers that carry
// their label. They do not remove the running ones blindly: each is recorded
// from its labels and reported, and the leader decides. The task's current
// placement (this worker, this generation) is adopted as it runs: the same
// container, the same generation, never requeued, not counted. Every other
// copy is stopped: one of a task the cluster placed on another worker, and
// one of a task the cluster never heard of. A task without a health check is
// used, so nothing but the workers' records tells the leader it runs.
func TestRebuild_WorkerBackWithEmptyDataDir(t *testing.T) {
	r := newRecRT(t, 2)
	ev := r.watch()
	time.Sleep(500 * time.Millisecond) // let the event stream connect
	task := echoTask("no-health-check")
	task.HealthCheck = ""
	id := r.submit(task)
	before := r.waitRunning(id)[id]
	var home, other *Proc
	for _, w := range r.c.Workers {
		if w.Name == before.Worker {
			home = w
		} else {
			other = w
		}
	}
	if home == nil || other == nil {
		t.Fatalf("task on %q, workers %s and %s", before.Worker, r.c.Workers[0].Name, r.c.Workers[1].Name)
	}

	for _, w := range r.c.Workers {
		r.c.Kill(w)
		if err := os.RemoveAll(filepath.Join(r.c.Dir, w.Name)); err != nil {
			t.Fatal(err)
		}
	}
	// Behind the dead workers' backs, on the other worker's name: a copy of
	// the task (the cluster has it on home) and a container of a task the
	// cluster never heard of, both running.
	copyID := startLabelled(t, other.Name, id, before.Generation)
	stranger := uuid.New()
	strangerID := startLabelled(t, other.Name, stranger, 3)
	wiped := time.Now()
	for _, w := range r.c.Workers {
		r.c.Start(w)
	}
	t.Logf("workers killed, their data directories removed, started again; on %s a copy of the task (%.12s) and an unknown task's container (%.12s) run",
		other.Name, copyID, strangerID)

	testkit.Eventually(t, 2*recDeadline, func() error {
		cts := r.c.Containers()
		if n := len(cts[stranger.String()]); n != 0 {
			return fmt.Errorf("the unknown task's container still runs")
		}
		if list := cts[id.String()]; len(list) != 1 || list[0] != before.ContainerID {
			return fmt.Errorf("running containers of the task %v, want only %.12s", list, before.ContainerID)
		}
		return nil
	})
	t.Logf("the unknown task's container and the copy on %s stopped by the leader in %s", other.Name, recSince(wiped))
	after := r.task(id)
	if after.State != api.Running || after.Worker != home.Name || after.Generation != before.Generation || after.ContainerID != before.ContainerID {
		t.Fatalf("task after its worker lost its data: %s on %s gen %d container %.12s (%s); want Running on %s gen %d in %.12s, adopted as it ran",
			after.State, after.Worker, after.Generation, after.ContainerID, after.Reason, home.Name, before.Generation, before.ContainerID)
	}
	if after.RestartCount != before.RestartCount {
		t.Errorf("RestartCount %d → %d: the task was not restarted", before.RestartCount, after.RestartCount)
	}
	for _, c := range ev.of(id) {
		if c.at.After(wiped) && c.ch.Task.State != api.Running {
			t.Errorf("the task went %s after the wipe (%q): it should have been adopted as it ran", c.ch.Task.State, c.ch.Task.Reason)
		}
	}
	r.converged()
	if holds := r.workerHolds(home); holds[id].Generation != before.Generation || holds[id].State != api.Running {
		t.Errorf("%s's record of the task: %+v, want Running at generation %d", home.Name, holds[id], before.Generation)
	}
	t.Logf("empty data dirs → the task adopted where it ran, the other copies stopped, in %s", recSince(wiped))
}

// startLabelled starts an echo container carrying a worker's labels for a
// task at a generation, named as the worker names its containers.
func startLabelled(t *testing.T, worker string, id uuid.UUID, gen uint64) string {
	t.Helper()
	cli := dockerClient(t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	labels := map[string]string{"cube.task": id.String(), "cube.worker": worker, "cube.generation": strconv.FormatUint(gen, 10)}
	name := fmt.Sprintf("cube-%s-%s-g%d", worker, id, gen)
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: "cube-echo:latest", Labels: labels}, &container.HostConfig{}, nil, nil, name)
	if err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container %s: %v", name, err)
	}
	return created.ID
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

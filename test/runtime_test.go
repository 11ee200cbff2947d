package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// TestE2E_DockerDownWorkerGetsNothing: a worker whose Docker engine does not
// answer (DOCKER_HOST points at a socket that does not exist) says so through
// gossip; the leader marks its runtime down and places nothing there.
func TestE2E_DockerDownWorkerGetsNothing(t *testing.T) {
	c := NewProcCluster(t, 3, 0)
	broken := c.AddWorker("DOCKER_HOST=unix:///nonexistent/docker.sock")
	testkit.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nodes, err := c.Client().Nodes(ctx, true)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Name == broken.Name && n.State == api.NodeAlive && !n.RuntimeAvailable {
				return nil
			}
		}
		return fmt.Errorf("worker %s not yet alive with its runtime down: %+v", broken.Name, nodes)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	task, _, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask("nowhere-to-run")})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, func() error {
		got, err := c.Client().Task(ctx, task.ID, true)
		if err != nil {
			return err
		}
		if got.State != api.Pending || got.Worker != "" {
			return fmt.Errorf("task %s on %q, want Pending nowhere", got.State, got.Worker)
		}
		if got.Reason == "" {
			return fmt.Errorf("Pending without a reason")
		}
		return nil
	})

	// A healthy worker joins: the task runs there, not on the broken one.
	good := c.AddWorker()
	got := waitRunning(t, c, []uuid.UUID{task.ID})[task.ID]
	if got.Worker != good.Name {
		t.Fatalf("task placed on %q, want %q", got.Worker, good.Name)
	}
}

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

// TestPartition_IsolatedLeaderStepsDown cuts the leader off (raft, gossip and
// HTTP, by firewall rules between the nodes' loopback addresses): it must step
// down and acknowledge nothing, while the majority elects a leader, accepts
// writes and keeps running tasks. After healing there is one leader and the
// old one holds the majority's state.
func TestPartition_IsolatedLeaderStepsDown(t *testing.T) {
	c := NewProcClusterOnIPs(t, 3, 2)
	fw := NewFirewall(t)
	task := echoTask("before-partition")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, _, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: task}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, c, []uuid.UUID{task.ID})

	old := c.LeaderProc()
	var rest []string
	var majority []*Proc
	for _, p := range append(append([]*Proc{}, c.Managers...), c.Workers...) {
		if p != old {
			rest = append(rest, p.IP)
		}
	}
	for _, m := range c.Managers {
		if m != old {
			majority = append(majority, m)
		}
	}
	fw.Partition([]string{old.IP}, rest)
	cut := time.Now()

	// The old leader steps down (it cannot reach a quorum within its lease).
	testkit.Eventually(t, 30*time.Second, func() error {
		info, err := clusterInfo(c, old)
		if err != nil {
			return err
		}
		if info.LeaderID == info.Self {
			return fmt.Errorf("%s still believes it leads (term %d)", old.Name, info.Term)
		}
		return nil
	})
	t.Logf("isolated leader %s stepped down %s after the cut", old.Name, time.Since(cut).Round(time.Millisecond))

	// The majority elects another and accepts writes.
	var newLeader string
	testkit.Eventually(t, 30*time.Second, func() error {
		for _, m := range majority {
			if info, err := clusterInfo(c, m); err == nil && info.LeaderID == info.Self {
				newLeader = m.Name
				return nil
			}
		}
		return fmt.Errorf("no leader on the majority side yet")
	})
	t.Logf("%s leads the majority %s after the cut", newLeader, time.Since(cut).Round(time.Millisecond))
	after := echoTask("during-partition")
	if _, _, err := c.Client(majority...).SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: after}); err != nil {
		t.Fatalf("write on the majority side: %v", err)
	}

	// The isolated one acknowledges nothing.
	lone, err := api.NewClient([]string{old.HTTPAddr}, c.ClientOptions(api.ClientOptions{Timeout: 2 * time.Second, RetryFor: 3 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	orphan := echoTask("to-the-isolated-leader")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, _, err = lone.SubmitTask(sctx, api.TaskEvent{State: api.Running, Task: orphan})
	scancel()
	if err == nil {
		t.Fatal("the isolated manager acknowledged a write")
	}

	fw.Heal()
	running := waitRunning(t, c, []uuid.UUID{task.ID, after.ID})
	_ = running
	testkit.Eventually(t, 30*time.Second, func() error {
		leaders := 0
		for _, m := range c.Managers {
			if info, err := clusterInfo(c, m); err == nil && info.LeaderID == info.Self {
				leaders++
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d managers claim leadership", leaders)
		}
		cl, _ := api.NewClient([]string{old.HTTPAddr}, c.ClientOptions(api.ClientOptions{RetryFor: time.Second}))
		if _, err := cl.Task(ctx, after.ID, false); err != nil {
			return fmt.Errorf("the old leader has not caught up: %v", err)
		}
		return nil
	})
	for id, cs := range c.Containers() {
		if len(cs) != 1 {
			t.Fatalf("task %s has %d running containers", id, len(cs))
		}
	}
}

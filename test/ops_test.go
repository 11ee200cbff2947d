package test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// The day-two operations of issue 13 on real binaries: a lost majority
// recovered through peers.json, and a backup restored into a new cluster.

// submitEchoes submits n echo tasks and waits until every one runs.
func submitEchoes(t *testing.T, c *ProcCluster, prefix string, n int) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		task, _, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask(fmt.Sprintf("%s-%d", prefix, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	waitRunning(t, c, ids)
	return ids
}

// runningOnce waits until each task is Running (consistent read) with
// exactly one running container among c's workers, at the task's
// generation, and returns the container of each.
func runningOnce(t *testing.T, c *ProcCluster, ids []uuid.UUID, within time.Duration) map[uuid.UUID]string {
	t.Helper()
	out := map[uuid.UUID]string{}
	testkit.Eventually(t, within, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		containers := c.Containers()
		for _, id := range ids {
			task, err := c.Client().Task(ctx, id, true)
			if err != nil {
				return err
			}
			if task.State != api.Running {
				return fmt.Errorf("task %s (%s) is %s on %q: %s", id, task.Name, task.State, task.Worker, task.Reason)
			}
			if got := containers[id.String()]; len(got) != 1 {
				return fmt.Errorf("task %s (%s) has %d running containers: %v", id, task.Name, len(got), got)
			}
			if gens := runningGenerations(t, c, id); len(gens) != 1 || gens[0] != task.Generation {
				return fmt.Errorf("task %s runs at generations %v, the cluster says %d", id, gens, task.Generation)
			}
			out[id] = containers[id.String()][0]
		}
		return nil
	})
	return out
}

// addManager starts a new manager that joins the cluster (no --peers) and
// returns it.
func (c *ProcCluster) addManager(name string) *Proc {
	c.t.Helper()
	ip := c.ipOf(10 + len(c.Managers) + 1)
	p := &Proc{Name: name, IP: ip, HTTPAddr: testkit.FreeAddrOn(c.t, ip), RaftAddr: testkit.FreeAddrOn(c.t, ip), GossipAddr: testkit.FreeAddrOn(c.t, ip)}
	p.args = []string{"manager", "--id", p.Name, "--fast", "--http", p.HTTPAddr, "--raft", p.RaftAddr,
		"--gossip", p.GossipAddr, "--data", filepath.Join(c.Dir, p.Name), "--join", c.seeds}
	p.args = append(p.args, c.securityFlags(security.RoleManager, p)...)
	c.Managers = append(c.Managers, p)
	c.Start(p)
	return p
}

// TestOps_RecoverLostMajority: three managers, two workers, tasks running;
// two managers lost for good (killed, data removed). The survivor, stopped,
// gets a peers.json naming itself (cube operator raft recover) and is
// started again: it leads alone with every task, each still running once in
// the container it had (nothing restarted), takes new tasks, and a new
// manager joins and becomes a voter.
func TestOps_RecoverLostMajority(t *testing.T) {
	c := NewProcCluster(t, 3, 2)
	ids := submitEchoes(t, c, "survivor", 4)
	before := runningOnce(t, c, ids, 60*time.Second)

	m1, m2, m3 := c.Managers[0], c.Managers[1], c.Managers[2]
	for _, m := range []*Proc{m2, m3} {
		c.Kill(m)
		if err := os.RemoveAll(filepath.Join(c.Dir, m.Name)); err != nil {
			t.Fatal(err)
		}
	}
	c.Stop(m1)
	out, err := exec.Command(c.Bin, "operator", "raft", "recover", "--data", filepath.Join(c.Dir, m1.Name), "--peers", m1.Name+"="+m1.RaftAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("cube operator raft recover: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	c.Start(m1)
	if l := c.LeaderProc(); l != m1 {
		t.Fatalf("leader after recovery: %s, want m1", l.Name)
	}
	after := runningOnce(t, c, ids, 60*time.Second)
	for _, id := range ids {
		if after[id] != before[id] {
			t.Errorf("task %s: container %s before, %s after the recovery; want it untouched", id, before[id][:12], after[id][:12])
		}
	}
	peers, err := c.Cube("operator", "raft", "list-peers")
	if err != nil || !strings.Contains(peers, "m1  "+m1.RaftAddr+"  true   true    leader") || strings.Contains(peers, "m2") {
		t.Fatalf("list-peers after recovery: %v\n%s", err, peers)
	}
	more := submitEchoes(t, c, "after-recovery", 1)

	m4 := c.addManager("m4")
	testkit.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := c.Client(m1).Cluster(ctx)
		if err != nil {
			return err
		}
		for _, s := range info.Servers {
			if s.ID == m4.Name && s.Voter {
				return nil
			}
		}
		return fmt.Errorf("m4 is not a voter yet: %+v", info.Servers)
	})
	// The new manager holds every task.
	testkit.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tasks, err := c.ClientOf(api.ClientOptions{RetryFor: 5 * time.Second}, m4).Tasks(ctx, false)
		if err != nil {
			return err
		}
		if len(tasks) != len(ids)+len(more) {
			return fmt.Errorf("m4 holds %d tasks, want %d", len(tasks), len(ids)+len(more))
		}
		return nil
	})
	runningOnce(t, c, append(ids, more...), 60*time.Second)
}

// TestOps_SnapshotRestoreIntoNewCluster: a backup of a cluster running
// tasks (cube operator snapshot save, a 0600 file that inspect checks) is
// restored into a new cluster (same CA and operator token, new managers and
// new workers) after the first one is gone with its containers. Every task
// comes back and runs exactly once on the new workers; the old workers,
// unknown to the new cluster, are recorded dead. A damaged copy of the file
// is refused and changes nothing.
func TestOps_SnapshotRestoreIntoNewCluster(t *testing.T) {
	a := NewProcCluster(t, 3, 2)
	ids := submitEchoes(t, a, "backed-up", 3)
	file := filepath.Join(t.TempDir(), "backup.snap")
	out, err := a.Cube("operator", "snapshot", "save", file)
	if err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	inspected, err := exec.Command(a.Bin, "operator", "snapshot", "inspect", file).CombinedOutput()
	if err != nil || !strings.Contains(string(inspected), "Tasks    3\n") || !strings.Contains(string(inspected), "Workers  2\n") {
		t.Fatalf("snapshot inspect: %v\n%s", err, inspected)
	}
	oldWorkers := []string{a.Workers[0].Name, a.Workers[1].Name}
	a.Close()

	b := NewProcClusterWith(t, 3, 2, ProcOptions{Identity: a.Sec})
	damaged, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	damaged[len(damaged)/2] ^= 0x01
	badFile := filepath.Join(t.TempDir(), "damaged.snap")
	if err := os.WriteFile(badFile, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Cube("operator", "snapshot", "restore", badFile); err == nil || !strings.Contains(out+err.Error(), "checksum mismatch") {
		t.Fatalf("restore of a damaged file: %v\n%s", err, out)
	}
	// The damaged body sent straight to the API is refused by the leader too.
	putCtx, putCancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer putCancel()
	resp, err := b.HTTPClient().Do(mustRequest(t, putCtx, "PUT", b.URL(b.Managers[1], api.SnapshotPath), damaged))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("PUT of a damaged snapshot: %d, want 400", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if tasks, err := b.Client().Tasks(ctx, true); err != nil || len(tasks) != 0 {
		t.Fatalf("the new cluster holds %d tasks after refused restores (%v), want 0", len(tasks), err)
	}

	out, err = b.Cube("operator", "snapshot", "restore", file)
	if err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	runningOnce(t, b, ids, 90*time.Second)
	nodes, err := b.Client().Nodes(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, old := range oldWorkers {
			if n.Name == old && n.State != api.NodeDead {
				t.Errorf("old worker %s is %s in the new cluster, want dead", old, n.State)
			}
		}
	}
}

// mustRequest builds a request with body.
func mustRequest(t *testing.T, ctx context.Context, method, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
)

// client returns an API client of every running manager.
func (c *managers) client() *api.Client {
	c.t.Helper()
	var addrs []string
	c.mu.Lock()
	for id := range c.srv {
		addrs = append(addrs, c.cfgs[id].HTTPAddr)
	}
	c.mu.Unlock()
	cl, err := api.NewClient(addrs, api.ClientOptions{RetryFor: 20 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// taskNames reads the tasks manager id holds (its own state, not the
// leader's) and returns their names, sorted.
func (c *managers) taskNames(id string) []string {
	c.t.Helper()
	c.mu.Lock()
	s := c.srv[id]
	c.mu.Unlock()
	var names []string
	for _, t := range s.FSM().Tasks() {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}

// waitTasks waits until every running manager holds exactly the tasks named.
func (c *managers) waitTasks(want ...string) {
	c.t.Helper()
	slices.Sort(want)
	c.mu.Lock()
	var ids []string
	for id := range c.srv {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		testkit.Eventually(c.t, 20*time.Second, func() error {
			if got := c.taskNames(id); !slices.Equal(got, want) {
				return fmt.Errorf("%s holds tasks %v, want %v", id, got, want)
			}
			return nil
		})
	}
}

// A snapshot saved through a follower holds every task acknowledged before
// it; restored after more writes, it puts every manager back to that state;
// a damaged file is refused (400) and changes nothing.
func TestServer_SnapshotSaveRestore(t *testing.T) {
	c := startManagers(t, 3)
	for _, n := range []string{"a1", "a2", "a3"} {
		c.write(n)
	}
	cl := c.client()
	ctx := context.Background()
	file, err := cl.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := fsm.DecodeSnapshotFile(bytes.NewReader(file))
	if err != nil || info.Tasks != 3 || info.Index == 0 {
		t.Fatalf("saved snapshot: %+v, %v; want 3 tasks at an index", info, err)
	}
	c.write("b1")
	c.waitTasks("a1", "a2", "a3", "b1")

	damaged := bytes.Clone(file)
	damaged[len(damaged)-20] ^= 0x20
	status, body := c.http(c.follower(c.leader()), http.MethodPut, api.SnapshotPath, string(damaged))
	if status != http.StatusBadRequest || !bytes.Contains(body, []byte("checksum mismatch")) {
		t.Fatalf("PUT damaged snapshot: %d %s; want 400 naming the checksum", status, body)
	}
	c.waitTasks("a1", "a2", "a3", "b1")

	got, err := cl.RestoreSnapshot(ctx, file)
	if err != nil || got != info {
		t.Fatalf("RestoreSnapshot = %+v, %v; want %+v", got, err, info)
	}
	c.waitTasks("a1", "a2", "a3")
	c.write("c1")
	c.waitTasks("a1", "a2", "a3", "c1")
}

// memSink collects a persisted FSM snapshot.
type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// A restored state naming a worker this cluster has never seen records it
// dead at once: gossip would never report on it, and its tasks would wait
// on it for ever.
func TestServer_RestoreRecordsUnknownWorkersDead(t *testing.T) {
	c := startManagers(t, 1)
	src := fsm.New()
	ghost := api.Node{Name: "ghost", API: "127.0.0.1:1", State: api.NodeAlive, RuntimeAvailable: true, Cpu: 2, Memory: 1 << 30, Disk: 1 << 30}
	task := api.Task{ID: uuid.New(), Name: "on-ghost", Image: "cube-echo:latest"}
	for _, cmd := range []any{
		fsm.UpsertWorker{Node: ghost},
		fsm.SubmitTask{Task: task, Time: time.Now().UTC()},
		fsm.AssignTask{ID: task.ID, Worker: "ghost", Generation: 1, Time: time.Now().UTC()},
	} {
		if res := src.ApplyCommand(cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	file, _, err := fsm.EncodeSnapshotFile(sink.Bytes(), 10, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client().RestoreSnapshot(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() error {
		status, body := c.http("m1", http.MethodGet, "/nodes", "")
		var nodes []api.Node
		if err := json.Unmarshal(body, &nodes); err != nil || status != http.StatusOK {
			return fmt.Errorf("GET /nodes: %d %s", status, body)
		}
		for _, n := range nodes {
			if n.Name == "ghost" && n.State == api.NodeDead {
				return nil
			}
		}
		return fmt.Errorf("ghost not recorded dead: %+v", nodes)
	})
}

// The lost majority on real manager servers: two of three gone with their
// data, the survivor stopped, peers.json written with the survivor alone,
// started again: it leads with every task, takes writes, and a new manager
// joins and is promoted.
func TestServer_RecoverLostMajority(t *testing.T) {
	c := startManagers(t, 3)
	for _, n := range []string{"t1", "t2", "t3"} {
		c.write(n)
	}
	c.waitTasks("t1", "t2", "t3")
	for _, id := range []string{"m2", "m3"} {
		c.kill(id)
		if err := os.RemoveAll(c.cfgs[id].DataDir); err != nil {
			t.Fatal(err)
		}
	}
	c.kill("m1")
	m1 := c.cfgs["m1"]
	if _, err := cluster.WritePeersFile(filepath.Join(m1.DataDir, "raft"), []cluster.Peer{{ID: "m1", Addr: m1.RaftAddr}}); err != nil {
		t.Fatal(err)
	}
	c.start("m1")
	if l := c.leader(); l != "m1" {
		t.Fatalf("leader after recovery: %s", l)
	}
	c.waitTasks("t1", "t2", "t3")
	c.write("t4")
	c.wantVoters("m1", "m1")

	c.join("m4")
	testkit.Eventually(t, 30*time.Second, func() error {
		if s, ok := c.servers("m1")["m4"]; !ok || !s.Voter {
			return fmt.Errorf("m4 not a voter yet: %+v", c.servers("m1"))
		}
		return nil
	})
	c.waitTasks("t1", "t2", "t3", "t4")
}

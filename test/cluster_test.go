package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// These tests run real managers in-process: raft over real TCP with real bolt
// files, memberlist over real UDP/TCP, the API over real HTTP. No worker is
// needed: tasks stay Pending ("waiting for a live worker"), which is itself
// one of the behaviours under test.

func submit(t *testing.T, c *api.Client, name string) api.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	task, created, err := c.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: uuid.New(), Name: name, Image: "cube-echo:latest"}})
	if err != nil || !created {
		t.Fatalf("submit %s: created %v, %v", name, created, err)
	}
	return task
}

// tasksOn reads a manager's local state directly.
func tasksOn(m *Manager) map[uuid.UUID]api.Task {
	out := make(map[uuid.UUID]api.Task)
	for _, t := range m.FSM.Tasks() {
		out[t.ID] = t
	}
	return out
}

// converged waits until every running manager holds exactly the want tasks.
func converged(t *testing.T, c *Cluster, want []api.Task) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, func() error {
		for _, m := range c.Running() {
			have := tasksOn(m)
			for _, w := range want {
				if _, ok := have[w.ID]; !ok {
					return fmt.Errorf("%s lacks task %s (%s); holds %d tasks", m.ID, w.ID, w.Name, len(have))
				}
			}
			if len(have) != len(want) {
				return fmt.Errorf("%s holds %d tasks, want %d", m.ID, len(have), len(want))
			}
		}
		return nil
	})
}

func TestCluster_OneLeaderAndWritesThroughAFollower(t *testing.T) {
	c := NewCluster(t, 3)
	leader := c.Leader()
	follower := c.Followers()[0]
	// Right after an election a follower may not have heard from the new
	// leader yet, and then rightly answers 503; forwarding is what is tested.
	testkit.Eventually(t, 10*time.Second, func() error {
		if id, _ := follower.Raft.Leader(); id != leader.ID {
			return fmt.Errorf("follower %s knows leader %q, not yet %s", follower.ID, id, leader.ID)
		}
		return nil
	})

	// A raw POST to a follower: forwarded, committed, 201 with the leader named.
	body, _ := json.Marshal(api.TaskEvent{State: api.Running, Task: api.Task{ID: uuid.New(), Name: "via-follower", Image: "cube-echo:latest"}})
	resp, err := c.HTTPClient().Post(follower.URL("/tasks"), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get(api.HeaderLeader) != leader.HTTPAddr {
		t.Fatalf("POST to follower: %d, leader header %q, want 201 and %q", resp.StatusCode, resp.Header.Get(api.HeaderLeader), leader.HTTPAddr)
	}
	var ev api.TaskEvent
	_ = json.Unmarshal(body, &ev)

	// The client knows only the follower and still writes.
	task := submit(t, c.Client(follower), "client-via-follower")
	converged(t, c, []api.Task{ev.Task, task})

	// With no worker, tasks wait Pending with a reason.
	testkit.Eventually(t, 10*time.Second, func() error {
		got, err := leader.FSM.Task(task.ID)
		if err != nil || got.State != api.Pending || got.Reason != "waiting for a live worker" {
			return fmt.Errorf("task %+v, %v; want Pending waiting for a live worker", got, err)
		}
		return nil
	})

	// Consistent reads from every manager agree.
	for _, m := range c.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tasks, err := c.Client(m).Tasks(ctx, true)
		cancel()
		if err != nil || len(tasks) != 2 {
			t.Fatalf("consistent read via %s: %d tasks, %v", m.ID, len(tasks), err)
		}
	}
}

func TestCluster_LeaderKilledKeepsCommittedTasks(t *testing.T) {
	c := NewCluster(t, 3)
	client := c.Client()
	var want []api.Task
	for i := 0; i < 5; i++ {
		want = append(want, submit(t, client, fmt.Sprintf("before-%d", i)))
	}
	old := c.Leader()
	c.Kill(old.ID)
	start := time.Now()
	next := c.Leader()
	if next.ID == old.ID {
		t.Fatalf("killed leader %s still leads", old.ID)
	}
	t.Logf("new leader %s elected %s after the kill", next.ID, time.Since(start).Round(time.Millisecond))
	want = append(want, submit(t, c.Client(), "after"))
	converged(t, c, want)

	// The killed manager, restarted on its data dir, catches up.
	c.Restart(old.ID)
	converged(t, c, want)
}

func TestCluster_AddedManagerCatchesUpThroughSnapshot(t *testing.T) {
	c := NewCluster(t, 3)
	client := c.Client()
	var want []api.Task
	for i := 0; i < 20; i++ {
		want = append(want, submit(t, client, fmt.Sprintf("t%d", i)))
	}
	leader := c.Leader()
	if err := leader.Raft.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	want = append(want, submit(t, client, "after-snapshot"))
	m4 := c.Add("m4")
	converged(t, c, want)
	if got := tasksOn(m4); len(got) != len(want) {
		t.Fatalf("m4 holds %d tasks, want %d", len(got), len(want))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	servers, err := leader.Raft.Servers(ctx)
	if err != nil || len(servers) != 4 {
		t.Fatalf("raft servers after join: %+v, %v", servers, err)
	}
}

func TestCluster_FullRestartKeepsEverything(t *testing.T) {
	c := NewCluster(t, 3)
	client := c.Client()
	var want []api.Task
	for i := 0; i < 5; i++ {
		want = append(want, submit(t, client, fmt.Sprintf("t%d", i)))
	}
	converged(t, c, want)
	before := tasksOn(c.Leader())
	for _, m := range c.Running() {
		c.Kill(m.ID)
	}
	for _, id := range []string{"m1", "m2", "m3"} {
		c.Restart(id)
	}
	c.Leader()
	converged(t, c, want)
	for _, m := range c.Running() {
		after := tasksOn(m)
		for id, b := range before {
			a := after[id]
			if a.ID != b.ID || a.Name != b.Name || a.Image != b.Image || !a.SubmitTime.Equal(b.SubmitTime) {
				t.Fatalf("%s: task %s changed across the restart:\n%+v\n%+v", m.ID, id, b, a)
			}
		}
	}
}

func TestCluster_BadInputStoresNothing(t *testing.T) {
	c := NewCluster(t, 3)
	kept := submit(t, c.Client(), "kept")
	converged(t, c, []api.Task{kept})
	valid := `{"State":2,"Task":{"ID":"bb1d59ef-9fc1-4e4b-a44d-db571eeed203","Image":"cube-echo:latest"`
	// A report comes from a worker certificate (any other caller gets 403
	// before its body is read); the cluster has no worker, so the test
	// makes a certificate for one.
	asWorker := c.Sec.HTTPClientAs(security.RoleWorker, "w-test")
	cases := []struct {
		name, method, path, body string
		status                   int
	}{
		{"malformed JSON", "POST", "/tasks", `{"Task":`, 400},
		{"unknown field", "POST", "/tasks", valid + `,"Bogus":1}}`, 400},
		{"bad UUID", "POST", "/tasks", `{"Task":{"ID":"xyz","Image":"x"}}`, 400},
		{"wrong type", "POST", "/tasks", valid + `,"Cpu":"many"}}`, 400},
		{"negative memory", "POST", "/tasks", valid + `,"Memory":-1}}`, 400},
		{"missing image", "POST", "/tasks", `{"Task":{"Name":"x"}}`, 400},
		{"oversized", "POST", "/tasks", valid + `,"Name":"` + strings.Repeat("n", 2<<20) + `"}}`, 413},
		{"bad path UUID", "DELETE", "/tasks/xyz", ``, 400},
		{"unknown task", "DELETE", "/tasks/" + uuid.NewString(), ``, 404},
		{"bad health interval", "POST", "/tasks", valid + `,"ExposedPorts":{"7777/tcp":{}},"HealthCheck":"/h","HealthCheckInterval":"often"}}`, 400},
		{"health check without a port", "POST", "/tasks", valid + `,"HealthCheck":"/health"}}`, 400},
		{"health port not exposed", "POST", "/tasks", valid + `,"ExposedPorts":{"7777/tcp":{}},"HealthCheck":"tcp","HealthCheckPort":"80/tcp"}}`, 400},
		{"bad report", "POST", "/reports", `{"ID":"` + kept.ID.String() + `"}`, 400},
	}
	hc := c.HTTPClient()
	for _, m := range []*Manager{c.Leader(), c.Followers()[0]} {
		for _, tc := range cases {
			do := hc.Do
			if tc.path == "/reports" {
				do = asWorker.Do
			}
			// A 503 (an election under way: nothing decided, retry, as
			// every client does) is asked again; the answer that counts
			// is the first other one.
			var resp *http.Response
			var er api.ErrResponse
			for deadline := time.Now().Add(20 * time.Second); ; {
				req, _ := http.NewRequest(tc.method, m.URL(tc.path), strings.NewReader(tc.body))
				var err error
				if resp, err = do(req); err != nil {
					t.Fatalf("%s via %s: %v", tc.name, m.ID, err)
				}
				if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
					break
				}
				resp.Body.Close()
				time.Sleep(200 * time.Millisecond)
			}
			err := json.NewDecoder(resp.Body).Decode(&er)
			resp.Body.Close()
			if resp.StatusCode != tc.status || err != nil || er.Message == "" {
				t.Fatalf("%s via %s: %d %+v (%v), want %d with a message", tc.name, m.ID, resp.StatusCode, er, err, tc.status)
			}
		}
	}
	// Nothing was stored on any manager: a marker written after the bad input
	// reaches every manager, and raft applies in order, so a wrongly committed
	// entry would be there too.
	marker := submit(t, c.Client(), "marker")
	converged(t, c, []api.Task{kept, marker})
}

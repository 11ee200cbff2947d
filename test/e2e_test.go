package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// These tests run real `cube` binaries (3 managers, 3 workers) against the
// real Docker engine and the cube-echo:latest image.

func echoTask(name string) api.Task {
	return api.Task{ID: uuid.New(), Name: name, Image: "cube-echo:latest", ExposedPorts: api.PortSet{"7777/tcp": {}}, HealthCheck: "/health"}
}

// waitRunning waits until every task is Running according to a consistent read.
func waitRunning(t *testing.T, c *ProcCluster, ids []uuid.UUID) map[uuid.UUID]api.Task {
	t.Helper()
	out := make(map[uuid.UUID]api.Task)
	testkit.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, id := range ids {
			task, err := c.Client().Task(ctx, id, true)
			if err != nil {
				return err
			}
			if task.State != api.Running {
				return fmt.Errorf("task %s (%s) is %s on %q: %s", id, task.Name, task.State, task.Worker, task.Reason)
			}
			out[id] = task
		}
		return nil
	})
	return out
}

// echo POSTs to the task's published port and checks the answer.
func echo(t *testing.T, task api.Task) {
	t.Helper()
	var port string
	for _, b := range task.HostPorts["7777/tcp"] {
		if !strings.Contains(b.HostIp, ":") {
			port = b.HostPort
		}
	}
	if port == "" {
		t.Fatalf("task %s has no IPv4 host port: %+v", task.ID, task.HostPorts)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	testkit.Eventually(t, 15*time.Second, func() error {
		resp, err := hc.Post("http://127.0.0.1:"+port+"/", "application/json", strings.NewReader(`{"Msg":"hi"}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"Msg":"hi"}` {
			return fmt.Errorf("echo: %d %q", resp.StatusCode, body)
		}
		return nil
	})
}

func TestE2E_SubmitThroughEveryManagerAndSurviveLeaderKill(t *testing.T) {
	c := NewProcCluster(t, 3, 3)

	// Two tasks through each manager (each client knows only that manager).
	var ids []uuid.UUID
	for i, m := range c.Managers {
		for j := 0; j < 2; j++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			task, created, err := c.Client(m).SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask(fmt.Sprintf("via-%s-%d", m.Name, j))})
			cancel()
			if err != nil || !created {
				t.Fatalf("submit via manager %d: created %v, %v", i+1, created, err)
			}
			ids = append(ids, task.ID)
		}
	}
	running := waitRunning(t, c, ids)

	// Spread by the scheduler: every worker got some.
	perWorker := map[string]int{}
	for _, task := range running {
		perWorker[task.Worker]++
	}
	if len(perWorker) != len(c.Workers) {
		t.Fatalf("tasks per worker %v, want all %d workers used", perWorker, len(c.Workers))
	}
	for _, task := range running {
		echo(t, task)
	}

	// Consistent reads from every manager agree.
	var first []api.Task
	for _, m := range c.Managers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tasks, err := c.Client(m).Tasks(ctx, true)
		cancel()
		if err != nil {
			t.Fatalf("consistent read via %s: %v", m.Name, err)
		}
		if first == nil {
			first = tasks
			continue
		}
		if fmt.Sprint(tasks) != fmt.Sprint(first) {
			t.Fatalf("consistent reads disagree:\n%v\n%v", first, tasks)
		}
	}

	// Exactly one container per task, counted from the engine.
	before := c.Containers()
	for _, id := range ids {
		if n := len(before[id.String()]); n != 1 {
			t.Fatalf("task %s has %d running containers, want 1", id, n)
		}
	}

	// SIGKILL the leader: another leads, new submissions run, old tasks keep running.
	old := c.LeaderProc()
	c.Kill(old)
	killed := time.Now()
	var next *Proc
	testkit.Eventually(t, 30*time.Second, func() error {
		next = c.LeaderProc()
		if next == old {
			return fmt.Errorf("killed manager still named leader")
		}
		return nil
	})
	t.Logf("leader %s killed; %s leads after %s", old.Name, next.Name, time.Since(killed).Round(time.Millisecond))

	var survivors []*Proc
	for _, m := range c.Managers {
		if m != old {
			survivors = append(survivors, m)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	after, _, err := c.Client(survivors...).SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask("after-failover")})
	cancel()
	if err != nil {
		t.Fatalf("submit after failover: %v", err)
	}
	echo(t, waitRunning(t, c, []uuid.UUID{after.ID})[after.ID])

	now := c.Containers()
	for _, id := range ids {
		if fmt.Sprint(now[id.String()]) != fmt.Sprint(before[id.String()]) {
			t.Fatalf("task %s containers changed across the failover: %v → %v", id, before[id.String()], now[id.String()])
		}
	}

	// Stop through a follower: committed, carried out, container gone.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client(survivors...).StopTask(ctx, ids[0]); err != nil {
		t.Fatalf("stop: %v", err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		task, err := c.Client(survivors...).Task(ctx, ids[0], true)
		if err != nil {
			return err
		}
		if task.State != api.Completed || len(c.Containers()[ids[0].String()]) != 0 {
			return fmt.Errorf("after stop: %s, containers %v", task.State, c.Containers()[ids[0].String()])
		}
		return nil
	})
}

func TestE2E_PendingUntilAWorkerJoinsAndTheCLI(t *testing.T) {
	c := NewProcCluster(t, 3, 0)
	dir := t.TempDir()
	file := dir + "/task.json"
	writeFile(t, file, `{"State":2,"Task":{"Name":"cli-echo","Image":"cube-echo:latest","ExposedPorts":{"7777/tcp":{}}}}`)

	out, err := c.Cube("run", "-f", file)
	if err != nil || !strings.Contains(out, "task submitted") {
		t.Fatalf("cube run: %v\n%s", err, out)
	}
	id := uuid.MustParse(strings.Fields(strings.SplitN(out, "submitted ", 2)[1])[0])

	// No worker: Pending with a reason, shown by cube status.
	testkit.Eventually(t, 20*time.Second, func() error {
		out, err := c.Cube("status")
		if err != nil || !strings.Contains(out, id.String()) || !strings.Contains(out, "Pending") || !strings.Contains(out, "waiting for a live worker") {
			return fmt.Errorf("cube status: %v\n%s", err, out)
		}
		return nil
	})

	// A worker joins: the task runs.
	w := c.AddWorker()
	c.WaitReady(1)
	task := waitRunning(t, c, []uuid.UUID{id})[id]
	if task.Worker != w.Name {
		t.Fatalf("task on %q, want %q", task.Worker, w.Name)
	}
	echo(t, task)

	out, err = c.Cube("status", "--consistent")
	if err != nil || !strings.Contains(out, "Running") || !strings.Contains(out, w.Name) {
		t.Fatalf("cube status: %v\n%s", err, out)
	}
	hostPort := ""
	for _, b := range task.HostPorts["7777/tcp"] {
		if !strings.Contains(b.HostIp, ":") && hostPort == "" {
			hostPort = b.HostPort
		}
	}
	if hostPort == "" {
		t.Fatalf("running task without an IPv4 host port: %+v", task.HostPorts)
	}
	if want := hostPort + "->7777/tcp"; !strings.Contains(out, want) {
		t.Fatalf("cube status does not show the published port %s:\n%s", want, out)
	}
	out, err = c.Cube("node")
	if err != nil || !strings.Contains(out, w.Name) || !strings.Contains(out, "alive") {
		t.Fatalf("cube node: %v\n%s", err, out)
	}
	out, err = c.Cube("members")
	if err != nil || strings.Count(out, "manager") < 3 || !strings.Contains(out, "*") || !strings.Contains(out, w.Name) {
		t.Fatalf("cube members: %v\n%s", err, out)
	}
	out, err = c.Cube("stop", id.String())
	if err != nil || !strings.Contains(out, "committed") {
		t.Fatalf("cube stop: %v\n%s", err, out)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		if n := len(c.Containers()[id.String()]); n != 0 {
			return fmt.Errorf("%d containers still running after stop", n)
		}
		return nil
	})
	// Security is on: the same CLI with no credentials is refused (401),
	// and so is a request over TLS with no certificate and no token.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bare := c.CubeCommand(ctx, "status", "-m", c.Managers[0].HTTPAddr)
	bare.Env = append(bare.Env, "CUBE_TOKEN=", "CUBE_CLIENT_CERT=", "CUBE_CLIENT_KEY=") // the last value of a variable wins
	if out, err := bare.CombinedOutput(); err == nil || !strings.Contains(string(out), "HTTP 401") {
		t.Fatalf("cube status without credentials: %v\n%s", err, out)
	}
	caOnly, err := security.ClientTLS(c.Sec.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(c.Managers[0], "/tasks"), nil)
	resp, err := (&http.Client{Transport: api.NewTLSTransport("", caOnly)}).Do(req)
	if err != nil {
		t.Fatalf("GET /tasks with no credentials: %v", err)
	}
	var er api.ErrResponse
	_ = json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || er.Message == "" {
		t.Fatalf("GET /tasks with no credentials: %d %+v, want 401 with a message", resp.StatusCode, er)
	}

	// Bad input from the CLI: a clear error, exit status non-zero.
	writeFile(t, file, `{"Task":{"Image":"cube-echo:latest","Memory":-1}}`)
	if out, err := c.Cube("run", "-f", file); err == nil || !strings.Contains(out, "Memory must be") {
		t.Fatalf("cube run with bad input: %v\n%s", err, out)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

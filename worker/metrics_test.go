package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// get fetches http://addr/path and returns its status and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// waitReady waits until GET /health/ready answers status with a reason
// containing reason.
func waitReady(t *testing.T, addr string, status int, reason string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		code, body := get(t, addr, "/health/ready")
		var p api.Probe
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			return fmt.Errorf("GET /health/ready: %d %q: %v", code, body, err)
		}
		if code != status || !strings.Contains(p.Reason, reason) {
			return fmt.Errorf("GET /health/ready: %d %+v, want %d with a reason containing %q", code, p, status, reason)
		}
		return nil
	})
}

// series returns the value of the series of the /metrics text whose line
// starts with prefix (name and labels), and whether there is one.
func series(text, prefix string) (float64, bool) {
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestAgent_ProbesAndMetrics runs an agent alone on the real engine: it is
// live and ready; its engine stops answering (the ping fails) and it says
// not ready, naming the engine, and cube_worker_runtime_up drops; back, it
// is ready again. /metrics times its engine calls by operation, and counts
// its task records by state, a real container's included.
func TestAgent_ProbesAndMetrics(t *testing.T) {
	docker, err := NewDocker(DefaultDockerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker.Close() })
	rt := &switchablePing{Runtime: docker}
	cfg := testAgentConfig(t)
	cfg.Runtime, cfg.RuntimeCheckInterval = rt, 50*time.Millisecond
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the echo task (runEcho) is stopped before
	// the agent closes, and the engine client after both.
	t.Cleanup(func() { _ = a.Close() })

	if code, body := get(t, a.Addr(), "/health/live"); code != 200 || !strings.Contains(body, `"Status":"ok"`) {
		t.Fatalf("GET /health/live: %d %s", code, body)
	}
	waitReady(t, a.Addr(), 200, "")
	rt.down.Store(true)
	waitReady(t, a.Addr(), 503, "the container engine does not answer")
	_, text := get(t, a.Addr(), "/metrics")
	if v, ok := series(text, "cube_worker_runtime_up"); !ok || v != 0 {
		t.Fatalf("cube_worker_runtime_up = %v (%v) with the engine down, want 0", v, ok)
	}
	rt.down.Store(false)
	waitReady(t, a.Addr(), 200, "")

	id := runEcho(t, a)
	testkit.Eventually(t, 60*time.Second, func() error {
		_, text := get(t, a.Addr(), "/metrics")
		for _, want := range []struct {
			prefix string
			min    float64
		}{
			{`cube_worker_runtime_up`, 1},
			{`cube_worker_tasks{state="running"}`, 1},
			{`cube_worker_runtime_call_seconds_count{op="ping",result="ok"}`, 1},
			{`cube_worker_runtime_call_seconds_count{op="create",result="ok"}`, 1},
			{`cube_worker_runtime_call_seconds_count{op="start",result="ok"}`, 1},
		} {
			if v, ok := series(text, want.prefix); !ok || v < want.min {
				return fmt.Errorf("%s = %v (present %v), want at least %v", want.prefix, v, ok, want.min)
			}
		}
		if !regexp.MustCompile(`(?m)^go_goroutines \d`).MatchString(text) {
			return errors.New("no go_goroutines: Go's collector missing")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Worker().Stop(ctx, id, nil); err != nil {
		t.Fatalf("stop the echo task: %v", err)
	}
}

// runEcho starts the echo image on the agent's worker and returns the
// task's ID; the container is stopped and removed when the test ends.
func runEcho(t *testing.T, a *Agent) uuid.UUID {
	t.Helper()
	requireImage(t)
	task := api.Task{ID: uuid.New(), Name: "metrics-echo", Image: echoImage, Generation: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = a.Worker().Stop(ctx, task.ID, nil) // a no-op once the test stopped it
	})
	if _, _, err := a.Worker().Submit(ctx, api.TaskEvent{ID: uuid.New(), State: api.Running, Task: task}); err != nil {
		t.Fatalf("run the echo image: %v", err)
	}
	return task.ID
}

// TestAgent_ReadyNeedsAManager: in a cluster, the agent is not ready until
// gossip shows it a manager alive.
func TestAgent_ReadyNeedsAManager(t *testing.T) {
	cfg := testAgentConfig(t)
	cfg.GossipAddr = testkit.FreeAddr(t)
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitReady(t, a.Addr(), 503, "no manager alive")

	g := cluster.FastGossipConfig()
	host, port, _ := cluster.ParseGossipAddr(testkit.FreeAddr(t))
	g.Name, g.BindAddr, g.BindPort, g.Logger = "manager-m1", host, port, testkit.Logger(t, "m1")
	g.Seeds = []string{cfg.GossipAddr}
	g.Meta = cluster.Meta{Role: cluster.RoleManager, API: "127.0.0.1:1", RaftID: "m1", RaftAddr: "127.0.0.1:2"}
	mgr, err := cluster.NewPool(g)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Shutdown()
	waitReady(t, a.Addr(), 200, "")
}

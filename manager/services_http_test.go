package manager

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
)

// The service routes over real HTTP, through api.Client, on a one-manager
// cluster without workers (the tasks stay Pending).
func TestServer_ServicesOverHTTP(t *testing.T) {
	cfg := testServerConfig(t, "m1", t.TempDir())
	cfg.Peers = []cluster.Peer{{ID: "m1", Addr: cfg.RaftAddr}}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitLeading(t, s)
	c, err := api.NewClient([]string{s.Addr()}, api.ClientOptions{RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if list, err := c.Services(ctx); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("no services: %#v, %v", list, err)
	}
	web := api.Service{Name: "web", Count: 2, Task: api.Task{Image: "cube-echo:latest", Env: []string{"A=1"}}, Update: api.UpdatePolicy{MaxParallel: 1}}
	st, err := c.CreateService(ctx, web)
	if err != nil || st.Version != 1 || st.Count != 2 || len(st.History) != 1 {
		t.Fatalf("create: %+v, %v", st, err)
	}
	other := web
	other.Task.Image = "cube-echo:other"
	if _, err := c.CreateService(ctx, other); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("second create of web: %v", err)
	}
	for _, bad := range []api.Service{{Name: "-x", Task: api.Task{Image: "i"}}, {Name: "x"}, {Name: "x", Task: api.Task{Image: "i", Memory: -1}}} {
		var verr *api.ValidationError
		if _, err := c.CreateService(ctx, bad); !errors.As(err, &verr) {
			t.Fatalf("create %+v: %v, want a 400", bad, err)
		}
	}
	// The loop starts its tasks.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := 0
		for _, task := range s.FSM().LiveTasks() {
			if task.Service == "web" {
				n++
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks of web, want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// PUT: the same (200, nothing), new (201), changed template (version 2).
	if st, created, err := c.PutService(ctx, web); err != nil || created || st.Version != 1 {
		t.Fatalf("put of the same: %+v %v %v", st, created, err)
	}
	api2 := api.Service{Name: "api", Count: 1, Task: api.Task{Image: "cube-echo:latest"}}
	if st, created, err := c.PutService(ctx, api2); err != nil || !created || st.Version != 1 {
		t.Fatalf("put of a new one: %+v %v %v", st, created, err)
	}
	web.Task.Image = "cube-echo:2"
	st, created, err := c.PutService(ctx, web)
	if err != nil || created || st.Version != 2 || st.Rollout == nil || st.Rollout.State != api.RolloutRunning {
		t.Fatalf("put of a new template: %+v %v %v", st, created, err)
	}
	if list, err := c.Services(ctx); err != nil || len(list) != 2 || list[0].Name != "api" || list[1].Name != "web" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if st, err := c.ScaleService(ctx, "web", 3); err != nil || st.Count != 3 || st.Version != 2 {
		t.Fatalf("scale: %+v, %v", st, err)
	}
	if _, err := c.ScaleService(ctx, "nope", 3); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("scale of an unknown service: %v", err)
	}
	// No healthy version yet: a rollback is a conflict; once version 1 is
	// marked healthy it goes back to it.
	if _, err := c.RollbackService(ctx, "web"); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("rollback without a healthy version: %v", err)
	}
	data, _ := fsm.Encode(fsm.SetRollout{Name: "web", Expect: 2, Healthy: 1, Time: time.Now().UTC()})
	if _, err := s.Raft().Apply(ctx, data); err != nil {
		t.Fatal(err)
	}
	st, err = c.RollbackService(ctx, "web")
	if err != nil || st.Version != 1 || st.Task.Image != "cube-echo:latest" || st.Rollout.From != 2 || st.Rollout.To != 1 {
		t.Fatalf("rollback: %+v, %v", st, err)
	}
	if st, err := c.Service(ctx, "web"); err != nil || st.Version != 1 || st.Count != 3 || len(st.History) != 2 {
		t.Fatalf("get: %+v, %v", st, err)
	}
	// A body naming another service than the path, and unknown fields: 400.
	for _, body := range []string{`{"Name":"other","Task":{"Image":"i"}}`, `{"Task":{"Image":"i"},"Replicas":3}`} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+s.Addr()+"/services/web", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("PUT %s: %d, want 400", body, resp.StatusCode)
		}
	}
	if err := c.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteService(ctx, "web"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := c.Service(ctx, "web"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	for _, task := range s.FSM().LiveTasks() {
		if task.Service == "web" && task.DesiredState == api.Running {
			t.Fatalf("task %s of the deleted service still to run", task.Name)
		}
	}
}

package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

func webService(count int, image string) api.Service {
	return api.Service{Name: "web", Count: count, Task: api.Task{Image: image, HealthCheck: "/health"},
		Update: api.UpdatePolicy{MaxParallel: 1, AutoRevert: true}}
}

// Create, create again, change Count only, change the template, change
// nothing: versions, history and rollouts follow.
func TestFSM_PutService_Versions(t *testing.T) {
	f := New()
	res := applyLog(t, f, 1, PutService{Service: webService(3, "cube-echo:1"), Mode: PutCreate, Time: t0, By: "ci"})
	s := res.Service
	if res.Err != nil || !res.Created || !res.Changed || s.Version != 1 || s.Count != 3 || !s.CreateTime.Equal(t0) || s.Rollout != nil ||
		len(s.History) != 1 || s.History[0].By != "ci" || s.History[0].Task.Image != "cube-echo:1" || s.History[0].Healthy {
		t.Fatalf("create: %+v", res)
	}
	if res := applyLog(t, f, 2, PutService{Service: webService(5, "cube-echo:1"), Mode: PutCreate, Time: t0}); !errors.Is(res.Err, api.ErrConflict) || res.Service.Count != 3 {
		t.Fatalf("second create: %+v", res)
	}
	// The same again, with the cluster's fields of a GET set: no change.
	same := webService(3, "cube-echo:1")
	same.Task.ID, same.Task.State, same.Task.Worker, same.Task.ExposedPorts, same.Task.Env = uuid.New(), api.Running, "w1", api.PortSet{}, []string{}
	if res := applyLog(t, f, 3, PutService{Service: same, Time: t0.Add(time.Second)}); res.Err != nil || res.Changed || !res.Service.UpdateTime.Equal(t0) {
		t.Fatalf("put of the same service: %+v", res)
	}
	// Count alone: no new version, no rollout.
	res = applyLog(t, f, 4, PutService{Service: webService(6, "cube-echo:1"), Time: t0.Add(2 * time.Second)})
	if res.Err != nil || !res.Changed || res.Service.Version != 1 || res.Service.Count != 6 || res.Service.Rollout != nil || len(res.Service.History) != 1 {
		t.Fatalf("count change: %+v", res)
	}
	// Scale mode reads Name and Count only.
	if res := applyLog(t, f, 5, PutService{Service: api.Service{Name: "web", Count: 2}, Mode: PutScale, Time: t0}); res.Err != nil || res.Service.Count != 2 || res.Service.Task.Image != "cube-echo:1" {
		t.Fatalf("scale: %+v", res)
	}
	if res := applyLog(t, f, 6, PutService{Service: api.Service{Name: "nope", Count: 2}, Mode: PutScale, Time: t0}); !errors.Is(res.Err, api.ErrNotFound) {
		t.Fatalf("scale of an unknown service: %+v", res)
	}
	if res := applyLog(t, f, 7, PutService{Service: api.Service{Name: "web", Count: -1}, Mode: PutScale, Time: t0}); statusOfResult(res) != 400 {
		t.Fatalf("scale to -1: %+v", res)
	}
	// A new template: version 2, a rollout from 1, in the history.
	up := webService(2, "cube-echo:2")
	up.Constraints = []string{"zone==a"}
	res = applyLog(t, f, 8, PutService{Service: up, Time: t0.Add(3 * time.Second), By: "alice"})
	s = res.Service
	if res.Err != nil || !res.Changed || s.Version != 2 || s.Task.Image != "cube-echo:2" || len(s.History) != 2 || s.History[1].By != "alice" ||
		s.Rollout == nil || s.Rollout.From != 1 || s.Rollout.To != 2 || s.Rollout.State != api.RolloutRunning ||
		len(s.Task.Constraints) != 1 || s.Constraints[0] != "zone==a" {
		t.Fatalf("template change: %+v", res)
	}
	// Many versions: the history keeps the last ServiceHistoryMax.
	for i := 3; i <= api.ServiceHistoryMax+5; i++ {
		res = applyLog(t, f, uint64(10+i), PutService{Service: webService(2, fmt.Sprintf("cube-echo:%d", i)), Time: t0})
	}
	s = res.Service
	if s.Version != api.ServiceHistoryMax+5 || len(s.History) != api.ServiceHistoryMax || s.History[len(s.History)-1].Version != s.Version {
		t.Fatalf("after many versions: version %d, history %d (last %d)", s.Version, len(s.History), s.History[len(s.History)-1].Version)
	}
}

// statusOfResult maps a Result's error to its HTTP status.
func statusOfResult(res *Result) int { return api.StatusOf(res.Err) }

// Bad input is a Result error, never a panic.
func TestFSM_PutService_Invalid(t *testing.T) {
	f := New()
	for i, cmd := range []any{
		PutService{},
		PutService{Service: api.Service{Name: "web"}},
		PutService{Service: api.Service{Name: "web", Task: api.Task{Image: "x"}}, Mode: "bogus"},
		PutService{Service: api.Service{Name: "web", Count: 1e6, Task: api.Task{Image: "x"}}},
		PutService{Service: api.Service{Name: "web", Task: api.Task{Image: "x", Memory: -1}}},
		PutService{Service: api.Service{Name: "web", Task: api.Task{Image: "x"}, Constraints: []string{"zone"}}},
		PutService{Service: api.Service{Name: "web", Task: api.Task{Image: "x"}}, By: strings.Repeat("x", 1000)},
		DeleteService{},
		DeleteService{Name: "web"},
		SetRollout{},
		SetRollout{Name: "web", Rollout: &api.Rollout{}},
	} {
		res := applyLog(t, f, uint64(i+1), cmd)
		if res.Err == nil || res.Changed {
			t.Errorf("%T %+v: %+v, want an error", cmd, cmd, res)
		}
	}
	if len(f.Services()) != 0 {
		t.Fatalf("services after bad input: %+v", f.Services())
	}
}

func TestFSM_SetRollout(t *testing.T) {
	f := New()
	applyLog(t, f, 1, PutService{Service: webService(2, "cube-echo:1"), Time: t0})
	applyLog(t, f, 2, PutService{Service: webService(2, "cube-echo:2"), Time: t0})
	if res := applyLog(t, f, 3, SetRollout{Name: "web", Expect: 1, Healthy: 1, Time: t0}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("stale Expect: %+v", res)
	}
	if res := applyLog(t, f, 4, SetRollout{Name: "web", Expect: 2, Healthy: 7, Time: t0}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("unknown version: %+v", res)
	}
	if res := applyLog(t, f, 5, SetRollout{Name: "web", Expect: 2, Rollout: &api.Rollout{From: 1, To: 2, State: "sideways"}, Time: t0}); api.StatusOf(res.Err) != 400 {
		t.Fatalf("bad state: %+v", res)
	}
	res := applyLog(t, f, 6, SetRollout{Name: "web", Expect: 2, Healthy: 1, Time: t0.Add(time.Second)})
	if res.Err != nil || !res.Changed || !res.Service.History[0].Healthy || res.Service.History[1].Healthy {
		t.Fatalf("mark healthy: %+v", res)
	}
	if res := applyLog(t, f, 7, SetRollout{Name: "web", Expect: 2, Healthy: 1, Time: t0.Add(2 * time.Second)}); res.Err != nil || res.Changed {
		t.Fatalf("mark healthy again: %+v", res)
	}
	// A rollback makes version 1 current again, its template and all.
	res = applyLog(t, f, 8, SetRollout{Name: "web", Expect: 2, Current: 1, Time: t0.Add(3 * time.Second),
		Rollout: &api.Rollout{From: 1, To: 2, State: api.RolloutRolledBack, Reason: "batch not healthy"}})
	s := res.Service
	if res.Err != nil || s.Version != 1 || s.Task.Image != "cube-echo:1" || s.Rollout.State != api.RolloutRolledBack || len(s.History) != 2 {
		t.Fatalf("rollback: %+v", res)
	}
	// The next new template is version 3, not 2 again.
	if res := applyLog(t, f, 9, PutService{Service: webService(2, "cube-echo:3"), Time: t0}); res.Service.Version != 3 || res.Service.Rollout.From != 1 {
		t.Fatalf("after a rollback: %+v", res.Service)
	}
}

// DeleteService stops every live task of the service in one entry, and a
// task of it submitted afterwards is refused.
func TestFSM_DeleteService_StopsItsTasks(t *testing.T) {
	f := New()
	applyLog(t, f, 1, worker("w1"))
	applyLog(t, f, 2, PutService{Service: webService(3, "cube-echo:1"), Time: t0})
	mk := func(slot int) api.Task {
		return api.Task{ID: uuid.New(), Name: fmt.Sprintf("web.%d", slot), Image: "cube-echo:1", Service: "web", ServiceVersion: 1, RestartPolicy: "always"}
	}
	pending, running, ended, other := mk(1), mk(2), mk(3), newTask()
	idx := uint64(3)
	for _, task := range []api.Task{pending, running, ended, other} {
		if res := applyLog(t, f, idx, SubmitTask{Task: task, Time: t0}); res.Err != nil {
			t.Fatal(res.Err)
		}
		idx++
	}
	for _, task := range []api.Task{running, ended} {
		applyLog(t, f, idx, AssignTask{ID: task.ID, Worker: "w1", Generation: 1, Time: t0})
		applyLog(t, f, idx+1, ReportTask{Task: api.Task{ID: task.ID, Worker: "w1", Generation: 1, State: api.Running, StartTime: t0}})
		idx += 2
	}
	applyLog(t, f, idx, ReportTask{Task: api.Task{ID: ended.ID, Worker: "w1", Generation: 1, State: api.Failed, ExitCode: 1, StartTime: t0, FinishTime: t0}})
	sub := subscribe(t, f)
	defer sub.Close()
	res := applyLog(t, f, 100, DeleteService{Name: "web", Time: t0})
	if res.Err != nil || !res.Changed || len(res.Tasks) != 3 {
		t.Fatalf("delete: %+v", res)
	}
	if _, ok := f.Service("web"); ok {
		t.Fatal("service still there")
	}
	for _, c := range []struct {
		task     api.Task
		state    api.State
		finished bool
	}{{pending, api.Completed, true}, {running, api.Running, false}, {ended, api.Failed, true}} {
		got, _ := f.Task(c.task.ID)
		if got.DesiredState != api.Completed || got.State != c.state || got.Finished() != c.finished {
			t.Errorf("%s after delete: state %s desired %s finished %v; want %s, Completed, %v", got.Name, got.State, got.DesiredState, got.Finished(), c.state, c.finished)
		}
	}
	if got, _ := f.Task(other.ID); got.DesiredState != api.Running {
		t.Errorf("a task of no service was stopped: %+v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One change per task stopped, numbered within the entry, in ID
	// order: the same positions on every manager.
	stopped := []uuid.UUID{pending.ID, running.ID, ended.ID}
	slices.SortFunc(stopped, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	for i, id := range stopped {
		c, err := sub.Next(ctx)
		if err != nil || c.Index != 100 || c.Seq != i || c.Task.ID != id || c.Task.Service != "web" || c.Task.DesiredState != api.Completed {
			t.Fatalf("feed after delete, change %d: %+v, %v; want 100.%d of task %s", i, c, err, i, id)
		}
	}
	if res := applyLog(t, f, 101, SubmitTask{Task: mk(4), Time: t0}); !errors.Is(res.Err, api.ErrConflict) {
		t.Fatalf("submit of a deleted service's task: %+v", res)
	}
	if res := applyLog(t, f, 102, DeleteService{Name: "web", Time: t0}); !errors.Is(res.Err, api.ErrNotFound) {
		t.Fatalf("second delete: %+v", res)
	}
}

// Services are in snapshots (version 3); a state without services is
// written as version 2, as before, and a version 2 state restores with none.
func TestFSM_Snapshot_Services(t *testing.T) {
	f := New()
	if st := state(t, f); !bytes.Contains(st, []byte(`"Version":2`)) {
		t.Fatalf("a state without services: %s", st)
	}
	applyLog(t, f, 1, PutService{Service: webService(2, "cube-echo:1"), Time: t0})
	applyLog(t, f, 2, PutService{Service: api.Service{Name: "api", Count: 1, Task: api.Task{Image: "cube-echo:1"}}, Time: t0})
	applyLog(t, f, 3, SetRollout{Name: "web", Expect: 1, Healthy: 1, Time: t0})
	st := state(t, f)
	if !bytes.Contains(st, []byte(`"Version":3`)) {
		t.Fatalf("a state with services: %s", st)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(st))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(state(t, g), st) {
		t.Fatal("restored state differs")
	}
	if ss := g.Services(); len(ss) != 2 || ss[0].Name != "api" || !ss[1].History[0].Healthy {
		t.Fatalf("restored services: %+v", ss)
	}
	file, info, err := EncodeSnapshotFile(st, 3, 1, t0)
	if err != nil || info.Services != 2 || info.Version != 3 {
		t.Fatalf("snapshot file: %+v, %v", info, err)
	}
	if _, _, err := DecodeSnapshotFile(bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	if err := g.Restore(io.NopCloser(strings.NewReader(`{"Version":2,"Tasks":[],"Workers":[]}`))); err != nil || len(g.Services()) != 0 {
		t.Fatalf("restore of version 2: %v, %+v", err, g.Services())
	}
}

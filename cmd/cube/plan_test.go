package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

func TestPlan_ComparesAsTheClusterDoes(t *testing.T) {
	tmpl := api.Task{Image: "cube-echo:1", Memory: 64 << 20, Env: []string{"K=secret"}}
	// As the cluster stores it: the template with the cluster's fields set
	// and empty lists where the file has none.
	stored := func(name string, count int, task api.Task) api.ServiceStatus {
		task.ID, task.State, task.Worker, task.Generation = uuid.New(), api.Running, "w1", 4
		task.Service, task.ServiceVersion = name, 3
		if task.Cmd == nil {
			task.Cmd = []string{}
		}
		return api.ServiceStatus{Service: api.Service{Name: name, Count: count, Task: task, Version: 3,
			Update: api.UpdatePolicy{MaxParallel: 2}}, Running: count}
	}
	current := []api.ServiceStatus{
		stored("same", 2, tmpl),
		stored("scaled", 2, tmpl),
		stored("image", 2, tmpl),
		stored("policy", 2, tmpl),
		stored("env", 2, tmpl),
		stored("placed", 2, tmpl),
		stored("elsewhere", 1, tmpl), // not in the file: left alone
	}
	svc := func(name string, count int, task api.Task, f func(*api.Service)) manifestItem {
		task.Name = "ignored-by-the-cluster"
		s := api.Service{Name: name, Count: count, Task: task, Update: api.UpdatePolicy{MaxParallel: 2}}
		if f != nil {
			f(&s)
		}
		return manifestItem{Service: &s}
	}
	newImage := tmpl
	newImage.Image, newImage.Memory = "cube-echo:2", 128<<20
	newEnv := tmpl
	newEnv.Env = []string{"K=other"}
	knownID, newID := uuid.New(), uuid.New()
	items := []manifestItem{
		svc("new", 3, tmpl, nil),
		svc("same", 2, tmpl, nil),
		svc("scaled", 4, tmpl, nil),
		svc("image", 4, newImage, func(s *api.Service) { s.Update.MaxParallel = 0 }),
		svc("policy", 2, tmpl, func(s *api.Service) { s.Update.AutoRevert = true }),
		svc("env", 2, newEnv, nil),
		svc("placed", 2, tmpl, func(s *api.Service) { s.Constraints = []string{"zone==a"} }),
		{Task: &api.TaskEvent{State: api.Running, Task: api.Task{Name: "job", Image: "cube-echo:1"}}},
		{Task: &api.TaskEvent{ID: knownID, State: api.Running, Task: api.Task{Name: "old", Image: "cube-echo:1"}}},
		{Task: &api.TaskEvent{ID: newID, State: api.Running, Task: api.Task{Image: "cube-echo:1"}}},
	}
	steps := computePlan(current, map[string]api.State{knownID.String(): api.Completed}, items)
	var lines []string
	for _, s := range steps {
		lines = append(lines, s.String())
	}
	want := []string{
		"+ create service new (3 × cube-echo:1)",
		"  unchanged service same",
		"~ update service scaled: Count 2 → 4 (scaled at once, no new version)",
		"~ update service image: Image cube-echo:1 → cube-echo:2, Memory 64.0MiB → 128.0MiB, Count 2 → 4, Update.MaxParallel 2 → 0 (rolling, 1 at a time)",
		"~ update service policy: Update.AutoRevert false → true (no new version)",
		"~ update service env: Env changed (values not shown) (rolling, 2 at a time)",
		`~ update service placed: Constraints none → ["zone==a"] (rolling, 2 at a time)`,
		"+ submit task job (cube-echo:1)",
		"  task old is known to the cluster (Completed): nothing new runs; give it another ID to run it again",
		"+ submit task " + newID.String() + " (cube-echo:1)",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range lines {
		if strings.Contains(l, "secret") || strings.Contains(l, "K=other") {
			t.Errorf("the plan shows an Env value: %s", l)
		}
	}
	if got, want := planSummary(steps), "Plan: 1 service(s) to create, 5 to update, 1 unchanged, 2 task(s) to submit, 1 known task(s)."; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if !planChanges(steps) {
		t.Error("planChanges: false")
	}
	if planChanges(computePlan(current, nil, []manifestItem{svc("same", 2, tmpl, nil)})) {
		t.Error("a file equal to the cluster's services changes something")
	}
}

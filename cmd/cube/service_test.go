package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// serviceFake is a manager that holds services in memory, behind the real
// HTTP routes (api.NewManagerHandler) and so the real api.Client: versions
// and rollouts as the cluster makes them (fsm.ServiceTemplate and
// SameTemplate decide), tasks submitted kept as they are. The methods it
// does not implement are those of the nil api.ManagerService it embeds; a
// command calling one fails the test with a panic.
type serviceFake struct {
	api.ManagerService
	mu       sync.Mutex
	services map[string]api.Service
	tasks    map[uuid.UUID]api.Task
	writes   []string
}

func newServiceFake(t *testing.T) (*serviceFake, string) {
	f := &serviceFake{services: map[string]api.Service{}, tasks: map[uuid.UUID]api.Task{}}
	srv := httptest.NewServer(api.NewManagerHandler(f, api.ManagerHandlerOptions{}))
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

func (f *serviceFake) takeWrites() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = nil
	return w
}

func (f *serviceFake) Leader() (string, bool) { return "", true }

func (f *serviceFake) status(s api.Service) api.ServiceStatus {
	st := api.ServiceStatus{Service: s, Running: s.Count, Healthy: s.Count}
	if s.Count > 0 {
		st.ByVersion = map[uint64]int{s.Version: s.Count}
	}
	return st
}

func (f *serviceFake) CreateService(ctx context.Context, s api.Service) (api.ServiceStatus, error) {
	f.mu.Lock()
	_, ok := f.services[s.Name]
	f.mu.Unlock()
	if ok {
		return api.ServiceStatus{}, fmt.Errorf("service %q already exists: %w", s.Name, api.ErrConflict)
	}
	st, _, err := f.PutService(ctx, s)
	return st, err
}

func (f *serviceFake) PutService(_ context.Context, in api.Service) (api.ServiceStatus, bool, error) {
	if err := api.ValidateService(in); err != nil {
		return api.ServiceStatus{}, false, &api.ValidationError{Msg: err.Error()}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, "put "+in.Name)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tmpl := fsm.ServiceTemplate(in)
	cur, ok := f.services[in.Name]
	if !ok {
		s := api.Service{Name: in.Name, Count: in.Count, Task: tmpl, Update: in.Update, Constraints: tmpl.Constraints,
			Prefer: tmpl.Prefer, Version: 1, CreateTime: now, UpdateTime: now,
			History: []api.ServiceVersion{{Version: 1, Task: tmpl, Time: now, By: "ci", Healthy: true}}}
		f.services[s.Name] = s
		return f.status(s), true, nil
	}
	next := cur
	next.Count, next.Update = in.Count, in.Update
	if !fsm.SameTemplate(cur.Task, tmpl) {
		next.Version++
		next.Task, next.Constraints, next.Prefer = tmpl, tmpl.Constraints, tmpl.Prefer
		next.History = append(slices.Clone(cur.History), api.ServiceVersion{Version: next.Version, Task: tmpl, Time: now})
		next.Rollout = &api.Rollout{From: cur.Version, To: next.Version, State: api.RolloutRunning, Replaced: 1, StartTime: now, UpdateTime: now}
	}
	f.services[in.Name] = next
	return f.status(next), false, nil
}

func (f *serviceFake) Services(context.Context, bool) ([]api.ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.ServiceStatus
	for _, s := range f.services {
		out = append(out, f.status(s))
	}
	slices.SortFunc(out, func(a, b api.ServiceStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (f *serviceFake) Service(_ context.Context, name string, _ bool) (api.ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[name]
	if !ok {
		return api.ServiceStatus{}, fmt.Errorf("service %q: %w", name, api.ErrNotFound)
	}
	return f.status(s), nil
}

func (f *serviceFake) ScaleService(_ context.Context, name string, n int) (api.ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[name]
	if !ok {
		return api.ServiceStatus{}, fmt.Errorf("service %q: %w", name, api.ErrNotFound)
	}
	f.writes = append(f.writes, fmt.Sprintf("scale %s %d", name, n))
	s.Count = n
	f.services[name] = s
	st := f.status(s)
	st.Running = 1 // the leader has not started them yet
	return st, nil
}

func (f *serviceFake) RollbackService(_ context.Context, name string, from uint64) (api.ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[name]
	if !ok {
		return api.ServiceStatus{}, fmt.Errorf("service %q: %w", name, api.ErrNotFound)
	}
	for i := len(s.History) - 1; i >= 0; i-- {
		if h := s.History[i]; h.Healthy && h.Version != s.Version {
			f.writes = append(f.writes, "rollback "+name)
			s.Rollout = &api.Rollout{From: s.Version, To: h.Version, State: api.RolloutRunning, Reason: "rollback on request"}
			s.Version, s.Task = h.Version, h.Task
			f.services[name] = s
			return f.status(s), nil
		}
	}
	return api.ServiceStatus{}, fmt.Errorf("service %s has no healthy version before %d to go back to: %w", name, s.Version, api.ErrConflict)
}

func (f *serviceFake) DeleteService(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.services[name]; !ok {
		return fmt.Errorf("service %q: %w", name, api.ErrNotFound)
	}
	f.writes = append(f.writes, "delete "+name)
	delete(f.services, name)
	return nil
}

func (f *serviceFake) SubmitTask(_ context.Context, ev api.TaskEvent) (api.Task, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.tasks[ev.ID]; ok {
		return t, false, nil
	}
	t := ev.Task
	t.ID = cmpUUID(ev.ID)
	f.tasks[t.ID] = t
	f.writes = append(f.writes, "submit "+t.Name)
	return t, true, nil
}

func cmpUUID(id uuid.UUID) uuid.UUID {
	if id == uuid.Nil {
		return uuid.New()
	}
	return id
}

func (f *serviceFake) Task(_ context.Context, id uuid.UUID, _ bool) (api.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return api.Task{}, api.ErrNotFound
	}
	return t, nil
}

func (f *serviceFake) Tasks(context.Context, bool) ([]api.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Task
	for _, t := range f.tasks {
		out = append(out, t)
	}
	return out, nil
}

func svcFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s printed\n%s\nwithout %q", what, out, w)
		}
	}
}

func TestServiceCommands(t *testing.T) {
	f, addr := newServiceFake(t)
	web := svcFile(t, "web.yaml", "name: web\ncount: 3\ntask:\n  image: cube-echo:1\n  healthCheck: /health\nupdate: {maxParallel: 2}\n")

	out, err := cube(t, addr, "service", "ls", "-o", "json")
	if err != nil || out != "[]\n" {
		t.Fatalf("service ls -o json with no service: %q %v", out, err)
	}
	out, err = cube(t, addr, "service", "create", "-f", web)
	if err != nil || out != "service web created: version 1, 3 × cube-echo:1 (cube service inspect web follows it)\n" {
		t.Fatalf("service create: %v\n%s", err, out)
	}
	// Again: a retry whose first answer was lost finds what it made.
	if out, err := cube(t, addr, "service", "create", "-f", web); err != nil || !strings.Contains(out, "service web created: version 1") {
		t.Errorf("create again of the same service: %v\n%s", err, out)
	}
	other := svcFile(t, "web4.yaml", "name: web\ncount: 4\ntask: {image: cube-echo:1}\n")
	if _, err := cube(t, addr, "service", "create", "-f", other); err == nil || !strings.Contains(err.Error(), "already exists") ||
		!strings.Contains(err.Error(), "cube service update -f "+other) {
		t.Errorf("create of an existing service: %v", err)
	}
	out, err = cube(t, addr, "service", "ls")
	mustContain(t, "service ls", out, "NAME  VERSION  IMAGE        COUNT  RUNNING  HEALTHY  ROLLOUT  UPDATED\n", "web   1        cube-echo:1  3      3        3        -        ")
	if err != nil {
		t.Error(err)
	}
	var list []api.ServiceStatus
	out, err = cube(t, addr, "service", "ls", "-o", "json")
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Name != "web" || list[0].Count != 3 {
		t.Errorf("service ls -o json: %v\n%s", err, out)
	}

	out, err = cube(t, addr, "service", "scale", "web", "5")
	if err != nil || out != "service web scaled to 5 (running now: 1; cube service ls follows it)\n" {
		t.Errorf("service scale: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"service", "scale", "web", "many"}, {"service", "scale", "web", "1001"}} {
		if _, err := cube(t, addr, args...); err == nil || !strings.Contains(err.Error(), "must be a whole number from 0 to 1000") {
			t.Errorf("%v: %v", args, err)
		}
	}
	if _, err := cube(t, addr, "service", "scale", "nope", "2"); err == nil || !strings.Contains(err.Error(), "no service is named nope (cube service ls lists them") {
		t.Errorf("scale of an unknown service: %v", err)
	}

	// update: the plan line, then what the cluster made of it.
	web2 := svcFile(t, "web2.yaml", "name: web\ncount: 5\ntask:\n  image: cube-echo:2\n  healthCheck: /health\nupdate: {maxParallel: 2}\n")
	f.takeWrites()
	out, err = cube(t, addr, "service", "update", "-f", web2)
	if err != nil || out != "~ update service web: Image cube-echo:1 → cube-echo:2 (rolling, 2 at a time)\n"+
		"  service web is at version 2: rolling out, 2 at a time (cube service inspect web follows it)\n" {
		t.Errorf("service update: %v\n%s", err, out)
	}
	out, err = cube(t, addr, "service", "update", "-f", web2)
	if err != nil || out != "  unchanged service web\n" {
		t.Errorf("service update, unchanged: %v\n%s", err, out)
	}
	if w := f.takeWrites(); !slices.Equal(w, []string{"put web"}) {
		t.Errorf("update wrote %q, want one put (nothing for the unchanged one)", w)
	}
	// A file naming a service the cluster does not have changes none.
	if _, err := cube(t, addr, "service", "update", "-f", svcFile(t, "x.yaml", "- {name: web, count: 9, task: {image: x}}\n- {name: nope, count: 1, task: {image: x}}\n")); err == nil ||
		!strings.Contains(err.Error(), "no service is named nope") {
		t.Errorf("update of an unknown service: %v", err)
	}
	if w := f.takeWrites(); len(w) != 0 {
		t.Errorf("an update naming an unknown service wrote %q", w)
	}
	if _, err := cube(t, addr, "service", "create", "-f", svcFile(t, "t.yaml", "name: job\nimage: x\n")); err == nil ||
		!strings.Contains(err.Error(), "t.yaml:1: task job is a task, not a service: submit it with cube run -f, or give the whole file to cube apply -f") {
		t.Errorf("create of a task file: %v", err)
	}

	// inspect: the template, the rollout, the versions with what changed.
	f.mu.Lock()
	id := uuid.MustParse("bb1d59ef-9fc1-4e4b-a44d-db571eeed203")
	f.tasks[id] = api.Task{ID: id, Name: "web-1", Image: "cube-echo:2", State: api.Running, DesiredState: api.Running, Worker: "w2", Service: "web", ServiceVersion: 2}
	f.tasks[uuid.New()] = api.Task{Name: "other", State: api.Running, DesiredState: api.Running}
	f.mu.Unlock()
	out, err = cube(t, addr, "service", "inspect", "web")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "service inspect", out,
		"Name:          web\n", "Version:       2\n", "Count:         5 desired, 5 running, 5 healthy\n", "Image:         cube-echo:2\n",
		"Health check:  /health\n", "Update:        2 at a time, each healthy for 5s, within 5m0s; auto-revert off\n",
		"Rollout:   version 1 → 2, running\n", "Progress:  1 task(s) of version 1 replaced; 5 of 5 running version 2\n",
		"VERSION      CREATED", "1            ", "  ci  yes      cube-echo:1  -\n", "2 (current)  ", "Image cube-echo:1 → cube-echo:2\n",
		"ID                                    VERSION  STATE    WORKER", id.String()+"  2        Running  w2")
	if strings.Contains(out, "other") {
		t.Errorf("inspect shows another service's task:\n%s", out)
	}
	var st api.ServiceStatus
	out, err = cube(t, addr, "service", "inspect", "web", "-o", "json")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Version != 2 || len(st.History) != 2 || st.Rollout == nil {
		t.Errorf("inspect -o json: %v\n%s", err, out)
	}
	if _, err := cube(t, addr, "service", "inspect", "nope"); err == nil || !strings.Contains(err.Error(), "no service is named nope") {
		t.Errorf("inspect of an unknown service: %v", err)
	}

	out, err = cube(t, addr, "service", "rollback", "web")
	if err != nil || out != "service web rolling back from version 2 to version 1 (cube-echo:1); cube service inspect web follows it\n" {
		t.Errorf("rollback: %v\n%s", err, out)
	}
	if _, err := cube(t, addr, "service", "rollback", "web"); err == nil || !strings.Contains(err.Error(), "no healthy version before 1") ||
		!strings.Contains(err.Error(), "cube service inspect web shows which versions were healthy") {
		t.Errorf("rollback with nothing to go back to: %v", err)
	}

	out, err = cube(t, addr, "service", "rm", "web")
	if err != nil || out != "service web deleted; its tasks are being stopped\n" {
		t.Errorf("rm: %v\n%s", err, out)
	}
	if _, err := cube(t, addr, "service", "rm", "web"); err == nil || !strings.Contains(err.Error(), "no service is named web") {
		t.Errorf("rm of a deleted service: %v", err)
	}
}

func TestApply(t *testing.T) {
	f, addr := newServiceFake(t)
	known := uuid.MustParse("266592cd-960d-4091-981c-8c25c44b1018")
	f.tasks[known] = api.Task{ID: known, Name: "old", State: api.Completed}
	stack := `name: web
count: 3
task: {image: cube-echo:1}
---
name: api
count: 2
task: {image: cube-echo:1}
---
kind: task
name: migrate
image: cube-echo:1
---
id: 266592cd-960d-4091-981c-8c25c44b1018
task: {name: old, image: cube-echo:1}
`
	file := svcFile(t, "stack.yaml", stack)
	out, err := cube(t, addr, "apply", "-f", file, "--dry-run")
	want := "+ create service web (3 × cube-echo:1)\n+ create service api (2 × cube-echo:1)\n+ submit task migrate (cube-echo:1)\n" +
		"  task old is known to the cluster (Completed): nothing new runs; give it another ID to run it again\n" +
		"Plan: 2 service(s) to create, 1 task(s) to submit, 1 known task(s).\nDry run: nothing was changed.\n"
	if err != nil || out != want {
		t.Errorf("apply --dry-run: %v\n%s\nwant\n%s", err, out, want)
	}
	if w := f.takeWrites(); len(w) != 0 {
		t.Errorf("--dry-run wrote %q", w)
	}

	out, err = cube(t, addr, "apply", "-f", file)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	mustContain(t, "apply", out, "Plan: 2 service(s) to create", "\nservice web created: version 1, 3 × cube-echo:1\n",
		"service api created: version 1, 2 × cube-echo:1\n", "task migrate submitted: ")
	if w := f.takeWrites(); !slices.Equal(w, []string{"put web", "put api", "submit migrate"}) {
		t.Errorf("apply wrote %q", w)
	}

	// Again: nothing changes but the task without an ID.
	out, err = cube(t, addr, "apply", "-f", file, "--dry-run")
	mustContain(t, "apply again --dry-run", out, "  unchanged service web\n", "  unchanged service api\n", "+ submit task migrate")
	if err != nil {
		t.Error(err)
	}

	// A change through stdin (-f -): image and count of api, count of web.
	changed := strings.Replace(strings.Replace(stack, "count: 2\ntask: {image: cube-echo:1}", "count: 4\ntask: {image: cube-echo:2}\nupdate: {maxParallel: 2}", 1), "count: 3", "count: 1", 1)
	changed = changed[:strings.Index(changed, "---\nkind: task")]
	root := newRootCmd()
	var buf strings.Builder
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetIn(strings.NewReader(changed))
	root.SetArgs([]string{"apply", "-f", "-", "-m", addr})
	if err := root.Execute(); err != nil {
		t.Fatalf("apply -f -: %v\n%s", err, buf.String())
	}
	mustContain(t, "apply -f -", buf.String(),
		"~ update service web: Count 3 → 1 (scaled at once, no new version)\n",
		"~ update service api: Image cube-echo:1 → cube-echo:2, Count 2 → 4, Update.MaxParallel 0 → 2 (rolling, 2 at a time)\n",
		"Plan: 2 to update.\n",
		"service web updated (version 1, count 1)\n",
		"service api is at version 2: rolling out, 2 at a time (cube service inspect api follows it)\n")

	// Nothing to change.
	out, err = cube(t, addr, "apply", "-f", svcFile(t, "web.yaml", "name: web\ncount: 1\ntask: {image: cube-echo:1}\n"))
	if err != nil || out != "  unchanged service web\nPlan: 1 unchanged.\nNothing to change.\n" {
		t.Errorf("apply of what is there: %v\n%s", err, out)
	}
	// A bad file: nothing asked, the place said.
	f.takeWrites()
	if _, err := cube(t, addr, "apply", "-f", svcFile(t, "bad.yaml", "name: web\ncount: 1\ntask: {image: cube-echo:1, memory: lots}\n")); err == nil ||
		!strings.Contains(err.Error(), `bad.yaml:3: service web: field Task.Memory: "lots" is not a size`) {
		t.Errorf("apply of a bad file: %v", err)
	}
	if w := f.takeWrites(); len(w) != 0 {
		t.Errorf("a bad file wrote %q", w)
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// refFake is a manager holding three tasks: two named web whose IDs share
// the prefix aaaa, and db.
type refFake struct {
	*httptest.Server
	tasks []api.Task
	mu    sync.Mutex
	calls []string
}

func newRefFake(t *testing.T) *refFake {
	now := time.Now().UTC()
	f := &refFake{tasks: []api.Task{
		{ID: uuid.MustParse("aaaa1111-0000-4000-8000-000000000001"), Name: "web", State: api.Completed, DesiredState: api.Completed, SubmitTime: now.Add(-2 * time.Hour)},
		{ID: uuid.MustParse("aaaa2222-0000-4000-8000-000000000002"), Name: "web", State: api.Running, DesiredState: api.Running, SubmitTime: now.Add(-time.Minute)},
		{ID: uuid.MustParse("bbbb3333-0000-4000-8000-000000000003"), Name: "db", State: api.Running, DesiredState: api.Running,
			Image: "postgres:16", Worker: "w2", LastWorker: "w1", Generation: 4, RestartCount: 2, RestartPolicy: "always",
			Reason: "exited with code 1", Memory: 64 << 20, Disk: 1 << 30, Cpu: 0.5,
			HostPorts:   api.PortMap{"5432/tcp": {{HostIp: "0.0.0.0", HostPort: "49160"}}},
			HealthCheck: "/health", HealthCheckPort: "5432", HealthCheckInterval: "2s",
			SubmitTime: now.Add(-3 * time.Hour), StartTime: now.Add(-time.Hour)},
	}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if r.Method == http.MethodGet && r.URL.Path == "/tasks" {
			_ = json.NewEncoder(w).Encode(f.tasks)
			return
		}
		for _, tk := range f.tasks {
			if r.URL.Path == "/tasks/"+tk.ID.String() && (r.Method == http.MethodGet || r.Method == http.MethodDelete) {
				_ = json.NewEncoder(w).Encode(tk)
				return
			}
		}
		http.Error(w, `{"Message":"not found"}`, http.StatusNotFound)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *refFake) takeCalls() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := strings.Join(f.calls, ", ")
	f.calls = nil
	return s
}

func TestStatusAndStop_ByIDPrefixOrName(t *testing.T) {
	f := newRefFake(t)
	addr := strings.TrimPrefix(f.URL, "http://")
	db := f.tasks[2]
	dbID := db.ID.String()
	detail := []string{"ID:", dbID, "Name:", "db", "State:", "Running", "Reason:", "exited with code 1",
		"Worker:", "w2 (before: w1)", "Generation:", "4", "Restarts:", "2 (policy always)", "Ports:", "49160->5432/tcp",
		"memory 64.0MiB, disk 1.0GiB", "Health check:", "GET /health on port 5432 (every 2s)",
		"Submitted:", "(3 hours ago)", "(about an hour ago)", "Started:", "Finished:"}
	for _, c := range []struct {
		ref, calls string
	}{
		{dbID, "GET /tasks/" + dbID},
		{"bbbb", "GET /tasks"},
		{"BBBB3333-0000", "GET /tasks"},
		{"db", "GET /tasks"},
	} {
		out, err := cube(t, addr, "status", c.ref)
		if err != nil {
			t.Fatalf("cube status %s: %v", c.ref, err)
		}
		mustContain(t, "cube status "+c.ref, out, detail...)
		if got := f.takeCalls(); got != c.calls {
			t.Errorf("cube status %s called %q, want %q", c.ref, got, c.calls)
		}
	}
	// -o json: the task object.
	out, err := cube(t, addr, "status", "db", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got api.Task
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.ID != db.ID || got.HostPorts["5432/tcp"][0].HostPort != "49160" {
		t.Errorf("cube status db -o json: %v\n%s", err, out)
	}
	// A unique prefix of a name-sharing task; ambiguous prefixes and names list the candidates.
	if out, err := cube(t, addr, "status", "aaaa2"); err != nil || !strings.Contains(out, "aaaa2222-0000-4000-8000-000000000002") {
		t.Errorf("cube status aaaa2: %v\n%s", err, out)
	}
	for _, ref := range []string{"aaaa", "web"} {
		for _, verb := range []string{"status", "stop"} {
			f.takeCalls()
			_, err := cube(t, addr, verb, ref)
			if err == nil {
				t.Fatalf("cube %s %s: no error for an ambiguous reference", verb, ref)
			}
			mustContain(t, "cube "+verb+" "+ref, err.Error(), `"`+ref+`" names 2 tasks`, f.tasks[0].ID.String(), f.tasks[1].ID.String(), "Completed", "Running")
			if calls := f.takeCalls(); calls != "GET /tasks" {
				t.Errorf("cube %s %s called %q; want the list only", verb, ref, calls)
			}
		}
	}
	if _, err := cube(t, addr, "status", "zz"); err == nil || !strings.Contains(err.Error(), `no task has the ID, ID prefix or name "zz"`) {
		t.Errorf("cube status zz: %v", err)
	}
	// cube stop takes the same forms.
	f.takeCalls()
	for _, ref := range []string{"db", "bbbb", dbID} {
		out, err := cube(t, addr, "stop", ref)
		if err != nil || !strings.Contains(out, "stop of task "+dbID+" committed") {
			t.Errorf("cube stop %s: %v\n%s", ref, err, out)
		}
	}
	if got, want := f.takeCalls(), "GET /tasks, DELETE /tasks/"+dbID+", GET /tasks, DELETE /tasks/"+dbID+", DELETE /tasks/"+dbID; got != want {
		t.Errorf("cube stop called %q, want %q", got, want)
	}
}

// Resubmitting a known task ID (200 with the stored task): a running task
// is reported as before; an ended one fails, saying why and how to run it
// again.
func TestRun_ResubmitOfAnEndedTask(t *testing.T) {
	id := uuid.MustParse("cccc4444-0000-4000-8000-000000000004")
	var stored api.Task
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/tasks" {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(stored) // 200: known already
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	file := svcFile(t, "task1.json", `{"ID":"`+id.String()+`","Name":"t1","Image":"cube-echo:latest"}`)

	stored = api.Task{ID: id, Name: "t1", State: api.Running, DesiredState: api.Running}
	if out, err := cube(t, addr, "run", "-f", file); err != nil || out != "task already known, nothing new created: "+id.String()+" (Running)\n" {
		t.Errorf("resubmit of a running task: %v\n%s", err, out)
	}
	stored = api.Task{ID: id, Name: "t1", State: api.Completed, DesiredState: api.Completed, Reason: "stopped on request"}
	_, err := cube(t, addr, "run", "-f", file)
	if err == nil {
		t.Fatal("resubmit of a stopped task: no error")
	}
	mustContain(t, "resubmit of a stopped task", err.Error(), "task "+id.String()+" already exists and is Completed (stopped on request)",
		"Submit it under a new ID to run it again, e.g. remove its ID from the file")
	stored = api.Task{ID: id, Name: "t1", State: api.Failed, DesiredState: api.Failed, RestartPolicy: "on-failure", Reason: "gave up after 3 restarts"}
	if _, err := cube(t, addr, "run", "-f", file); err == nil || !strings.Contains(err.Error(), "already exists and is Failed (gave up after 3 restarts)") {
		t.Errorf("resubmit of a task given up on: %v", err)
	}
}

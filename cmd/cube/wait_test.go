package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// scriptedManager answers as handle says, for the tests of the commands
// that follow the cluster over time (waits, follows, watches).
func scriptedManager(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(handle))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func writeJSONAnswer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// taskFile writes a task file for cube run and returns its path.
func taskFile(t *testing.T, task string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "task.json")
	if err := os.WriteFile(path, []byte(task), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// lifeOf returns a task after each of the steps, its History grown by one
// entry each: what a cluster would answer GET /tasks/ID with, read after
// read.
func lifeOf(id uuid.UUID, healthCheck string, steps ...api.TaskTransition) []api.Task {
	var out []api.Task
	var hist []api.TaskTransition
	at := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	for i, e := range steps {
		e.Time = at.Add(time.Duration(i) * time.Second)
		if e.DesiredState == 0 {
			e.DesiredState = api.Running
		}
		hist = append(hist, e)
		task := api.Task{ID: id, Image: "cube-echo:latest", HealthCheck: healthCheck, State: e.State, DesiredState: e.DesiredState,
			Worker: e.Worker, Generation: e.Generation, RestartCount: e.RestartCount, Healthy: e.Healthy, ExitCode: e.ExitCode,
			Reason: e.Reason, History: append([]api.TaskTransition(nil), hist...)}
		if e.State == api.Running {
			task.Reason = ""
		}
		out = append(out, task)
	}
	return out
}

// taskCluster is a scripted manager that takes one submission and then
// answers GET /tasks/ID?consistent=1 with the next task of life on each
// read (the last one for ever after).
func taskCluster(t *testing.T, life []api.Task) string {
	var mu sync.Mutex
	reads := 0
	id := life[0].ID
	return scriptedManager(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			writeJSONAnswer(w, http.StatusCreated, life[0])
		case r.Method == http.MethodGet && r.URL.Path == "/tasks/"+id.String() && r.URL.Query().Has("consistent"):
			writeJSONAnswer(w, http.StatusOK, life[min(reads, len(life)-1)])
			reads++
		default:
			http.Error(w, "unexpected "+r.Method+" "+r.URL.String(), http.StatusNotFound)
		}
	})
}

// cube run --wait prints each change of the task as the cluster commits it
// and ends by what became of it, with the exit status that says so.
func TestRunWait(t *testing.T) {
	id := uuid.New()
	file := taskFile(t, `{"ID":"`+id.String()+`","Image":"cube-echo:latest","HealthCheck":"/health"}`)
	submitted := api.TaskTransition{State: api.Pending, Reason: "submitted"}
	scheduled := api.TaskTransition{State: api.Scheduled, Worker: "w1", Generation: 1}
	running := api.TaskTransition{State: api.Running, Worker: "w1", Generation: 1}
	healthy := api.TaskTransition{State: api.Running, Worker: "w1", Generation: 1, Healthy: true, Reason: "passed its health check"}
	failed := api.TaskTransition{State: api.Failed, Worker: "w1", Generation: 1, ExitCode: 1, Reason: "exited with code 1"}
	gaveUp := api.TaskTransition{State: api.Failed, DesiredState: api.Failed, Worker: "w1", Generation: 1, ExitCode: 1, Reason: "exited with code 1; restart policy is \"no\""}
	for _, tc := range []struct {
		name   string
		check  string
		life   []api.TaskTransition
		args   []string
		code   int
		lines  []string // in the output, in this order
		errHas string
	}{
		{name: "running and healthy", check: "/health", life: []api.TaskTransition{submitted, scheduled, running, healthy}, code: 0,
			lines: []string{"task submitted " + id.String() + " (Pending)", "Pending: submitted", "Scheduled on w1", "Running on w1",
				"Running, healthy on w1: passed its health check", "task " + id.String() + " is running on w1 and passed its health check"}},
		{name: "running, no health check", life: []api.TaskTransition{submitted, scheduled, running}, code: 0,
			lines: []string{"Running on w1", "task " + id.String() + " is running on w1\n"}},
		{name: "running but never healthy", check: "/health", life: []api.TaskTransition{submitted, scheduled, running}, args: []string{"--timeout", "1s"},
			code: exitTimedOut, lines: []string{"Running on w1"}, errHas: "is not running healthy after 1s: Running on w1, starting (health check GET /health)"},
		{name: "failed and given up on", check: "/health", life: []api.TaskTransition{submitted, scheduled, running, failed, gaveUp}, code: exitEnded,
			lines: []string{"Running on w1", "Failed on w1: exited with code 1"}, errHas: "ended before it ran: Failed (exited with code 1; restart policy is \"no\")"},
		{name: "exits at start-up, no health check", life: []api.TaskTransition{submitted, scheduled, running, failed, gaveUp}, code: exitEnded,
			lines: []string{"Running on w1", "Failed on w1: exited with code 1"}, errHas: "ended before it ran: Failed"},
		{name: "pending for good", life: []api.TaskTransition{submitted, {State: api.Pending, Reason: "no worker meets zone==c"}}, args: []string{"--timeout", "1s"},
			code: exitTimedOut, lines: []string{"Pending: no worker meets zone==c"}, errHas: "is not running after 1s: Pending: no worker meets zone==c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			life := lifeOf(id, tc.check, tc.life...)
			addr := taskCluster(t, life)
			out, err := cube(t, addr, append([]string{"run", "-f", file, "--wait"}, tc.args...)...)
			if code := exitCode(err); (err == nil) != (tc.code == 0) || (err != nil && code != tc.code) {
				t.Fatalf("cube run --wait: exit status %d (%v), want %d\n%s", code, err, tc.code, out)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("cube run --wait: %v\nwant it to say %q", err, tc.errHas)
			}
			rest := out
			for _, l := range tc.lines {
				i := strings.Index(rest, l)
				if i < 0 {
					t.Fatalf("cube run --wait printed\n%s\nwithout %q (after the lines before it)", out, l)
				}
				rest = rest[i+len(l):]
			}
			if n := strings.Count(out, "Scheduled on w1"); n > 1 {
				t.Fatalf("an entry printed %d times:\n%s", n, out)
			}
		})
	}

	// -q: the ID alone, for id=$(cube run -f t.json --wait -q).
	out, err := cube(t, taskCluster(t, lifeOf(id, "/health", submitted, scheduled, running, healthy)), "run", "-f", file, "--wait", "-q")
	if err != nil || out != id.String()+"\n" {
		t.Fatalf("cube run --wait -q: %v, printed %q; want the ID alone", err, out)
	}

	// Refused by the cluster (400) or by cube itself: exit status 2.
	refuse := scriptedManager(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, http.StatusBadRequest, api.ErrResponse{HTTPStatusCode: 400, Message: "Constraints[0]: constraint \"zone=b\" must be key==value or key!=value"})
	})
	if _, err := cube(t, refuse, "run", "-f", file, "--wait"); exitCode(err) != exitRefused || !strings.Contains(err.Error(), "must be key==value") {
		t.Fatalf("a task the cluster refuses: exit status %d (%v), want %d", exitCode(err), err, exitRefused)
	}
	bad := taskFile(t, `{"Image":"cube-echo:latest","Cpu":-1}`)
	if _, err := cube(t, refuse, "run", "-f", bad, "--wait"); exitCode(err) != exitRefused || !strings.Contains(err.Error(), "Cpu must be") {
		t.Fatalf("an invalid task file: exit status %d (%v), want %d", exitCode(err), err, exitRefused)
	}
	if _, err := cube(t, refuse, "run", "-f", filepath.Join(t.TempDir(), "none.json")); exitCode(err) != exitFailure {
		t.Fatalf("a task file that does not exist: exit status %d (%v), want 1", exitCode(err), err)
	}
	// An ended task's ID again: refused, 2.
	ended := lifeOf(id, "", submitted, gaveUp)[1]
	again := scriptedManager(t, func(w http.ResponseWriter, r *http.Request) { writeJSONAnswer(w, http.StatusOK, ended) })
	if _, err := cube(t, again, "run", "-f", file, "--wait"); exitCode(err) != exitRefused || !strings.Contains(err.Error(), "already exists and is Failed") {
		t.Fatalf("an ended task's ID: exit status %d (%v), want %d", exitCode(err), err, exitRefused)
	}
}

// The progress printer prints each entry once, again when only its reason
// changed (a Pending task's note), and everything when the one it printed
// last dropped off the front of a full History.
func TestHistoryPrinter(t *testing.T) {
	var b strings.Builder
	p := &historyPrinter{w: &b}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e1 := api.TaskTransition{Time: at, State: api.Pending, DesiredState: api.Running, Reason: "submitted"}
	e1b := e1
	e1b.Reason = "no worker meets zone==c"
	e2 := api.TaskTransition{Time: at.Add(time.Second), State: api.Scheduled, DesiredState: api.Running, Worker: "w1", Generation: 1}
	p.print([]api.TaskTransition{e1})
	p.print([]api.TaskTransition{e1})
	p.print([]api.TaskTransition{e1b})
	p.print([]api.TaskTransition{e1b, e2})
	p.print([]api.TaskTransition{e2})
	e3 := api.TaskTransition{Time: at.Add(2 * time.Second), State: api.Running, DesiredState: api.Running, Worker: "w1", Generation: 1}
	p.print([]api.TaskTransition{e3}) // e2 dropped off: e3 is new
	hm := func(d int) string { return at.Add(time.Duration(d) * time.Second).Local().Format("15:04:05") }
	want := hm(0) + "  Pending: submitted\n" + hm(0) + "  Pending: no worker meets zone==c\n" + hm(1) + "  Scheduled on w1\n" + hm(2) + "  Running on w1\n"
	if b.String() != want {
		t.Fatalf("printed\n%s\nwant\n%s", b.String(), want)
	}
}

// cube node drain --wait follows the worker's task count down to 0, a line
// each time it changes; tasks that stay past --timeout end it with exit
// status 4 and are listed.
func TestDrainWait(t *testing.T) {
	stuck := api.Task{ID: uuid.New(), Name: "big", State: api.Running, DesiredState: api.Running, Worker: "w1"}
	for _, tc := range []struct {
		name   string
		counts []int
		args   []string
		code   int
		want   []string
	}{
		{"drained", []int{2, 2, 1, 0}, nil, 0, []string{"worker w1: 2 task(s) placed on it\n", "worker w1: 1 task(s) placed on it\n", "worker w1: 0 task(s) placed on it\n", "worker w1 is drained: no task is placed on it\n"}},
		{"stuck", []int{1}, []string{"--timeout", "1s"}, exitTimedOut, []string{"worker w1: 1 task(s) placed on it\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			reads := 0
			addr := scriptedManager(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				n := api.Node{Name: "w1", State: api.NodeAlive, Drain: true, TaskCount: tc.counts[min(reads, len(tc.counts)-1)]}
				switch r.Method + " " + r.URL.Path {
				case "POST /nodes/w1/drain":
					writeJSONAnswer(w, http.StatusOK, n)
				case "GET /nodes":
					if !r.URL.Query().Has("consistent") {
						http.Error(w, "want a consistent read", http.StatusBadRequest)
						return
					}
					writeJSONAnswer(w, http.StatusOK, []api.Node{{Name: "w2", State: api.NodeAlive}, n})
					reads++
				case "GET /tasks":
					writeJSONAnswer(w, http.StatusOK, []api.Task{stuck})
				default:
					http.Error(w, "unexpected", http.StatusNotFound)
				}
			})
			out, err := cube(t, addr, append([]string{"node", "drain", "w1", "--wait"}, tc.args...)...)
			if code := exitCode(err); (err == nil) != (tc.code == 0) || (err != nil && code != tc.code) {
				t.Fatalf("exit status %d (%v), want %d\n%s", code, err, tc.code, out)
			}
			for _, w := range tc.want {
				if strings.Count(out, w) != 1 {
					t.Errorf("printed\n%s\nwant %q once", out, w)
				}
			}
			if tc.code == exitTimedOut && !strings.Contains(err.Error(), stuck.ID.String()+"  big  Running") {
				t.Errorf("timed out without listing the task left: %v", err)
			}
		})
	}
}

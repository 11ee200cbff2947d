package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// These tests drive the worker through its HTTP API against the real Docker
// engine and the cube-echo:latest image that `make images` builds.

// harness is one worker with its HTTP API on a test server.
type harness struct {
	t      *testing.T
	name   string
	dir    string
	mutate func(*Config)
	rt     *Docker
	log    hclog.Logger // made before the cleanups, so h.stop's lines still show
	w      *Worker
	srv    *httptest.Server
	client *http.Client
}

func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	requireImage(t)
	rt, err := NewDocker(DefaultDockerConfig())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	h := &harness{
		t:      t,
		name:   "test-" + uuid.NewString()[:8],
		dir:    t.TempDir(),
		mutate: mutate,
		rt:     rt,
		log:    testkit.LoggerAt(t, "", hclog.Debug),
		client: &http.Client{Timeout: 30 * time.Second},
	}
	t.Cleanup(func() {
		h.stop()
		removeLabelled(t, rt, map[string]string{LabelWorker: h.name})
		_ = rt.Close()
	})
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	cfg := DefaultConfig()
	cfg.Name = h.name
	cfg.DataDir = h.dir
	cfg.StopGrace = 2 * time.Second
	cfg.Logger = h.log
	if h.mutate != nil {
		h.mutate(&cfg)
	}
	w, err := New(cfg, h.rt)
	if err != nil {
		h.t.Fatalf("new worker: %v", err)
	}
	w.Start()
	h.w = w
	h.srv = httptest.NewServer(api.NewWorkerHandler(w))
}

// stop shuts the worker down, leaving its containers running.
func (h *harness) stop() {
	if h.w == nil {
		return
	}
	h.srv.Close()
	if err := h.w.Shutdown(); err != nil {
		h.t.Errorf("shutdown: %v", err)
	}
	h.w = nil
}

func (h *harness) do(method, path string, body []byte) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatalf("request: %v", err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, data
}

// submit posts the task and expects the given status.
func (h *harness) submit(task api.Task, want int) api.Task {
	h.t.Helper()
	body, _ := json.Marshal(api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now(), Task: task})
	status, data := h.do(http.MethodPost, "/tasks", body)
	if status != want {
		h.t.Fatalf("POST /tasks: status %d, want %d: %s", status, want, data)
	}
	var out api.Task
	if status < 300 {
		if err := json.Unmarshal(data, &out); err != nil {
			h.t.Fatalf("decode %s: %v", data, err)
		}
	}
	return out
}

func (h *harness) task(id uuid.UUID) api.Task {
	h.t.Helper()
	status, data := h.do(http.MethodGet, "/tasks/"+id.String(), nil)
	if status != http.StatusOK {
		h.t.Fatalf("GET /tasks/%s: %d %s", id, status, data)
	}
	var out api.Task
	if err := json.Unmarshal(data, &out); err != nil {
		h.t.Fatalf("decode %s: %v", data, err)
	}
	return out
}

// waitState polls the worker API until the task reaches state or the deadline.
func (h *harness) waitState(id uuid.UUID, state api.State, within time.Duration) api.Task {
	h.t.Helper()
	var got api.Task
	testkit.Eventually(h.t, within, func() error {
		if got = h.task(id); got.State != state {
			return fmt.Errorf("task %s: state %s (reason %q), want %s", id, got.State, got.Reason, state)
		}
		return nil
	})
	return got
}

func echoTask(gen uint64, env ...string) api.Task {
	return api.Task{
		ID:           uuid.New(),
		Name:         "echo",
		Image:        echoImage,
		ExposedPorts: api.PortSet{"7777/tcp": {}},
		HealthCheck:  "/health",
		Env:          env,
		Generation:   gen,
	}
}

// hostURL returns http://127.0.0.1:<host port of 7777/tcp>.
func hostURL(t *testing.T, task api.Task) string {
	t.Helper()
	for _, b := range task.HostPorts["7777/tcp"] {
		if b.HostPort != "" && !strings.Contains(b.HostIp, ":") {
			return "http://127.0.0.1:" + b.HostPort
		}
	}
	t.Fatalf("task %s has no IPv4 host port for 7777/tcp: %+v", task.ID, task.HostPorts)
	return ""
}

// waitHTTP retries GET url until it answers (a fresh container may not listen yet).
func waitHTTP(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	var status int
	var data []byte
	testkit.Eventually(t, 10*time.Second, func() error {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, url, err)
		}
		data, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		return nil
	})
	return status, string(data)
}

func (h *harness) containers(labels map[string]string) []ContainerStatus {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := map[string]string{LabelWorker: h.name}
	for k, v := range labels {
		all[k] = v
	}
	cs, err := h.rt.List(ctx, all)
	if err != nil {
		h.t.Fatalf("list containers: %v", err)
	}
	return cs
}

func TestWorker_RunEchoThenStop(t *testing.T) {
	h := newHarness(t, nil)
	sub := h.submit(echoTask(1), http.StatusCreated)
	if sub.State != api.Scheduled || sub.Worker != h.name {
		t.Fatalf("accepted record: state %s worker %q, want Scheduled on %q", sub.State, sub.Worker, h.name)
	}
	task := h.waitState(sub.ID, api.Running, 30*time.Second)
	base := hostURL(t, task)

	if code, body := waitHTTP(t, http.MethodPost, base+"/", `{"Msg":"hello cube"}`); code != 200 || strings.TrimSpace(body) != `{"Msg":"hello cube"}` {
		t.Fatalf("POST /: %d %q", code, body)
	}
	if code, body := waitHTTP(t, http.MethodGet, base+"/health", ""); code != 200 || body != "OK" {
		t.Fatalf("GET /health: %d %q", code, body)
	}
	if code, _ := waitHTTP(t, http.MethodGet, base+"/healthfail", ""); code != 500 {
		t.Fatalf("GET /healthfail: %d, want 500", code)
	}

	// Unknown ID: 404 and nothing changes.
	before := h.w.Tasks()
	if status, body := h.do(http.MethodDelete, "/tasks/"+uuid.NewString(), nil); status != http.StatusNotFound || !strings.Contains(string(body), "not found") {
		t.Fatalf("DELETE unknown: %d %s", status, body)
	}
	if after := h.w.Tasks(); !reflect.DeepEqual(before, after) {
		t.Fatalf("records changed by a failed DELETE:\nbefore %+v\nafter  %+v", before, after)
	}

	if status, body := h.do(http.MethodDelete, "/tasks/"+task.ID.String(), nil); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	got := h.task(task.ID)
	if got.State != api.Completed || got.Reason != "stopped on request" {
		t.Fatalf("after stop: state %s reason %q", got.State, got.Reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.rt.Inspect(ctx, task.ContainerID); !errors.Is(err, ErrContainerNotFound) {
		t.Fatalf("container %s after stop: err %v, want it removed", task.ContainerID, err)
	}
	// Stopping again is harmless.
	if status, body := h.do(http.MethodDelete, "/tasks/"+task.ID.String(), nil); status != http.StatusNoContent {
		t.Fatalf("second DELETE: %d %s", status, body)
	}
}

func TestWorker_CrashRecordedThroughEvents(t *testing.T) {
	// Polling is pushed out of the way: only the event stream can notice.
	// The start-up window is shortened and waited out, so the crash counts
	// as a crash of a running service, not a start-up failure.
	const window = 300 * time.Millisecond
	h := newHarness(t, func(c *Config) { c.PollInterval = time.Hour; c.StartupWindow = window })
	task := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)
	base := hostURL(t, task)
	waitHTTP(t, http.MethodGet, base+"/health", "")
	time.Sleep(time.Until(task.StartTime.Add(window)))

	crashed := time.Now()
	waitHTTP(t, http.MethodPost, base+"/crash", "")
	// Polling runs once an hour here, so a generous deadline still proves
	// the event stream did it (the latency is logged; the bench measures it).
	got := h.waitState(task.ID, api.Failed, 30*time.Second)
	t.Logf("crash recorded as Failed %s after POST /crash returned", time.Since(crashed).Round(time.Millisecond))
	if got.ExitCode != 1 || !strings.Contains(got.Reason, "exited with code 1") || got.FinishTime.IsZero() {
		t.Fatalf("after crash: exit code %d reason %q finish %v", got.ExitCode, got.Reason, got.FinishTime)
	}
	if strings.Contains(got.Reason, "start-up") {
		t.Fatalf("a crash after running is not a start-up failure: %q", got.Reason)
	}
}

func TestWorker_ExitAtStartup(t *testing.T) {
	h := newHarness(t, nil)
	sub := h.submit(echoTask(1, "ECHO_EXIT_AT_START=3"), http.StatusCreated)
	got := h.waitState(sub.ID, api.Failed, 30*time.Second)
	if got.ExitCode != 3 || !strings.Contains(got.Reason, "failed at start-up: exited with code 3") {
		t.Fatalf("exit code %d reason %q, want a start-up failure with code 3", got.ExitCode, got.Reason)
	}
}

func TestWorker_MissingImageFailsAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	task := echoTask(1)
	task.Image = "cube-no-such-image:v0"
	sub := h.submit(task, http.StatusCreated)
	got := h.waitState(sub.ID, api.Failed, 30*time.Second)
	if !strings.Contains(got.Reason, "cube-no-such-image:v0") {
		t.Fatalf("reason %q does not name the image", got.Reason)
	}
	if cs := h.containers(nil); len(cs) != 0 {
		t.Fatalf("%d containers created for a missing image", len(cs))
	}
}

func TestWorker_RestartReadoptsContainers(t *testing.T) {
	h := newHarness(t, nil)
	keep := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)
	lose := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)
	killed := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)

	h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.rt.Remove(ctx, lose.ContainerID); err != nil {
		t.Fatalf("remove container behind the worker's back: %v", err)
	}
	// As in a machine crash and reboot: the container died with the
	// machine and the engine keeps it as exited.
	if err := h.rt.cli.ContainerKill(ctx, killed.ContainerID, "KILL"); err != nil {
		t.Fatalf("kill container behind the worker's back: %v", err)
	}
	h.start()

	got := h.task(keep.ID)
	if got.State != api.Running || got.ContainerID != keep.ContainerID {
		t.Fatalf("kept task after restart: state %s container %s, want Running in %s", got.State, short(got.ContainerID), short(keep.ContainerID))
	}
	st, err := h.rt.Inspect(ctx, keep.ContainerID)
	if err != nil || !st.StartedAt.Equal(keep.StartTime) {
		t.Fatalf("container was restarted: started %v, before %v (err %v)", st.StartedAt, keep.StartTime, err)
	}
	if code, _ := waitHTTP(t, http.MethodGet, hostURL(t, got)+"/health", ""); code != 200 {
		t.Fatalf("re-adopted task does not answer: %d", code)
	}
	lost := h.task(lose.ID)
	if lost.State != api.Failed || !strings.Contains(lost.Reason, "vanished") {
		t.Fatalf("task whose container was removed: state %s reason %q, want Failed/vanished", lost.State, lost.Reason)
	}
	dead := h.task(killed.ID)
	if dead.State != api.Failed || dead.ExitCode != 137 || !strings.Contains(dead.Reason, "exited with code 137") {
		t.Fatalf("task whose container was killed: state %s exit %d reason %q, want Failed, 137", dead.State, dead.ExitCode, dead.Reason)
	}
}

func TestWorker_GenerationsAreIdempotentAndFenced(t *testing.T) {
	h := newHarness(t, nil)
	task := echoTask(1)
	h.submit(task, http.StatusCreated)
	h.submit(task, http.StatusOK) // duplicate send: nothing new
	first := h.waitState(task.ID, api.Running, 30*time.Second)
	h.submit(task, http.StatusOK)
	if cs := h.containers(map[string]string{LabelTask: task.ID.String()}); len(cs) != 1 {
		t.Fatalf("%d containers after sending the same generation three times, want 1", len(cs))
	}

	task.Generation = 2
	h.submit(task, http.StatusCreated)
	second := h.waitState(task.ID, api.Running, 30*time.Second)
	if second.ContainerID == first.ContainerID || second.Generation != 2 {
		t.Fatalf("generation 2 kept container %s (gen %d)", short(second.ContainerID), second.Generation)
	}
	cs := h.containers(map[string]string{LabelTask: task.ID.String()})
	if len(cs) != 1 || cs[0].ID != second.ContainerID || cs[0].Labels[LabelGeneration] != "2" {
		t.Fatalf("containers after replacement: %+v, want only %s", cs, short(second.ContainerID))
	}

	// A stop fenced at generation 1 cannot stop generation 2.
	if status, data := h.do(http.MethodDelete, "/tasks/"+task.ID.String()+"?generation=1", nil); status != http.StatusConflict {
		t.Fatalf("fenced stop of a newer generation: %d %s, want 409", status, data)
	}
	if got := h.task(task.ID); got.State != api.Running || got.ContainerID != second.ContainerID {
		t.Fatalf("fenced stop changed the task: %+v", got)
	}

	task.Generation = 1
	body, _ := json.Marshal(api.TaskEvent{State: api.Running, Task: task})
	status, data := h.do(http.MethodPost, "/tasks", body)
	var er api.ErrResponse
	if status != http.StatusConflict || json.Unmarshal(data, &er) != nil || !strings.Contains(er.Message, "older than generation 2") {
		t.Fatalf("stale generation: %d %s, want 409 naming the newer generation", status, data)
	}
	if got := h.task(task.ID); got.Generation != 2 || got.ContainerID != second.ContainerID || got.State != api.Running {
		t.Fatalf("stale send changed the record: %+v", got)
	}
}

func TestWorker_BadInputChangesNothing(t *testing.T) {
	h := newHarness(t, nil)
	h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)
	before := h.w.Tasks()
	containersBefore := len(h.containers(nil))

	valid := `{"State":2,"Task":{"ID":"bb1d59ef-9fc1-4e4b-a44d-db571eeed203","Image":"cube-echo:latest"`
	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"malformed JSON", "POST", "/tasks", `{"Task":{`, 400, "JSON"},
		{"not JSON", "POST", "/tasks", `hello`, 400, "malformed JSON"},
		{"unknown field", "POST", "/tasks", valid + `,"Colour":"red"}}`, 400, `unknown field "Colour"`},
		{"bad body UUID", "POST", "/tasks", `{"Task":{"ID":"1234","Image":"x"}}`, 400, "invalid ID"},
		{"bad path UUID", "GET", "/tasks/1234", ``, 400, `task ID "1234" is not a UUID`},
		{"bad path UUID on delete", "DELETE", "/tasks/nope", ``, 400, "not a UUID"},
		{"wrong type", "POST", "/tasks", valid + `,"Memory":"lots"}}`, 400, "Task.Memory"},
		{"negative memory", "POST", "/tasks", valid + `,"Memory":-1}}`, 400, "Memory must be ≥ 0"},
		{"negative cpu", "POST", "/tasks", valid + `,"Cpu":-0.5}}`, 400, "Cpu must be"},
		{"missing image", "POST", "/tasks", `{"Task":{}}`, 400, "Image is required"},
		{"bad port", "POST", "/tasks", valid + `,"ExposedPorts":{"80/xyz":{}}}}`, 400, `"80/xyz" is not port/proto`},
		{"stop via POST", "POST", "/tasks", `{"State":3,"Task":{"Image":"x"}}`, 400, "use DELETE"},
		{"10 MiB body", "POST", "/tasks", valid + `,"Name":"` + strings.Repeat("x", 10<<20) + `"}}`, 413, "larger than the limit"},
		{"bad tail", "GET", "/tasks/" + before[0].ID.String() + "/logs?tail=-1", ``, 400, "tail"},
		{"unknown route", "GET", "/nope", ``, 404, "no route"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, data := h.do(tc.method, tc.path, []byte(tc.body))
			var er api.ErrResponse
			if err := json.Unmarshal(data, &er); err != nil {
				t.Fatalf("body %.200q is not an ErrResponse: %v", data, err)
			}
			if status != tc.status || er.HTTPStatusCode != tc.status || !strings.Contains(er.Message, tc.want) {
				t.Fatalf("%s %s: status %d message %q, want %d containing %q", tc.method, tc.path, status, er.Message, tc.status, tc.want)
			}
		})
	}
	if after := h.w.Tasks(); !reflect.DeepEqual(before, after) {
		t.Fatalf("bad input changed the records:\nbefore %+v\nafter  %+v", before, after)
	}
	if n := len(h.containers(nil)); n != containersBefore {
		t.Fatalf("bad input changed the containers: %d before, %d after", containersBefore, n)
	}
	var list []api.Task
	_, data := h.do(http.MethodGet, "/tasks", nil)
	if err := json.Unmarshal(data, &list); err != nil || len(list) != 1 {
		t.Fatalf("GET /tasks: %s", data)
	}
}

func TestWorker_EmptyListIsNotNull(t *testing.T) {
	h := newHarness(t, nil)
	if status, data := h.do(http.MethodGet, "/tasks", nil); status != 200 || strings.TrimSpace(string(data)) != "[]" {
		t.Fatalf("GET /tasks on an empty worker: %d %q, want 200 []", status, data)
	}
}

func TestWorker_StatsAndLogs(t *testing.T) {
	h := newHarness(t, nil)
	task := echoTask(1)
	task.Memory = 64 << 20
	task.Cpu = 0.25
	task.Disk = 1 << 20
	running := h.waitState(h.submit(task, http.StatusCreated).ID, api.Running, 30*time.Second)

	status, data := h.do(http.MethodGet, "/stats", nil)
	var s api.Stats
	if status != 200 || json.Unmarshal(data, &s) != nil {
		t.Fatalf("GET /stats: %d %s", status, data)
	}
	if s.Worker != h.name || s.MemTotal <= 0 || s.MemAvailable <= 0 || s.DiskTotal <= 0 || s.Cpus <= 0 || s.LoadAvg1 < 0 {
		t.Fatalf("implausible machine figures: %+v", s)
	}
	if s.TaskCount != 1 || s.AllocatedMemory != 64<<20 || s.AllocatedCpu != 0.25 || s.AllocatedDisk != 1<<20 || !s.RuntimeAvailable {
		t.Fatalf("allocation: %+v", s)
	}

	testkit.Eventually(t, 10*time.Second, func() error {
		status, data = h.do(http.MethodGet, "/tasks/"+running.ID.String()+"/logs", nil)
		if status != 200 || !strings.Contains(string(data), "7777") {
			return fmt.Errorf("logs: %d %q, want the echo service's start line", status, data)
		}
		return nil
	})
}

func TestWorker_DataDirBelongsToOneName(t *testing.T) {
	dir := t.TempDir()
	rt, err := NewDocker(DefaultDockerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.OpenTimeout = "alpha", dir, 200*time.Millisecond
	w, err := New(cfg, rt)
	if err != nil {
		t.Fatal(err)
	}
	// A second worker on the same data dir cannot take the lock.
	if _, err := New(cfg, rt); err == nil || !strings.Contains(err.Error(), "another worker") {
		t.Fatalf("second open: %v, want a lock error", err)
	}
	if err := w.Shutdown(); err != nil {
		t.Fatal(err)
	}
	cfg.Name = "beta"
	if _, err := New(cfg, rt); err == nil || !strings.Contains(err.Error(), `belongs to worker "alpha"`) {
		t.Fatalf("open with another name: %v", err)
	}
	cfg.Name = ""
	w, err = New(cfg, rt)
	if err != nil || w.Name() != "alpha" {
		t.Fatalf("open without a name: %v, name %q", err, w.Name())
	}
	_ = w.Shutdown()
}

func removeLabelled(t *testing.T, rt *Docker, labels map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := rt.List(ctx, labels)
	if err != nil {
		t.Errorf("cleanup list: %v", err)
		return
	}
	for _, c := range cs {
		if err := rt.Remove(ctx, c.ID); err != nil {
			t.Errorf("cleanup remove %s: %v", short(c.ID), err)
		}
	}
}

// TestWorker_ReplacesALeftoverOfTheSamePlacement: a container of this very
// placement (same worker, task and generation; created, never started —
// what a worker that died between create and record leaves) is found by
// create's name conflict and replaced by one the worker runs.
func TestWorker_ReplacesALeftoverOfTheSamePlacement(t *testing.T) {
	h := newHarness(t, nil)
	task := echoTask(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leftover, err := h.rt.Create(ctx, h.w.spec(task))
	if err != nil {
		t.Fatalf("create the leftover: %v", err)
	}
	if _, err := h.rt.Create(ctx, h.w.spec(task)); !errors.Is(err, ErrContainerExists) {
		t.Fatalf("second create of the same name: %v, want ErrContainerExists", err)
	}
	h.submit(task, http.StatusCreated)
	got := h.waitState(task.ID, api.Running, 30*time.Second)
	if got.ContainerID == leftover {
		t.Fatalf("the leftover %s was started instead of replaced", short(leftover))
	}
	cs := h.containers(map[string]string{LabelTask: task.ID.String()})
	if len(cs) != 1 || cs[0].ID != got.ContainerID {
		t.Fatalf("containers of the task: %+v, want only %s", cs, short(got.ContainerID))
	}
	if _, err := h.rt.Inspect(ctx, leftover); !errors.Is(err, ErrContainerNotFound) {
		t.Fatalf("leftover %s: %v, want it removed", short(leftover), err)
	}
}

func TestWorker_CleansUpEndedTasksAndKeepsTheFence(t *testing.T) {
	// Long enough that the failed task's container is still there when it
	// is checked below on a loaded engine (a start was seen to take 2.7 s
	// with other tests driving the same engine); the wait for the clean-up
	// allows 30 s.
	const keep = 6 * time.Second
	h := newHarness(t, func(c *Config) { c.KeepEnded = keep })
	live := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)
	failed := h.waitState(h.submit(echoTask(1, "ECHO_EXIT_AT_START=3"), http.StatusCreated).ID, api.Failed, 30*time.Second)
	if len(h.containers(map[string]string{LabelTask: failed.ID.String()})) != 1 {
		t.Fatalf("the failed task's exited container should be kept for its logs until cleaned up")
	}
	stopped := h.waitState(h.submit(echoTask(1), http.StatusCreated).ID, api.Running, 30*time.Second)
	if status, body := h.do(http.MethodDelete, "/tasks/"+stopped.ID.String(), nil); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", status, body)
	}

	// Both ended tasks go, records and containers; the live one stays.
	ended := []uuid.UUID{failed.ID, stopped.ID}
	testkit.Eventually(t, 30*time.Second, func() error {
		for _, id := range ended {
			if status, _ := h.do(http.MethodGet, "/tasks/"+id.String(), nil); status != http.StatusNotFound {
				return fmt.Errorf("ended task %s still on the worker (keep %s): %d", id, keep, status)
			}
		}
		return nil
	})
	for _, id := range ended {
		if cs := h.containers(map[string]string{LabelTask: id.String()}); len(cs) != 0 {
			t.Fatalf("ended task %s: %d containers left after its record was removed", id, len(cs))
		}
	}
	if got := h.task(live.ID); got.State != api.Running || got.ContainerID != live.ContainerID {
		t.Fatalf("live task touched by the clean-up: %s in %s, want Running in %s", got.State, short(got.ContainerID), short(live.ContainerID))
	}
	if status, body := h.do(http.MethodGet, "/tasks/"+stopped.ID.String()+"/logs", nil); status != http.StatusNotFound || !strings.Contains(string(body), "removed its container") {
		t.Fatalf("logs of a cleaned-up task: %d %s", status, body)
	}

	// The generation fence outlives the record, and a restart: an old
	// placement coming back is refused; a newer one runs.
	h.stop()
	h.start()
	again := failed
	again.HostPorts, again.ContainerID, again.State = nil, "", api.Pending
	if _, data := h.do(http.MethodPost, "/tasks", mustEvent(t, again)); !strings.Contains(string(data), "cleaned up") {
		t.Fatalf("resubmitted a cleaned-up generation: %s, want a refusal naming the clean-up", data)
	}
	h.submit(withGen(again, 1), http.StatusConflict)
	next := withGen(stopped, 2)
	next.HostPorts, next.ContainerID = nil, ""
	h.waitState(h.submit(next, http.StatusCreated).ID, api.Running, 30*time.Second)
	if cs := h.containers(map[string]string{LabelTask: failed.ID.String()}); len(cs) != 0 {
		t.Fatalf("a refused old generation created %d containers", len(cs))
	}
}

func withGen(t api.Task, gen uint64) api.Task {
	t.Generation = gen
	return t
}

func mustEvent(t *testing.T, task api.Task) []byte {
	t.Helper()
	body, err := json.Marshal(api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now(), Task: task})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestWorker_HostPortTakenIsMarked: a start that fails because the static
// host port is taken (here by a plain listener on the machine) is Failed with
// a Reason beginning with api.ReasonHostPortTaken, so the leader can place it
// elsewhere instead of counting a restart; its container is removed.
func TestWorker_HostPortTakenIsMarked(t *testing.T) {
	h := newHarness(t, nil)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	task := echoTask(1)
	task.PortBindings = map[string]string{"7777/tcp": port}
	sub := h.submit(task, http.StatusCreated)
	got := h.waitState(sub.ID, api.Failed, 30*time.Second)
	if !got.HostPortTaken() || !strings.Contains(got.Reason, port) {
		t.Fatalf("reason %q: want it to begin with %q and name port %s", got.Reason, api.ReasonHostPortTaken, port)
	}
	if cs := h.containers(nil); len(cs) != 0 {
		t.Fatalf("%d containers left after the failed start", len(cs))
	}
	// An app failing at start-up is not marked.
	other := h.waitState(h.submit(echoTask(1, "ECHO_EXIT_AT_START=3"), http.StatusCreated).ID, api.Failed, 30*time.Second)
	if other.HostPortTaken() {
		t.Fatalf("an app's start-up failure marked as a taken port: %q", other.Reason)
	}
}

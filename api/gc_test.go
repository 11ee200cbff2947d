package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

var _ GarbageCollector = (*fakeManager)(nil)

// CollectGarbage of the fake: only the leader collects; it removes the
// tasks the fake holds that ended.
func (f *fakeManager) CollectGarbage(context.Context) (GCResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["CollectGarbage"]++
	if !f.self {
		return GCResult{}, ErrNotLeader
	}
	var res GCResult
	for id, t := range f.tasks {
		if t.State.Terminal() {
			delete(f.tasks, id)
			res.Tasks++
		}
	}
	return res, nil
}

// TestManagerHandler_SystemGC: POST /system/gc through a follower runs on
// the leader, and the client returns what it removed.
func TestManagerHandler_SystemGC(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	id := uuid.New()
	c.fakes[0].tasks[id] = Task{ID: id, Image: "x", State: Completed}
	cl := newTestClient(t, c.addrs[1:2], ClientOptions{})
	res, err := cl.CollectGarbage(testCtx(t))
	if err != nil || res != (GCResult{Tasks: 1}) {
		t.Fatalf("CollectGarbage = %+v, %v; want 1 task", res, err)
	}
	if c.fakes[0].count("CollectGarbage") != 1 || c.fakes[1].count("CollectGarbage") != 0 {
		t.Fatalf("calls: leader %d, follower %d; want the leader's only", c.fakes[0].count("CollectGarbage"), c.fakes[1].count("CollectGarbage"))
	}
	if r := doHTTP(t, http.MethodGet, c.url(0, GCPath), nil, nil); r.status != http.StatusNotFound || c.fakes[0].count("CollectGarbage") != 1 {
		t.Fatalf("GET %s: %d, want 404 and no collection", GCPath, r.status)
	}
}

// TestErrLimit_Is429: a limit reached is a 429 with the message, and the
// client maps it back to ErrLimit without retrying it.
func TestErrLimit_Is429(t *testing.T) {
	err := fmt.Errorf("%w: the cluster stores 10 tasks, its limit", ErrLimit)
	if s := StatusOf(err); s != http.StatusTooManyRequests {
		t.Fatalf("StatusOf = %d, want 429", s)
	}
	c := newTestCluster(t, 1, 0, ManagerHandlerOptions{})
	c.fakes[0].injectErr("SubmitTask", err, false)
	c.fakes[0].injectErr("SubmitTask", err, false)
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: 5 * time.Second})
	_, _, got := cl.SubmitTask(testCtx(t), echoEvent())
	if !errors.Is(got, ErrLimit) || !strings.Contains(got.Error(), "its limit") || !strings.Contains(got.Error(), "429") {
		t.Fatalf("SubmitTask over a limit: %v; want ErrLimit with the message and 429", got)
	}
	if n := c.fakes[0].count("SubmitTask"); n != 1 {
		t.Fatalf("SubmitTask called %d times; a 429 is not retried", n)
	}
}

// TestValidate_Bounds: every field a task or a report can carry into the
// replicated state is bounded; the message names the field.
func TestValidate_Bounds(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	ok := func() Task { return Task{ID: uuid.New(), Image: "cube-echo:latest"} }
	for _, tc := range []struct {
		name string
		mod  func(*Task)
		want string
	}{
		{"memory near 2^63", func(t *Task) { t.Memory = 1<<63 - 1 }, "Memory 9223372036854775807 is above the bound"},
		{"disk near 2^63", func(t *Task) { t.Disk = 1<<63 - 1 }, "Disk 9223372036854775807 is above the bound"},
		{"last worker of 1 MB", func(t *Task) { t.LastWorker = long(1 << 20) }, "LastWorker is longer"},
		{"worker", func(t *Task) { t.Worker = long(300) }, "Worker is longer"},
		{"container ID", func(t *Task) { t.ContainerID = long(200) }, "ContainerID is longer"},
		{"reason", func(t *Task) { t.Reason = long(5000) }, "Reason is longer"},
		{"health-check interval", func(t *Task) { t.HealthCheckInterval = long(300) }, "HealthCheckInterval"},
		{"max restarts", func(t *Task) { t.MaxRestarts = 1 << 40 }, "MaxRestarts 1099511627776 is above the bound"},
	} {
		task := ok()
		tc.mod(&task)
		err := task.ValidateSubmission()
		var verr *ValidationError
		if !errors.As(err, &verr) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v; want a ValidationError containing %q", tc.name, err, tc.want)
		}
	}
	// A task the leader dispatches carries the cluster's own Reason, which
	// may wrap a worker's (≤ 4 KiB) in a few words: the worker's check,
	// Validate, does not bound the cluster's fields.
	dispatched := ok()
	dispatched.Worker, dispatched.Reason = "w1", "restarted after: "+long(4096)
	if err := dispatched.Validate(); err != nil {
		t.Fatalf("a dispatched task with a long restart reason: %v", err)
	}
	at := ok()
	at.Memory, at.Disk = MaxResourceBytes, MaxResourceBytes
	if err := at.Validate(); err != nil {
		t.Fatalf("Memory and Disk at the bound: %v", err)
	}

	report := func() Task {
		return Task{ID: uuid.New(), Worker: "w1", Generation: 1, State: Running, ContainerID: long(64), HostPorts: PortMap{"7777/tcp": {{HostIp: "0.0.0.0", HostPort: "32768"}}}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Task)
		want string
	}{
		{"reason", func(t *Task) { t.Reason = long(5000) }, "report Reason is longer"},
		{"container ID", func(t *Task) { t.ContainerID = long(1 << 20) }, "report ContainerID is longer"},
		{"worker", func(t *Task) { t.Worker = long(300) }, "report Worker is longer"},
		{"host ports", func(t *Task) {
			t.HostPorts = PortMap{}
			for i := range 100 {
				t.HostPorts[fmt.Sprintf("%d/tcp", i+1)] = nil
			}
		}, "report HostPorts has 100 entries"},
		{"host port key", func(t *Task) { t.HostPorts = PortMap{"x": nil} }, "not port/proto"},
		{"bindings", func(t *Task) { t.HostPorts = PortMap{"7777/tcp": make([]PortBinding, 20)} }, "20 bindings"},
		{"host ip", func(t *Task) { t.HostPorts = PortMap{"7777/tcp": {{HostIp: long(100)}}} }, "HostIp or HostPort longer"},
		{"state", func(t *Task) { t.State = 9 }, "State 9"},
		{"generation", func(t *Task) { t.Generation = MaxGeneration + 1 }, "above the bound"},
	} {
		r := report()
		tc.mod(&r)
		err := r.ValidateReport()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ValidateReport = %v; want an error containing %q", tc.name, err, tc.want)
		}
		if _, err := decodeReport(EncodeJSON(r)); err == nil || StatusOf(err) != http.StatusBadRequest {
			t.Errorf("%s: POST /reports body accepted or not 400: %v", tc.name, err)
		}
	}
	if r := report(); r.ValidateReport() != nil {
		t.Fatalf("a normal report refused: %v", r.ValidateReport())
	}
}

// TestAddBytes saturates instead of wrapping.
func TestAddBytes(t *testing.T) {
	const maxInt64 = 1<<63 - 1
	for _, tc := range []struct{ a, b, want int64 }{
		{1, 2, 3},
		{maxInt64 - 1, 1, maxInt64},
		{maxInt64 - 1, 2, maxInt64},
		{maxInt64, maxInt64, maxInt64},
		{5, 0, 5},
	} {
		if got := AddBytes(tc.a, tc.b); got != tc.want {
			t.Errorf("AddBytes(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestTask_Finished names which tasks are finished for good.
func TestTask_Finished(t *testing.T) {
	for _, tc := range []struct {
		name string
		task Task
		want bool
	}{
		{"running", Task{State: Running, DesiredState: Running}, false},
		{"stop requested, not confirmed", Task{State: Running, DesiredState: Completed}, false},
		{"stopped", Task{State: Completed, DesiredState: Completed}, true},
		{"failed, to be restarted", Task{State: Failed, DesiredState: Running}, false},
		{"given up", Task{State: Failed, DesiredState: Failed}, true},
		{"completed, on-failure", Task{State: Completed, DesiredState: Running}, true},
		{"completed, no", Task{State: Completed, DesiredState: Running, RestartPolicy: "no"}, true},
		{"completed, always", Task{State: Completed, DesiredState: Running, RestartPolicy: "always"}, false},
		{"completed, unless-stopped", Task{State: Completed, DesiredState: Running, RestartPolicy: "unless-stopped"}, false},
		{"pending", Task{State: Pending, DesiredState: Running}, false},
		{"stopped on request, still to run (a stop nobody asked for)", Task{State: Completed, DesiredState: Running, Reason: ReasonStoppedOnRequest}, false},
		{"stopped on request, policy no, still to run", Task{State: Completed, DesiredState: Running, Reason: ReasonStoppedOnRequest, RestartPolicy: "no"}, false},
		{"stopped on request, stop asked", Task{State: Completed, DesiredState: Completed, Reason: ReasonStoppedOnRequest}, true},
	} {
		if got := tc.task.Finished(); got != tc.want {
			t.Errorf("%s: Finished = %v, want %v", tc.name, got, tc.want)
		}
	}
}

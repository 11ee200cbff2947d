// Package runtimetest holds the contract of worker.Runtime as tests that
// any implementation must pass: the Docker runtime against a real engine
// and the simulated one (worker/simrt) in memory run the same cases, so the
// simulation cannot drift from what the worker relies on.
package runtimetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/worker"
)

// Fixture is what the contract needs of one implementation.
type Fixture struct {
	// New returns the runtime under test (the same one or a new one per
	// call); the fixture closes it at the end of the test.
	New func(t *testing.T) worker.Runtime
	// Image is present on the engine; MissingImage is not and cannot be
	// pulled.
	Image, MissingImage string
	// Labels returns labels unique to the calling test; the fixture removes
	// every container carrying them when the test ends.
	Labels func(t *testing.T) map[string]string
	// Crash ends the running container's process from outside (docker
	// kill, or the simulation's Kill) and returns the exit code the
	// runtime must report.
	Crash func(t *testing.T, rt worker.Runtime, id string) int
	// Within bounds each wait for a state or an event: generous on a real
	// engine.
	Within time.Duration
}

// Run runs every case of the contract as a subtest.
func Run(t *testing.T, f Fixture) {
	if f.Within == 0 {
		f.Within = 30 * time.Second
	}
	cases := []struct {
		name string
		fn   func(*testing.T, Fixture)
	}{
		{"Ping", testPing},
		{"EnsureImage", testEnsureImage},
		{"CreateInspect", testCreateInspect},
		{"CreateNameTaken", testCreateNameTaken},
		{"StartStopRemove", testStartStopRemove},
		{"RefByName", testRefByName},
		{"MissingContainer", testMissing},
		{"ExitAtStart", testExitAtStart},
		{"CrashEvent", testCrashEvent},
		{"ListByLabels", testList},
		{"Logs", testLogs},
		{"WatchFiltersAndCloses", testWatchFilters},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, f) })
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var seq atomic.Int64

// spec returns a spec of the fixture's image with a name unique in the run.
func spec(t *testing.T, f Fixture, labels map[string]string) worker.Spec {
	name := fmt.Sprintf("cube-contract-%d-%d", time.Now().UnixNano()%1e9, seq.Add(1))
	return worker.Spec{Name: name, Image: f.Image, Labels: labels}
}

func createStart(t *testing.T, rt worker.Runtime, s worker.Spec) string {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	id, err := rt.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create(%s): %v", s.Name, err)
	}
	if err := rt.Start(ctx, id); err != nil {
		t.Fatalf("Start(%s): %v", s.Name, err)
	}
	return id
}

// waitStatus polls Inspect until cond holds.
func waitStatus(t *testing.T, f Fixture, rt worker.Runtime, id, what string, cond func(worker.ContainerStatus) bool) worker.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(f.Within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := rt.Inspect(ctx, id)
		cancel()
		if err != nil {
			t.Fatalf("Inspect(%s) while waiting for %s: %v", id, what, err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not %s within %s; last status %+v", id, what, f.Within, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextEvent waits for an event of container id with the given action.
func nextEvent(t *testing.T, f Fixture, ch <-chan worker.Event, id, action string) worker.Event {
	t.Helper()
	timer := time.NewTimer(f.Within)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("Watch channel closed while waiting for %q of %s", action, id)
			}
			if ev.ContainerID == id && ev.Action == action {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %q event of %s within %s", action, id, f.Within)
		}
	}
}

// watch subscribes to the labels until the test ends, and checks that the
// channel is closed once its context is.
func watch(t *testing.T, rt worker.Runtime, labels map[string]string) <-chan worker.Event {
	ctx, cancel := context.WithCancel(context.Background())
	ch := rt.Watch(ctx, labels)
	t.Cleanup(func() {
		cancel()
		drainClosed(t, ch)
	})
	return ch
}

func drainClosed(t *testing.T, ch <-chan worker.Event) {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Errorf("Watch channel not closed 10 s after its context ended")
			return
		}
	}
}

func testPing(t *testing.T, f Fixture) {
	if err := f.New(t).Ping(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatalf("Ping: %v; want nil", err)
	}
}

func testEnsureImage(t *testing.T, f Fixture) {
	rt := f.New(t)
	ctx := ctxFor(t, 2*time.Minute)
	if err := rt.EnsureImage(ctx, f.Image); err != nil {
		t.Errorf("EnsureImage(%s): %v; want nil", f.Image, err)
	}
	if err := rt.EnsureImage(ctx, f.MissingImage); !errors.Is(err, worker.ErrImageUnavailable) {
		t.Errorf("EnsureImage(%s): %v; want ErrImageUnavailable", f.MissingImage, err)
	}
	s := spec(t, f, f.Labels(t))
	s.Image = f.MissingImage
	if _, err := rt.Create(ctx, s); !errors.Is(err, worker.ErrImageUnavailable) {
		t.Errorf("Create with image %s: %v; want ErrImageUnavailable", f.MissingImage, err)
	}
}

func testCreateInspect(t *testing.T, f Fixture) {
	rt := f.New(t)
	labels := f.Labels(t)
	labels["cube.contract"] = "create"
	s := spec(t, f, labels)
	ctx := ctxFor(t, time.Minute)
	id, err := rt.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	st, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if st.ID != id || st.Name != s.Name || st.Image != s.Image || st.Status != worker.StatusCreated || st.Running {
		t.Errorf("Inspect after Create = %+v; want ID %s, name %s, image %s, created, not running", st, id, s.Name, s.Image)
	}
	for k, v := range labels {
		if st.Labels[k] != v {
			t.Errorf("label %s = %q; want %q (labels %v)", k, st.Labels[k], v, st.Labels)
		}
	}
	if !st.StartedAt.IsZero() {
		t.Errorf("StartedAt of a created container = %s; want zero", st.StartedAt)
	}
}

func testCreateNameTaken(t *testing.T, f Fixture) {
	rt := f.New(t)
	s := spec(t, f, f.Labels(t))
	ctx := ctxFor(t, time.Minute)
	if _, err := rt.Create(ctx, s); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := rt.Create(ctx, s); !errors.Is(err, worker.ErrContainerExists) {
		t.Errorf("second Create of name %s: %v; want ErrContainerExists", s.Name, err)
	}
}

func testStartStopRemove(t *testing.T, f Fixture) {
	rt := f.New(t)
	labels := f.Labels(t)
	events := watch(t, rt, labels)
	id := createStart(t, rt, spec(t, f, labels))
	ev := nextEvent(t, f, events, id, "start")
	for k, v := range labels {
		if ev.Labels[k] != v {
			t.Errorf("start event label %s = %q; want %q", k, ev.Labels[k], v)
		}
	}
	if ev.Time.IsZero() {
		t.Error("start event without a time")
	}
	st := waitStatus(t, f, rt, id, "running", func(s worker.ContainerStatus) bool { return s.Status == worker.StatusRunning })
	if !st.Running || st.StartedAt.IsZero() {
		t.Errorf("running container: %+v; want Running and StartedAt set", st)
	}
	ctx := ctxFor(t, 2*time.Minute)
	if err := rt.Start(ctx, id); err != nil {
		t.Errorf("Start of a running container: %v; want nil", err)
	}
	if err := rt.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	nextEvent(t, f, events, id, "die")
	st, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatalf("Inspect after Stop: %v", err)
	}
	if st.Status != worker.StatusExited || st.Running || st.FinishedAt.IsZero() {
		t.Errorf("after Stop: %+v; want exited, not running, FinishedAt set", st)
	}
	if err := rt.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("Stop of a stopped container: %v; want nil", err)
	}
	if err := rt.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	nextEvent(t, f, events, id, "destroy")
	if _, err := rt.Inspect(ctx, id); !errors.Is(err, worker.ErrContainerNotFound) {
		t.Errorf("Inspect after Remove: %v; want ErrContainerNotFound", err)
	}
	if err := rt.Remove(ctx, id); err != nil {
		t.Errorf("second Remove: %v; want nil", err)
	}
}

// testRefByName: the worker removes a leftover container by its name.
func testRefByName(t *testing.T, f Fixture) {
	rt := f.New(t)
	s := spec(t, f, f.Labels(t))
	id := createStart(t, rt, s)
	ctx := ctxFor(t, time.Minute)
	st, err := rt.Inspect(ctx, s.Name)
	if err != nil || st.ID != id {
		t.Fatalf("Inspect by name %s: %+v, %v; want ID %s", s.Name, st, err, id)
	}
	if err := rt.Remove(ctx, s.Name); err != nil {
		t.Fatalf("Remove of a running container by name: %v", err)
	}
	if _, err := rt.Inspect(ctx, id); !errors.Is(err, worker.ErrContainerNotFound) {
		t.Errorf("Inspect after Remove by name: %v; want ErrContainerNotFound", err)
	}
	if _, err := rt.Create(ctx, s); err != nil {
		t.Errorf("Create of the removed container's name again: %v; want nil", err)
	}
}

func testMissing(t *testing.T, f Fixture) {
	rt := f.New(t)
	ctx := ctxFor(t, time.Minute)
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := rt.Start(ctx, id); !errors.Is(err, worker.ErrContainerNotFound) {
		t.Errorf("Start of a missing container: %v; want ErrContainerNotFound", err)
	}
	if err := rt.Stop(ctx, id, time.Second); !errors.Is(err, worker.ErrContainerNotFound) {
		t.Errorf("Stop of a missing container: %v; want ErrContainerNotFound", err)
	}
	if _, err := rt.Inspect(ctx, id); !errors.Is(err, worker.ErrContainerNotFound) {
		t.Errorf("Inspect of a missing container: %v; want ErrContainerNotFound", err)
	}
	if _, err := rt.Logs(ctx, id, api.LogOptions{Tail: 10}); !errors.Is(err, worker.ErrContainerNotFound) {
		t.Errorf("Logs of a missing container: %v; want ErrContainerNotFound", err)
	}
	if err := rt.Remove(ctx, id); err != nil {
		t.Errorf("Remove of a missing container: %v; want nil", err)
	}
}

// testExitAtStart: a process that exits with code 1 right after it started
// (the echo service's ECHO_EXIT_AT_START=1).
func testExitAtStart(t *testing.T, f Fixture) {
	rt := f.New(t)
	labels := f.Labels(t)
	events := watch(t, rt, labels)
	s := spec(t, f, labels)
	s.Env = []string{"ECHO_EXIT_AT_START=1"}
	id := createStart(t, rt, s)
	ev := nextEvent(t, f, events, id, "die")
	if ev.ExitCode != 1 {
		t.Errorf("die event exit code = %d; want 1", ev.ExitCode)
	}
	st := waitStatus(t, f, rt, id, "exited", func(s worker.ContainerStatus) bool { return s.Status == worker.StatusExited })
	if st.Running || st.ExitCode != 1 || st.StartedAt.IsZero() || st.FinishedAt.IsZero() {
		t.Errorf("after exit at start: %+v; want not running, code 1, both times set", st)
	}
}

func testCrashEvent(t *testing.T, f Fixture) {
	rt := f.New(t)
	labels := f.Labels(t)
	events := watch(t, rt, labels)
	id := createStart(t, rt, spec(t, f, labels))
	waitStatus(t, f, rt, id, "running", func(s worker.ContainerStatus) bool { return s.Running })
	want := f.Crash(t, rt, id)
	ev := nextEvent(t, f, events, id, "die")
	if ev.ExitCode != want {
		t.Errorf("die event exit code = %d; want %d", ev.ExitCode, want)
	}
	st := waitStatus(t, f, rt, id, "exited", func(s worker.ContainerStatus) bool { return s.Status == worker.StatusExited })
	if st.ExitCode != want {
		t.Errorf("exit code after crash = %d; want %d", st.ExitCode, want)
	}
}

func testList(t *testing.T, f Fixture) {
	rt := f.New(t)
	labels := f.Labels(t)
	a := labels
	b := map[string]string{"cube.contract": "b"}
	for k, v := range labels {
		b[k] = v
	}
	ctx := ctxFor(t, time.Minute)
	idA := createStart(t, rt, spec(t, f, a))
	idB, err := rt.Create(ctx, spec(t, f, b)) // created, never started
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	other := f.Labels(t)
	createStart(t, rt, spec(t, f, other))

	all, err := rt.List(ctx, labels)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	got := map[string]bool{}
	for i, c := range all {
		got[c.ID] = true
		if i > 0 && all[i-1].Name > c.Name {
			t.Errorf("List not ordered by name: %s before %s", all[i-1].Name, c.Name)
		}
	}
	if len(all) != 2 || !got[idA] || !got[idB] {
		t.Errorf("List(%v) = %d containers %v; want exactly %s and %s (running or not)", labels, len(all), got, idA, idB)
	}
	only, err := rt.List(ctx, b)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(only) != 1 || only[0].ID != idB || only[0].Status != worker.StatusCreated {
		t.Errorf("List(%v) = %+v; want only %s, created", b, only, idB)
	}
}

func testLogs(t *testing.T, f Fixture) {
	rt := f.New(t)
	id := createStart(t, rt, spec(t, f, f.Labels(t)))
	waitStatus(t, f, rt, id, "running", func(s worker.ContainerStatus) bool { return s.Running })
	ctx := ctxFor(t, time.Minute)
	if err := rt.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	rc, err := rt.Logs(ctx, id, api.LogOptions{})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); cerr != nil {
		t.Errorf("Close of the log stream: %v", cerr)
	}
	if err != nil {
		t.Fatalf("read logs: %v", err)
	}
	rc, err = rt.Logs(ctx, id, api.LogOptions{Tail: 1})
	if err != nil {
		t.Fatalf("Logs tail 1: %v", err)
	}
	tail, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("read logs tail 1: %v", err)
	}
	if n := strings.Count(strings.TrimRight(string(tail), "\n"), "\n"); n > 0 {
		t.Errorf("Logs tail 1 gave %d lines: %q", n+1, tail)
	}
	if len(tail) > len(data) {
		t.Errorf("tail 1 (%d bytes) longer than all (%d bytes)", len(tail), len(data))
	}
	// Following a container that has ended sends what it wrote and ends.
	rc, err = rt.Logs(ctx, id, api.LogOptions{Follow: true})
	if err != nil {
		t.Fatalf("Logs follow of an ended container: %v", err)
	}
	followed, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("read followed logs of an ended container: %v", err)
	}
	if string(followed) != string(data) {
		t.Errorf("following an ended container gave %q; want what it wrote, %q", followed, data)
	}
}

// testWatchFilters: a Watch sees only the containers carrying its labels,
// and its channel closes when its context ends. The other container is
// started first, so an event of it that got through would arrive before
// the watched container's start.
func testWatchFilters(t *testing.T, f Fixture) {
	rt := f.New(t)
	labels := f.Labels(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := rt.Watch(ctx, labels)
	otherID := createStart(t, rt, spec(t, f, f.Labels(t)))
	id := createStart(t, rt, spec(t, f, labels))
	timer := time.NewTimer(f.Within)
	defer timer.Stop()
	for seen := false; !seen; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("Watch channel closed before the watched container's start")
			}
			if ev.ContainerID == otherID {
				t.Errorf("event of a container without the watched labels: %+v", ev)
			}
			seen = ev.ContainerID == id && ev.Action == "start"
		case <-timer.C:
			t.Fatalf("no start event of %s within %s", id, f.Within)
		}
	}
	cancel()
	drainClosed(t, events)
}

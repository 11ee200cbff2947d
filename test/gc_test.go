package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// On real binaries: `cube system gc` removes a stopped task from every
// manager's state, keeps a running one (and its container), and a second
// run removes nothing.
func TestE2E_SystemGC(t *testing.T) {
	c := NewProcCluster(t, 3, 1)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	done, keep := echoTask("gc-done"), echoTask("gc-keep")
	for _, task := range []api.Task{done, keep} {
		if _, _, err := cl.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: task}); err != nil {
			t.Fatal(err)
		}
	}
	waitRunning(t, c, []uuid.UUID{done.ID, keep.ID})
	if _, err := cl.StopTask(ctx, done.ID); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		task, err := cl.Task(ctx, done.ID, true)
		if err != nil {
			return err
		}
		if task.State != api.Completed {
			return fmt.Errorf("stopped task is %s", task.State)
		}
		return nil
	})

	out, err := c.Cube("system", "gc")
	if err != nil || !strings.Contains(out, "removed 1 finished task(s)") {
		t.Fatalf("cube system gc: %v\n%s", err, out)
	}
	// Gone from every manager's own state (a local read of each).
	for _, m := range c.Managers {
		mc := c.Client(m)
		testkit.Eventually(t, 30*time.Second, func() error {
			if _, err := mc.Task(ctx, done.ID, false); !errors.Is(err, api.ErrNotFound) {
				return fmt.Errorf("manager %s still holds the collected task: %v", m.Name, err)
			}
			return nil
		})
		if task, err := mc.Task(ctx, keep.ID, false); err != nil || task.State != api.Running {
			t.Fatalf("manager %s: the running task %v, %v", m.Name, task.State, err)
		}
	}
	if ctrs := c.Containers(); len(ctrs[keep.ID.String()]) != 1 || len(ctrs[done.ID.String()]) != 0 {
		t.Fatalf("containers after the collection: %v; want the running task's only", ctrs)
	}
	if out, err := c.Cube("system", "gc"); err != nil || !strings.Contains(out, "removed 0 finished task(s)") {
		t.Fatalf("second cube system gc: %v\n%s", err, out)
	}
}

// On real binaries: a manager serves at most max_event_streams (64) GET
// /events streams at once; one more is refused with 429 and a message,
// and a stream closed frees its place.
func TestE2E_EventStreamCap(t *testing.T) {
	c := NewProcCluster(t, 1, 0)
	m := c.Managers[0]
	hc := c.HTTPClient()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(m, "/events"), nil)
		if err != nil {
			return nil, err
		}
		return hc.Do(req)
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for i := range 64 {
		sctx, scancel := context.WithCancel(ctx)
		cancels = append(cancels, scancel)
		resp, err := open(sctx)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i+1, err, resp)
		}
		defer resp.Body.Close()
	}
	resp, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "max_event_streams") {
		t.Fatalf("stream 65: %d %s; want 429 naming max_event_streams", resp.StatusCode, body)
	}
	cancels[0]()
	testkit.Eventually(t, 30*time.Second, func() error {
		resp, err := open(ctx)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("after closing one: %s", resp.Status)
		}
		return nil
	})
}

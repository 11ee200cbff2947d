package test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// The workers of a ProcCluster share one Docker engine, as those of `make
// cluster` share one host: a static host port held by a container of one
// worker is taken for all of them, and a plain listener on the host takes it
// for every worker.

func portTask(name string, hostPort int) api.Task {
	t := echoTask(name)
	t.PortBindings = map[string]string{"7777/tcp": strconv.Itoa(hostPort)}
	return t
}

// freePort returns a TCP port free on the host right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// submitTaskID submits task through any manager and returns its ID.
func submitTaskID(t *testing.T, c *ProcCluster, task api.Task) uuid.UUID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, created, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: task})
	if err != nil || !created {
		t.Fatalf("submit %s: created %v, %v", task.Name, created, err)
	}
	return got.ID
}

// waitPendingFor waits until the task is Pending, never restarted, with a
// reason containing want.
func waitPendingFor(t *testing.T, c *ProcCluster, id uuid.UUID, want string) api.Task {
	t.Helper()
	var task api.Task
	testkit.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if task, err = c.Client().Task(ctx, id, true); err != nil {
			return err
		}
		if task.State == api.Failed && task.DesiredState != api.Running {
			t.Fatalf("task %s given up on: %s", task.Name, task.Reason)
		}
		if task.State != api.Pending || !strings.Contains(task.Reason, want) {
			return fmt.Errorf("task %s is %s on %q (restarts %d): %q; want Pending with %q", task.Name, task.State, task.Worker, task.RestartCount, task.Reason, want)
		}
		return nil
	})
	if task.RestartCount != 0 {
		t.Fatalf("task %s restarted %d times for a taken host port, want 0", task.Name, task.RestartCount)
	}
	return task
}

// TestHostPort_SecondCopyWaitsThenRunsWhenFree: two tasks asking one static
// host port on workers sharing a host: the first runs; the second, placed on
// the other worker, fails to start there, is requeued (not a restart) and
// waits Pending with the reason; once the first stops it runs. A port taken
// by a plain listener on the host keeps a task Pending the same way, and it
// runs once the listener is gone.
func TestHostPort_SecondCopyWaitsThenRunsWhenFree(t *testing.T) {
	c := NewProcCluster(t, 3, 2)
	port := freePort(t)
	key := strconv.Itoa(port) + "/tcp"

	first := submitTaskID(t, c, portTask("port-first", port))
	a := waitRunning(t, c, []uuid.UUID{first})[first]
	echo(t, a)

	second := submitTaskID(t, c, portTask("port-second", port))
	b := waitPendingFor(t, c, second, "host port "+key+" is taken on every live worker")
	t.Logf("second copy waits: %s", b.Reason)
	if !strings.Contains(b.Reason, a.Worker+": task "+first.String()) {
		t.Fatalf("reason %q does not name the holder %s on %s", b.Reason, first, a.Worker)
	}
	if n := len(c.Containers()[second.String()]); n != 0 {
		t.Fatalf("%d containers of the waiting task", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if _, err := c.Client().StopTask(ctx, first); err != nil {
		t.Fatalf("stop the first: %v", err)
	}
	cancel()
	b = waitRunning(t, c, []uuid.UUID{second})[second]
	echo(t, b)
	if b.RestartCount != 0 {
		t.Fatalf("second copy restarted %d times, want 0", b.RestartCount)
	}

	// A listener outside Cube takes another port on the host.
	other := freePort(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(other))
	if err != nil {
		t.Fatal(err)
	}
	third := submitTaskID(t, c, portTask("port-listener", other))
	w := waitPendingFor(t, c, third, "host port "+strconv.Itoa(other)+"/tcp is taken on every live worker")
	t.Logf("task behind a listener waits: %s", w.Reason)
	ln.Close()
	freed := time.Now()
	w = waitRunning(t, c, []uuid.UUID{third})[third]
	t.Logf("running %s after the listener closed (clash memory 5 s with --fast)", time.Since(freed).Round(time.Millisecond))
	echo(t, w)
	if w.RestartCount != 0 {
		t.Fatalf("task behind a listener restarted %d times, want 0", w.RestartCount)
	}
}

package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

func newTestClient(t *testing.T, managers []string, opts ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(managers, opts)
	if err != nil {
		t.Fatalf("NewClient(%q): %v", managers, err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func echoEvent() TaskEvent {
	return TaskEvent{State: Running, Task: Task{Name: "echo", Image: "cube-echo:latest"}}
}

func TestClient_FindsLeaderPastDownManager(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	// The first address is down, the leader comes last: the client must get
	// past the former and learn of the latter from X-Cube-Leader.
	cl := newTestClient(t, []string{testkit.FreeAddr(t), c.addrs[1], "http://" + c.addrs[2], c.addrs[0]}, ClientOptions{RetryFor: 5 * time.Second})
	ctx := testCtx(t)

	task, created, err := cl.SubmitTask(ctx, echoEvent())
	if err != nil || !created || task.ID == uuid.Nil {
		t.Fatalf("SubmitTask: task %+v, created %v, err %v; want a new task", task, created, err)
	}
	if got := cl.Leader(); got != c.addrs[0] {
		t.Fatalf("Leader() = %q, want %q", got, c.addrs[0])
	}
	// Only the leader's fake holds the task, so a local read that finds it
	// went to the leader directly.
	tasks, err := cl.Tasks(ctx, false)
	if err != nil || len(tasks) != 1 || tasks[0].ID != task.ID {
		t.Fatalf("Tasks: %+v, %v; want the one task, read from the leader", tasks, err)
	}
	got, err := cl.Task(ctx, task.ID, true)
	if err != nil || got.ID != task.ID {
		t.Fatalf("Task(consistent): %+v, %v", got, err)
	}
	if _, err := cl.Nodes(ctx, true); err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	if info, err := cl.Cluster(ctx); err != nil || info.Leader != c.addrs[0] {
		t.Fatalf("Cluster: %+v, %v", info, err)
	}
	if err := cl.ReportTask(ctx, Task{ID: task.ID, Worker: "w1", State: Running}); err != nil {
		t.Fatalf("ReportTask: %v", err)
	}
	stopped, err := cl.StopTask(ctx, task.ID)
	if err != nil || stopped.ID != task.ID || stopped.State != Completed {
		t.Fatalf("StopTask: %+v, %v; want the task Completed", stopped, err)
	}
}

func TestClient_FollowsLeaderChange(t *testing.T) {
	c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: 5 * time.Second})
	ctx := testCtx(t)
	if _, _, err := cl.SubmitTask(ctx, echoEvent()); err != nil {
		t.Fatal(err)
	}
	// The old leader dies and manager 2 takes over.
	c.srvs[0].CloseClientConnections()
	c.srvs[0].Close()
	c.setLeader(2)
	if _, _, err := cl.SubmitTask(ctx, echoEvent()); err != nil {
		t.Fatalf("SubmitTask after a failover: %v", err)
	}
	if got := cl.Leader(); got != c.addrs[2] {
		t.Fatalf("Leader() = %q, want the new leader %q", got, c.addrs[2])
	}
	if n := c.fakes[2].taskCount(); n != 1 {
		t.Fatalf("new leader holds %d tasks, want 1", n)
	}
}

func TestClient_SubmitRetriesAreIdempotent(t *testing.T) {
	cases := []struct {
		name        string
		err         error
		afterApply  bool
		givenID     bool
		wantCreated bool
	}{
		// The write committed but its answer was a 503: the retry finds the
		// task and creates nothing. The client chose the ID, which nobody
		// else knew, so the task is this call's: created.
		{"applied then unknown outcome", ErrUnknownOutcome, true, false, true},
		// The same with an ID the caller gave: the client cannot tell its
		// first attempt from someone else's submission of that ID.
		{"applied then unknown outcome, caller's ID", ErrUnknownOutcome, true, true, false},
		// Refused before anything happened: the retry creates it.
		{"not leader before apply", ErrNotLeader, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 3, 0, ManagerHandlerOptions{})
			c.fakes[0].injectErr("SubmitTask", tc.err, tc.afterApply)
			cl := newTestClient(t, []string{c.addrs[1], c.addrs[2], c.addrs[0]}, ClientOptions{RetryFor: 5 * time.Second})
			ev := echoEvent()
			if tc.givenID {
				ev.Task.ID = uuid.New()
			}
			task, created, err := cl.SubmitTask(testCtx(t), ev)
			if err != nil {
				t.Fatalf("SubmitTask: %v", err)
			}
			if task.ID == uuid.Nil {
				t.Fatal("no task ID was generated")
			}
			if created != tc.wantCreated {
				t.Fatalf("created = %v, want %v", created, tc.wantCreated)
			}
			if n := c.fakes[0].count("SubmitTask"); n != 2 {
				t.Fatalf("leader SubmitTask calls = %d, want 2 (one retry)", n)
			}
			if n := c.fakes[0].taskCount(); n != 1 {
				t.Fatalf("leader holds %d tasks, want 1", n)
			}
		})
	}
}

func TestClient_ErrorMapping(t *testing.T) {
	c := newTestCluster(t, 2, 0, ManagerHandlerOptions{})
	cl := newTestClient(t, []string{c.addrs[1]}, ClientOptions{RetryFor: 5 * time.Second})
	ctx := testCtx(t)
	task, _, err := cl.SubmitTask(ctx, echoEvent())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StopTask(ctx, task.ID); err != nil {
		t.Fatal(err)
	}

	wantStatus := func(t *testing.T, err error, status int, sentinel error, msg string) {
		t.Helper()
		var se *StatusError
		if !errors.As(err, &se) || se.StatusCode != status {
			t.Fatalf("error %v (%T), want a *StatusError with status %d", err, err, status)
		}
		if sentinel != nil && !errors.Is(err, sentinel) {
			t.Fatalf("error %v does not wrap %v", err, sentinel)
		}
		if !strings.Contains(se.Message, msg) {
			t.Fatalf("message %q, want it to contain %q", se.Message, msg)
		}
	}

	t.Run("404", func(t *testing.T) {
		_, err := cl.Task(ctx, uuid.New(), false)
		wantStatus(t, err, 404, ErrNotFound, "not found")
	})
	t.Run("409", func(t *testing.T) {
		_, err := cl.StopTask(ctx, task.ID)
		wantStatus(t, err, 409, ErrConflict, "already ended")
		if errors.Is(err, ErrStaleGeneration) {
			t.Fatalf("plain conflict %v matches ErrStaleGeneration", err)
		}
	})
	t.Run("409 stale generation", func(t *testing.T) {
		c.fakes[0].injectErr("ReportTask", fmt.Errorf("report of generation 1 < 2: %w", ErrStaleGeneration), false)
		err := cl.ReportTask(ctx, Task{ID: task.ID, Worker: "w1"})
		wantStatus(t, err, 409, ErrStaleGeneration, "stale generation")
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("stale generation %v does not match ErrConflict too", err)
		}
	})
	t.Run("400", func(t *testing.T) {
		_, _, err := cl.SubmitTask(ctx, TaskEvent{Task: Task{Image: "has space"}})
		wantStatus(t, err, 400, nil, "white space")
		var verr *ValidationError
		if !errors.As(err, &verr) || !strings.Contains(verr.Msg, "white space") {
			t.Fatalf("error %v: want a *ValidationError with the server's message", err)
		}
	})
	t.Run("413", func(t *testing.T) {
		ev := echoEvent()
		ev.Task.Env = []string{"X=" + strings.Repeat("x", MaxBodyBytes)}
		_, _, err := cl.SubmitTask(ctx, ev)
		wantStatus(t, err, 413, nil, "larger than the limit")
		var verr *ValidationError
		if !errors.As(err, &verr) {
			t.Fatalf("error %v: want a *ValidationError", err)
		}
	})
	if n := c.fakes[0].taskCount(); n != 1 {
		t.Fatalf("leader holds %d tasks, want 1 (bad input stores nothing)", n)
	}
}

func TestClient_StaysUnavailable(t *testing.T) {
	const retryFor = 300 * time.Millisecond
	t.Run("no leader", func(t *testing.T) {
		c := newTestCluster(t, 3, -1, ManagerHandlerOptions{})
		cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: retryFor})
		start := time.Now()
		_, _, err := cl.SubmitTask(testCtx(t), echoEvent())
		took := time.Since(start)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("error %v, want one wrapping ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), "no leader elected yet") {
			t.Fatalf("error %q does not carry the server's message", err)
		}
		if took < retryFor || took > retryFor+2*time.Second {
			t.Fatalf("gave up after %s, want about RetryFor (%s)", took, retryFor)
		}
		if n := c.fakes[0].count("SubmitTask") + c.fakes[1].count("SubmitTask") + c.fakes[2].count("SubmitTask"); n != 0 {
			t.Fatalf("services saw %d submits, want 0", n)
		}
	})
	t.Run("all down", func(t *testing.T) {
		cl := newTestClient(t, []string{testkit.FreeAddr(t), testkit.FreeAddr(t)}, ClientOptions{RetryFor: retryFor})
		start := time.Now()
		_, err := cl.Tasks(testCtx(t), false)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("error %v, want one wrapping ErrUnavailable", err)
		}
		if took := time.Since(start); took > retryFor+2*time.Second {
			t.Fatalf("gave up after %s, want about RetryFor (%s)", took, retryFor)
		}
	})
}

func TestClient_ContextCancelStopsRetries(t *testing.T) {
	c := newTestCluster(t, 3, -1, ManagerHandlerOptions{})
	cl := newTestClient(t, c.addrs, ClientOptions{RetryFor: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := cl.StopTask(ctx, uuid.New())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want one wrapping context.Canceled", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("returned %s after the start, want soon after the cancel at 200ms", took)
	}
}

func TestClient_RequestTimeout(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	cl := newTestClient(t, []string{silent.Addr().String()}, ClientOptions{Timeout: 100 * time.Millisecond, RetryFor: 250 * time.Millisecond})
	start := time.Now()
	_, err = cl.Cluster(testCtx(t))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want ErrUnavailable wrapping the request timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s against a silent manager, want well under 2s", took)
	}
}

func TestNewClient_Addresses(t *testing.T) {
	cases := []struct {
		name     string
		managers []string
		opts     ClientOptions
		want     []string // base URLs; nil means an error is expected
	}{
		{"host:port", []string{"127.0.0.1:5556"}, ClientOptions{}, []string{"http://127.0.0.1:5556"}},
		{"with scheme", []string{"http://127.0.0.1:5556/", " 127.0.0.1:5566 ", ""}, ClientOptions{}, []string{"http://127.0.0.1:5556", "http://127.0.0.1:5566"}},
		{"https", []string{"https://m1:443"}, ClientOptions{}, []string{"https://m1:443"}},
		{"none", nil, ClientOptions{}, nil},
		{"only blanks", []string{" ", ""}, ClientOptions{}, nil},
		{"no port", []string{"127.0.0.1"}, ClientOptions{}, nil},
		{"path", []string{"127.0.0.1:5556/api"}, ClientOptions{}, nil},
		{"bad scheme", []string{"ftp://127.0.0.1:21"}, ClientOptions{}, nil},
		{"negative timeout", []string{"127.0.0.1:5556"}, ClientOptions{Timeout: -1}, nil},
		{"negative retry", []string{"127.0.0.1:5556"}, ClientOptions{RetryFor: -1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.managers, tc.opts)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("NewClient(%q, %+v): no error, want one", tc.managers, tc.opts)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewClient(%q): %v", tc.managers, err)
			}
			if fmt.Sprint(c.managers) != fmt.Sprint(tc.want) {
				t.Fatalf("NewClient(%q) managers %q, want %q", tc.managers, c.managers, tc.want)
			}
			if c.timeout != DefaultRequestTimeout || c.retryFor != DefaultRetryFor {
				t.Fatalf("defaults: timeout %s, retryFor %s", c.timeout, c.retryFor)
			}
		})
	}
}

// fakeWorker is a tiny in-memory WorkerService.
type fakeWorker struct {
	mu    sync.Mutex
	tasks map[uuid.UUID]Task
	err   error // returned once by the next Submit, when set
	calls int   // every call of any method
	// follow, if set, is what a followed log stream sends after the lines
	// of every stream, until it ends.
	follow io.Reader
}

// callCount returns how many calls the fake has served.
func (f *fakeWorker) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

var _ WorkerService = (*fakeWorker)(nil)

func (f *fakeWorker) Submit(_ context.Context, ev TaskEvent) (Task, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if err := f.err; err != nil {
		f.err = nil
		return Task{}, false, err
	}
	if old, ok := f.tasks[ev.Task.ID]; ok {
		if ev.Task.Generation < old.Generation {
			return Task{}, false, fmt.Errorf("task %s generation %d < %d: %w", old.ID, ev.Task.Generation, old.Generation, ErrStaleGeneration)
		}
		if ev.Task.Generation == old.Generation {
			return old, false, nil
		}
	}
	t := ev.Task
	t.State = Running
	f.tasks[t.ID] = t
	return t, true, nil
}

func (f *fakeWorker) Tasks() []Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	var out []Task
	for _, t := range f.tasks {
		out = append(out, t)
	}
	return out
}

func (f *fakeWorker) Task(id uuid.UUID) (Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	t, ok := f.tasks[id]
	if !ok {
		return Task{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	return t, nil
}

func (f *fakeWorker) Stop(_ context.Context, id uuid.UUID, upTo *uint64) (Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	t, ok := f.tasks[id]
	if !ok {
		return Task{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	if upTo != nil && t.Generation > *upTo {
		return t, fmt.Errorf("%w: worker holds generation %d", ErrStaleGeneration, t.Generation)
	}
	t.State = Completed
	f.tasks[id] = t
	return t, nil
}

func (f *fakeWorker) Stats(context.Context) Stats {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return Stats{Worker: "w1", Cpus: 2, RuntimeAvailable: true}
}

func (f *fakeWorker) Logs(_ context.Context, id uuid.UUID, opts LogOptions) (io.ReadCloser, error) {
	if _, err := f.Task(id); err != nil {
		return nil, err
	}
	lines := []string{"one", "two", "three"}
	if opts.Tail > 0 && opts.Tail < len(lines) {
		lines = lines[len(lines)-opts.Tail:]
	}
	text := strings.Join(lines, "\n") + "\n"
	if f.follow != nil && opts.Follow {
		// What the container wrote so far, then what the test writes.
		pr, pw := io.Pipe()
		go func() {
			if _, err := pw.Write([]byte(text)); err != nil {
				return
			}
			_, err := io.Copy(pw, f.follow)
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
	return io.NopCloser(strings.NewReader(text)), nil
}

func TestWorkerClient(t *testing.T) {
	fw := &fakeWorker{tasks: map[uuid.UUID]Task{}}
	srv := httptest.NewServer(NewWorkerHandler(fw))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	wc := NewWorkerClient(5 * time.Second)
	ctx := testCtx(t)
	id := uuid.New()
	ev := TaskEvent{State: Running, Task: Task{ID: id, Image: "cube-echo:latest", Generation: 2}}

	task, created, err := wc.Submit(ctx, addr, ev)
	if err != nil || !created || task.ID != id || task.State != Running {
		t.Fatalf("Submit: %+v, created %v, err %v", task, created, err)
	}
	if _, created, err = wc.Submit(ctx, "http://"+addr, ev); err != nil || created {
		t.Fatalf("duplicate Submit: created %v, err %v; want a 200 duplicate", created, err)
	}

	t.Run("stale generation", func(t *testing.T) {
		old := ev
		old.Task.Generation = 1
		_, _, err := wc.Submit(ctx, addr, old)
		if !errors.Is(err, ErrStaleGeneration) || !errors.Is(err, ErrConflict) {
			t.Fatalf("error %v, want ErrStaleGeneration (and ErrConflict)", err)
		}
	})
	t.Run("plain conflict", func(t *testing.T) {
		fw.mu.Lock()
		fw.err = fmt.Errorf("port 7777 is taken: %w", ErrConflict)
		fw.mu.Unlock()
		_, _, err := wc.Submit(ctx, addr, ev)
		if !errors.Is(err, ErrConflict) || errors.Is(err, ErrStaleGeneration) {
			t.Fatalf("error %v, want ErrConflict only", err)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		fw.mu.Lock()
		fw.err = fmt.Errorf("docker engine down: %w", ErrUnavailable)
		fw.mu.Unlock()
		_, _, err := wc.Submit(ctx, addr, ev)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("error %v, want ErrUnavailable", err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		_, _, err := wc.Submit(ctx, addr, TaskEvent{Task: Task{ID: id}})
		var verr *ValidationError
		if !errors.As(err, &verr) || !strings.Contains(verr.Msg, "Image is required") {
			t.Fatalf("error %v, want a *ValidationError naming Image", err)
		}
	})
	t.Run("reads", func(t *testing.T) {
		tasks, err := wc.Tasks(ctx, addr)
		if err != nil || len(tasks) != 1 || tasks[0].ID != id {
			t.Fatalf("Tasks: %+v, %v", tasks, err)
		}
		if got, err := wc.Task(ctx, addr, id); err != nil || got.ID != id {
			t.Fatalf("Task: %+v, %v", got, err)
		}
		if _, err := wc.Task(ctx, addr, uuid.New()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Task(unknown): %v, want ErrNotFound", err)
		}
		if s, err := wc.Stats(ctx, addr); err != nil || s.Worker != "w1" || s.Cpus != 2 {
			t.Fatalf("Stats: %+v, %v", s, err)
		}
	})
	t.Run("logs", func(t *testing.T) {
		for _, tc := range []struct {
			tail int
			want string
		}{{0, "one\ntwo\nthree\n"}, {2, "two\nthree\n"}} {
			rc, err := wc.Logs(ctx, addr, id, LogOptions{Tail: tc.tail})
			if err != nil {
				t.Fatalf("Logs(tail %d): %v", tc.tail, err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(b) != tc.want {
				t.Fatalf("Logs(tail %d) = %q, %v; want %q", tc.tail, b, err, tc.want)
			}
		}
		if _, err := wc.Logs(ctx, addr, uuid.New(), LogOptions{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Logs(unknown): %v, want ErrNotFound", err)
		}
	})
	t.Run("stop", func(t *testing.T) {
		if err := wc.Stop(ctx, addr, id); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if err := wc.Stop(ctx, addr, uuid.New()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stop(unknown): %v, want ErrNotFound", err)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		if _, err := wc.Tasks(ctx, "no-port"); err == nil {
			t.Fatal("Tasks(\"no-port\"): no error")
		}
	})
}

func TestWorkerClient_Timeout(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	wc := NewWorkerClient(150 * time.Millisecond)
	start := time.Now()
	if _, err := wc.Stats(testCtx(t), silent.Addr().String()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stats against a silent worker: %v, want a timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s, want about the 150ms timeout", took)
	}
	for _, follow := range []bool{false, true} {
		if _, err := wc.Logs(testCtx(t), silent.Addr().String(), uuid.New(), LogOptions{Follow: follow}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Logs (follow %v) against a silent worker: %v, want a timeout", follow, err)
		}
	}
}

// A followed log stream reaches the caller as the container writes it, and
// lasts past the client's timeout, which bounds only the wait for the
// answer: the test reads a line written three timeouts after the stream
// opened, then the stream's end when the container's output ends.
func TestWorkerClient_FollowLogs(t *testing.T) {
	pr, pw := io.Pipe()
	fw := &fakeWorker{tasks: map[uuid.UUID]Task{}, follow: pr}
	srv := httptest.NewServer(NewWorkerHandler(fw))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { pw.Close() })
	id := uuid.New()
	fw.tasks[id] = Task{ID: id}
	const timeout = 200 * time.Millisecond
	rc, err := NewWorkerClient(timeout).Logs(testCtx(t), srv.Listener.Addr().String(), id, LogOptions{Tail: 1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	readLine := func(want string) {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("read %q, %v; want %q", line, err, want)
		}
	}
	readLine("three\n") // the tail, before the container writes anything more
	time.Sleep(3 * timeout)
	if _, err := pw.Write([]byte("four\n")); err != nil {
		t.Fatal(err)
	}
	readLine("four\n")
	pw.Close() // the container ends
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the container ended: %q, %v; want the end of the stream", rest, err)
	}
}

// TestClient_PassesOverUnreachableManager: a manager the client could not
// reach is not tried again in the round-robin while others answer, so a
// powered-off machine costs one failed connect, not one per call.
func TestClient_PassesOverUnreachableManager(t *testing.T) {
	// A manager whose machine is gone: it accepts and drops connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var tries atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tries.Add(1)
			conn.Close()
		}
	}()
	// Two managers that answer, without naming a leader (a local read).
	ok := func() string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "[]")
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	cl := newTestClient(t, []string{ln.Addr().String(), ok(), ok()}, ClientOptions{RetryFor: 5 * time.Second})
	ctx := testCtx(t)
	for i := 0; i < 9; i++ {
		if _, err := cl.Tasks(ctx, false); err != nil {
			t.Fatalf("Tasks %d: %v", i, err)
		}
	}
	if n := tries.Load(); n != 1 {
		t.Errorf("the unreachable manager was tried %d times in 9 calls; want once", n)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestClient_GiveUpUnreachable: with no manager listening, a call with
// GiveUpUnreachable ends after about that long, not RetryFor, naming every
// address and the connect error; without the option it retries as before.
func TestClient_GiveUpUnreachable(t *testing.T) {
	a, b := closedAddr(t), closedAddr(t)
	cl := newTestClient(t, []string{a, b}, ClientOptions{RetryFor: 15 * time.Second, GiveUpUnreachable: 300 * time.Millisecond})
	start := time.Now()
	_, err := cl.Tasks(testCtx(t), false)
	took := time.Since(start)
	var ue *UnreachableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Tasks with no manager up: %v, want an *UnreachableError wrapping ErrUnavailable", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %s; want about 300ms", took)
	}
	for _, w := range []string{a, b, "connection refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
	// Events: every manager refused the stream's connection.
	if err := cl.Events(testCtx(t), func(Change) error { return nil }); !errors.As(err, &ue) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Events with no manager up: %v, want an *UnreachableError", err)
	}

	// Without the option: RetryFor.
	cl = newTestClient(t, []string{a}, ClientOptions{RetryFor: 700 * time.Millisecond})
	start = time.Now()
	if _, err := cl.Tasks(testCtx(t), false); err == nil || time.Since(start) < 600*time.Millisecond {
		t.Errorf("without GiveUpUnreachable: %v after %s; want retries for RetryFor", err, time.Since(start))
	}
}

// TestClient_GiveUpUnreachable_NotWhileAManagerAnswers: a manager that
// answers 503 (no leader yet) beside one that refuses connections keeps the
// call retrying for RetryFor; the short cut is for nothing listening at all.
func TestClient_GiveUpUnreachable_NotWhileAManagerAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	cl := newTestClient(t, []string{closedAddr(t), srv.URL}, ClientOptions{RetryFor: time.Second, GiveUpUnreachable: 100 * time.Millisecond})
	start := time.Now()
	_, err := cl.Tasks(testCtx(t), false)
	var ue *UnreachableError
	if err == nil || errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Tasks: %v; want ErrUnavailable, not an *UnreachableError", err)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("gave up after %s; want RetryFor (1s)", took)
	}
}

// A placement sent to a worker carries neither Healthy nor History: the
// worker needs neither, and a worker of the version before them refuses a
// body with fields it does not know.
func TestWorkerClient_SubmitLeavesHistoryOut(t *testing.T) {
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	task := Task{ID: uuid.New(), Image: "cube-echo:latest", Generation: 1, Healthy: true,
		History: []TaskTransition{{State: Running, Reason: "passed its health check"}}}
	if _, _, err := NewWorkerClient(5*time.Second).Submit(testCtx(t), srv.Listener.Addr().String(), TaskEvent{State: Running, Task: task}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(body, []byte(`"History"`)) || bytes.Contains(body, []byte(`"Healthy"`)) {
		t.Fatalf("the worker was sent %s", body)
	}
	if !bytes.Contains(body, []byte(task.ID.String())) {
		t.Fatalf("the worker was sent %s, without the task", body)
	}
}

// Client.FollowLogs opens the stream on the manager that answers (after a
// 503 elsewhere, following the leader it names), asks for the tail and a
// follow, and copies what comes as it comes, past the request timeout,
// until the stream ends.
func TestClient_FollowLogs(t *testing.T) {
	id := uuid.New()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	var query string
	serving := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tasks/"+id.String()+"/logs" {
			http.Error(w, "no route", http.StatusNotFound)
			return
		}
		query = r.URL.RawQuery
		serveLogs(w, pr, queryFlag(r, "follow"))
	}))
	t.Cleanup(serving.Close)
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderLeader, serving.Listener.Addr().String())
		http.Error(w, `{"HTTPStatusCode":503,"Message":"electing"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(busy.Close)
	const timeout = 200 * time.Millisecond
	c, err := NewClient([]string{busy.Listener.Addr().String(), serving.Listener.Addr().String()}, ClientOptions{Timeout: timeout, RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- c.FollowLogs(testCtx(t), id, 2, outW); outW.Close() }()
	br := bufio.NewReader(out)
	for _, line := range []string{"one\n", "two\n"} {
		time.Sleep(timeout) // the stream outlives the request timeout
		if _, err := pw.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if got, err := br.ReadString('\n'); err != nil || got != line {
			t.Fatalf("read %q, %v; want %q", got, err, line)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("FollowLogs after the stream ended: %v", err)
	}
	if query != "follow=1&tail=2" {
		t.Fatalf("query %q, want follow=1&tail=2", query)
	}
	// A task the cluster does not know: the 404, at once.
	if err := c.FollowLogs(testCtx(t), uuid.New(), 0, io.Discard); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FollowLogs of an unknown task: %v, want ErrNotFound", err)
	}
}

// A log stream that breaks part way (the worker went away under a
// manager's relay) is an error for the caller, never the stream's end:
// the relay aborts its answer (serveLogs), and FollowLogs says it broke.
func TestClient_FollowLogs_BreakIsAnError(t *testing.T) {
	id := uuid.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveLogs(w, io.MultiReader(strings.NewReader("a\n"), iotest.ErrReader(errors.New("worker gone"))), true)
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient([]string{srv.Listener.Addr().String()}, ClientOptions{RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = c.FollowLogs(testCtx(t), id, 0, &out)
	if err == nil || !strings.Contains(err.Error(), "broke off") || out.String() != "a\n" {
		t.Fatalf("FollowLogs of a broken stream: %v, got %q; want an error after %q", err, out.String(), "a\n")
	}
}

package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/google/uuid"
)

// Helpers of the recovery tests (DESIGN §3, one test per row). Every wait is
// generous (a shared 2-core box running race-enabled binaries): the tests
// assert behaviour and log how long it took, never assert speed.

const (
	// recDeadline bounds every wait for an outcome.
	recDeadline = 60 * time.Second
	// recPoll is how often a wait re-reads the cluster.
	recPoll = 50 * time.Millisecond
)

// recFastChecks gives a task short health-check timings, so that a failing check
// is acted on within about two seconds of a (re)start.
func recFastChecks(t api.Task) api.Task {
	t.HealthCheckInterval = "300ms"
	t.HealthCheckGrace = "1s"
	t.HealthCheckThreshold = 2
	return t
}

// recRT is one recovery test's cluster with a client reused across calls.
type recRT struct {
	t  *testing.T
	c  *ProcCluster
	cl *api.Client
}

func newRecRT(t *testing.T, workers int) *recRT {
	t.Helper()
	start := time.Now()
	var c *ProcCluster
	// Registered first, so it runs after ProcCluster.Close: a container the
	// engine finished creating after Close listed them (a busy engine answers
	// late) is removed too.
	t.Cleanup(func() {
		if c != nil {
			sweepContainers(t, c.Prefix)
		}
	})
	c = NewProcCluster(t, 3, workers)
	t.Logf("cluster of 3 managers and %d workers ready in %s", workers, recSince(start))
	return &recRT{t: t, c: c, cl: c.Client()}
}

// use makes later calls go through the given managers only (for example to
// avoid a frozen one).
func (r *recRT) use(ms ...*Proc) { r.cl = r.c.Client(ms...) }

func recSince(t0 time.Time) time.Duration { return time.Since(t0).Round(time.Millisecond) }

func (r *recRT) submit(task api.Task) uuid.UUID {
	r.t.Helper()
	if task.ID == uuid.Nil {
		task.ID = uuid.New()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, created, err := r.cl.SubmitTask(ctx, api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now().UTC(), Task: task})
	// A client that lost its answer to a leader change asks again with the
	// same ID, and the second answer says the task was there already: the
	// first attempt stored it (the ID is new to this call).
	if err != nil || got.ID != task.ID {
		r.t.Fatalf("submit %s: got %s (created %v), %v", task.Name, got.ID, created, err)
	}
	if !created {
		r.t.Logf("submit %s: stored by an earlier attempt of the same call (its answer was lost)", task.Name)
	}
	return got.ID
}

// task reads one task with a consistent read.
func (r *recRT) task(id uuid.UUID) api.Task {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	task, err := r.cl.Task(ctx, id, true)
	if err != nil {
		r.t.Fatalf("read task %s: %v", id, err)
	}
	return task
}

// waitTask polls the task (consistent reads) until cond accepts it, and
// returns it with the time waited. It fails the test after within.
func (r *recRT) waitTask(id uuid.UUID, within time.Duration, cond func(api.Task) error) (api.Task, time.Duration) {
	r.t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		task, err := r.cl.Task(ctx, id, true)
		cancel()
		if err == nil {
			if err = cond(task); err == nil {
				return task, time.Since(start)
			}
		}
		last = err
		if time.Now().After(deadline) {
			r.t.Fatalf("task %s: after %s: %v", id, within, last)
		}
		time.Sleep(recPoll)
	}
}

// waitRunning waits until every task is Running and returns them.
func (r *recRT) waitRunning(ids ...uuid.UUID) map[uuid.UUID]api.Task {
	r.t.Helper()
	out := make(map[uuid.UUID]api.Task)
	for _, id := range ids {
		out[id], _ = r.waitTask(id, recDeadline, recIsRunning)
	}
	return out
}

func recIsRunning(task api.Task) error {
	if task.State != api.Running || task.ContainerID == "" || len(task.HostPorts) == 0 {
		return fmt.Errorf("%s (%s) is %s on %q gen %d: %s", task.ID, task.Name, task.State, task.Worker, task.Generation, task.Reason)
	}
	return nil
}

// hold checks cond on the task for the whole duration (it must keep holding).
func (r *recRT) hold(id uuid.UUID, d time.Duration, cond func(api.Task, []string) error) {
	r.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		task := r.task(id)
		if err := cond(task, r.c.Containers()[id.String()]); err != nil {
			r.t.Fatalf("task %s: %v", id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// recHostPort returns the task's published IPv4 host port of 7777/tcp.
func recHostPort(t *testing.T, task api.Task) string {
	t.Helper()
	for _, b := range task.HostPorts["7777/tcp"] {
		if !strings.Contains(b.HostIp, ":") {
			return b.HostPort
		}
	}
	t.Fatalf("task %s has no IPv4 host port: %+v", task.ID, task.HostPorts)
	return ""
}

// recCrash asks the echo service of the task to exit with code 1. It first
// waits for the service to answer /health: a task is Running once its
// container has started, which can be a moment before the process listens,
// and Docker's port proxy meanwhile accepts a connection and closes it (EOF).
// Retrying the POST itself instead could crash the task twice.
func recCrash(t *testing.T, task api.Task) time.Time {
	t.Helper()
	deadline := time.Now().Add(recDeadline)
	health := &http.Client{Timeout: time.Second}
	for {
		resp, err := health.Get("http://127.0.0.1:" + recHostPort(t, task) + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s (generation %d) does not answer /health within %s", task.ID, task.Generation, recDeadline)
		}
		time.Sleep(50 * time.Millisecond)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Post("http://127.0.0.1:"+recHostPort(t, task)+"/crash", "text/plain", nil)
	at := time.Now()
	if err != nil {
		t.Fatalf("POST /crash to %s: %v", task.ID, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /crash to %s: %d %s", task.ID, resp.StatusCode, body)
	}
	return at
}

// recAfterHealthyRun waits until the task's container has run longer than
// the --fast HealthyRun (2 s), so its next failure restarts it at once.
func recAfterHealthyRun(task api.Task) {
	if d := time.Until(task.StartTime.Add(2500 * time.Millisecond)); d > 0 {
		time.Sleep(d)
	}
}

// recTasksOn returns the IDs of the tasks placed on the worker.
func recTasksOn(tasks map[uuid.UUID]api.Task, worker string) []uuid.UUID {
	var out []uuid.UUID
	for id, task := range tasks {
		if task.Worker == worker {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// busiestWorker returns the worker process running the most of the tasks.
func (r *recRT) busiestWorker(tasks map[uuid.UUID]api.Task) *Proc {
	r.t.Helper()
	var best *Proc
	for _, w := range r.c.Workers {
		if best == nil || len(recTasksOn(tasks, w.Name)) > len(recTasksOn(tasks, best.Name)) {
			best = w
		}
	}
	if len(recTasksOn(tasks, best.Name)) == 0 {
		r.t.Fatalf("no worker runs any task: %v", tasks)
	}
	return best
}

// removeContainersOf force-removes every container of the worker, as if its
// machine had died with it.
func (r *recRT) removeContainersOf(w *Proc) int {
	r.t.Helper()
	cli := dockerClient(r.t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "cube.worker="+w.Name))})
	if err != nil {
		r.t.Fatalf("list containers of %s: %v", w.Name, err)
	}
	for _, ct := range list {
		if err := cli.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true}); err != nil {
			r.t.Fatalf("remove container %s: %v", ct.ID, err)
		}
	}
	return len(list)
}

// pause freezes (or thaws) containers through the engine.
func (r *recRT) pause(ids []string, freeze bool) {
	r.t.Helper()
	cli := dockerClient(r.t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range ids {
		var err error
		if freeze {
			err = cli.ContainerPause(ctx, id)
		} else {
			err = cli.ContainerUnpause(ctx, id)
		}
		if err != nil {
			r.t.Fatalf("pause=%v container %s: %v", freeze, id, err)
		}
	}
}

// recSignal sends a signal to a node process without waiting for it to exit
// (SIGSTOP, SIGCONT).
func recSignal(t *testing.T, p *Proc, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		t.Fatalf("%s is not running", p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.Name, err)
	}
}

// others returns the managers other than p.
func (r *recRT) others(p *Proc) []*Proc {
	var out []*Proc
	for _, m := range r.c.Managers {
		if m != p {
			out = append(out, m)
		}
	}
	return out
}

// newLeaderAmong waits until the given managers agree on a leader among them
// and returns it with the time since t0 (the fault).
func (r *recRT) newLeaderAmong(ms []*Proc, t0 time.Time) (*Proc, time.Duration) {
	r.t.Helper()
	var leader *Proc
	testkit.Eventually(r.t, recDeadline, func() error {
		leader = nil
		for _, m := range ms {
			info, err := r.clusterInfo(m)
			if err != nil {
				return err
			}
			var l *Proc
			for _, x := range ms {
				if x.HTTPAddr == info.Leader {
					l = x
				}
			}
			if l == nil {
				return fmt.Errorf("%s names leader %q, not one of the live managers", m.Name, info.Leader)
			}
			if leader != nil && leader != l {
				return fmt.Errorf("managers disagree on the leader: %s and %s", leader.Name, l.Name)
			}
			leader = l
		}
		return nil
	})
	return leader, time.Since(t0)
}

// clusterInfo asks one manager (and only it) what it knows of the cluster.
func (r *recRT) clusterInfo(m *Proc) (api.ClusterInfo, error) {
	cl, err := api.NewClient([]string{m.HTTPAddr}, r.c.ClientOptions(api.ClientOptions{RetryFor: time.Second, Timeout: 3 * time.Second}))
	if err != nil {
		return api.ClusterInfo{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Cluster(ctx)
}

// converged checks the universal invariant, waiting for it to hold: every
// task the cluster still runs (DesiredState Running, State Running) has
// exactly one running container, no task that is Pending or ended has one,
// and no container runs for a task the cluster does not know.
func (r *recRT) converged() {
	r.t.Helper()
	start := time.Now()
	testkit.Eventually(r.t, recDeadline, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tasks, err := r.cl.Tasks(ctx, true)
		if err != nil {
			return err
		}
		cts := r.c.Containers()
		known := map[string]bool{}
		for _, task := range tasks {
			id := task.ID.String()
			known[id] = true
			n := len(cts[id])
			switch {
			case task.DesiredState == api.Running && task.State == api.Running:
				if n != 1 {
					return fmt.Errorf("task %s (%s) Running on %s gen %d has %d running containers, want 1: %v", id, task.Name, task.Worker, task.Generation, n, cts[id])
				}
				if cts[id][0] != task.ContainerID {
					return fmt.Errorf("task %s (%s) records container %.12s but %.12s runs", id, task.Name, task.ContainerID, cts[id][0])
				}
			case task.DesiredState == api.Running && task.State == api.Scheduled:
				return fmt.Errorf("task %s (%s) still Scheduled on %s gen %d", id, task.Name, task.Worker, task.Generation)
			case task.State == api.Pending || task.State.Terminal():
				if n != 0 {
					return fmt.Errorf("task %s (%s) is %s (desired %s) but has %d running containers: %v", id, task.Name, task.State, task.DesiredState, n, cts[id])
				}
			default:
				return fmt.Errorf("task %s (%s) is %s, desired %s", id, task.Name, task.State, task.DesiredState)
			}
		}
		for id, list := range cts {
			if !known[id] {
				return fmt.Errorf("containers %v run for unknown task %s", list, id)
			}
		}
		return nil
	})
	r.t.Logf("invariant holds (one running container per running task, none for the rest) after %s", recSince(start))
}

// recEvents records the task changes a manager streams.
type recEvents struct {
	mu   sync.Mutex
	list []recChange
	errs []string // why the stream ended, each time it did
	stop context.CancelFunc
	done chan struct{}
}

type recChange struct {
	at time.Time
	ch api.Change
}

func (r *recRT) watch() *recEvents {
	ctx, cancel := context.WithCancel(context.Background())
	ev := &recEvents{stop: cancel, done: make(chan struct{})}
	cl := r.cl
	go func() {
		defer close(ev.done)
		for ctx.Err() == nil {
			err := cl.Events(ctx, func(ch api.Change) error {
				ev.mu.Lock()
				ev.list = append(ev.list, recChange{at: time.Now(), ch: ch})
				ev.mu.Unlock()
				return nil
			})
			if ctx.Err() == nil {
				ev.mu.Lock()
				ev.errs = append(ev.errs, fmt.Sprintf("%s: %v", time.Now().Format(time.StampMilli), err))
				ev.mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	r.t.Cleanup(func() { cancel(); <-ev.done })
	return ev
}

// String says how many changes were recorded, of every task, and why the
// stream ended if it did.
func (ev *recEvents) String() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	last := "none"
	if n := len(ev.list); n > 0 {
		last = fmt.Sprintf("index %d at %s", ev.list[n-1].ch.Index, ev.list[n-1].at.Format(time.StampMilli))
	}
	return fmt.Sprintf("%d changes of any task recorded, the last %s (now %s); stream ends: %v", len(ev.list), last, time.Now().Format(time.StampMilli), ev.errs)
}

// waitFor waits (up to within) until a recorded change of the task satisfies
// ok, and returns it. A change is streamed once the answering manager has
// applied it, which may be a little after a consistent read saw it.
func (ev *recEvents) waitFor(id uuid.UUID, within time.Duration, ok func(api.Task) bool) (recChange, bool) {
	deadline := time.Now().Add(within)
	for {
		for _, c := range ev.of(id) {
			if ok(c.ch.Task) {
				return c, true
			}
		}
		if time.Now().After(deadline) {
			return recChange{}, false
		}
		time.Sleep(recPoll)
	}
}

// of returns the recorded changes of one task.
func (ev *recEvents) of(id uuid.UUID) []recChange {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []recChange
	for _, c := range ev.list {
		if c.ch.Task.ID == id {
			out = append(out, c)
		}
	}
	return out
}

// cubeVia runs the CLI against one manager only.
func (r *recRT) cubeVia(m *Proc, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := r.c.CubeCommand(ctx, append(args, "-m", m.HTTPAddr)...).CombinedOutput()
	return string(out), err
}

// waitWorkerState waits until the replicated worker list records the worker
// in the given state (since at or after t0 when alive is awaited).
func (r *recRT) waitWorkerState(w *Proc, state string, t0 time.Time) time.Duration {
	r.t.Helper()
	start := time.Now()
	testkit.Eventually(r.t, recDeadline, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		nodes, err := r.cl.Nodes(ctx, true)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Name != w.Name {
				continue
			}
			if n.State == state && !n.Since.Before(t0.Add(-time.Second)) {
				return nil
			}
			return fmt.Errorf("%s is %s since %s, want %s", n.Name, n.State, n.Since.Format(time.StampMilli), state)
		}
		return fmt.Errorf("%s not in the worker list", w.Name)
	})
	return time.Since(start)
}

// workerHolds asks the worker process itself which tasks it holds.
func (r *recRT) workerHolds(w *Proc) map[uuid.UUID]api.Task {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := r.c.WorkerClient(5*time.Second).Tasks(ctx, w.HTTPAddr)
	if err != nil {
		r.t.Fatalf("tasks of worker %s: %v", w.Name, err)
	}
	out := map[uuid.UUID]api.Task{}
	for _, task := range list {
		out[task.ID] = task
	}
	return out
}

// sweepContainers removes every container of the workers named prefix…,
// and looks again a little later if it found some.
func sweepContainers(t *testing.T, prefix string) {
	cli := dockerClient(t)
	defer cli.Close()
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "cube.worker"))})
		if err != nil {
			cancel()
			t.Logf("sweep containers: %v", err)
			return
		}
		n := 0
		for _, ct := range list {
			if strings.HasPrefix(ct.Labels["cube.worker"], prefix) {
				n++
				_ = cli.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true})
			}
		}
		cancel()
		if n == 0 {
			return
		}
		t.Logf("swept %d containers left behind by workers %s*", n, prefix)
		time.Sleep(time.Second)
	}
}

// streamDiag logs, for each manager, what it has applied and its own view of
// a task, and whether a fresh event stream from it delivers anything: to tell
// a manager that stopped applying from a stream that stopped delivering.
func (r *recRT) streamDiag(ms []*Proc, id uuid.UUID) {
	r.t.Helper()
	for _, m := range ms {
		info, err := r.clusterInfo(m)
		cl, _ := api.NewClient([]string{m.HTTPAddr}, r.c.ClientOptions(api.ClientOptions{RetryFor: time.Second}))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		x, xerr := cl.Task(ctx, id, false)
		cancel()
		r.t.Logf("%s: leader %q, applied index %d (err %v); its own read of task %.8s: gen %d %s restarts %d (err %v)", m.Name, info.Leader, info.AppliedIndex, err, id, x.Generation, x.State, x.RestartCount, xerr)
	}
}

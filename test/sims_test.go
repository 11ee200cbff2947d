package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/manager"
	"github.com/cube-orch/cube/test/chaos"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// The short form of the control-plane benchmark (make scale, scale_test.go),
// asserting behaviour only: real managers place a burst of tasks on
// simulated workers, every task runs exactly once, and losing workers loses
// no task. No timing is asserted.

// simDataDir returns a directory for the simulated workers' records: on
// /dev/shm where there is one (their bolt files fsync on every placement,
// which on a shared disk is the slowest part of a burst), removed when the
// test ends (after the cluster is stopped: cleanups run last first).
func simDataDir(t *testing.T) string {
	t.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "cube-sim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// simTasks returns n tasks that ask for nothing, so that they fit any
// simulated worker; their names start with prefix.
func simTasks(n int, prefix string) []api.Task {
	tasks := make([]api.Task, n)
	for i := range tasks {
		tasks[i] = api.Task{ID: uuid.New(), Name: fmt.Sprintf("%s-%d", prefix, i), Image: "cube-echo:latest"}
	}
	return tasks
}

// submitAll submits the tasks with the given number of concurrent clients
// and returns the time the last submission was acknowledged.
func submitAll(cl *api.Client, tasks []api.Task, clients int) (time.Time, error) {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		last  time.Time
		first error
		wg    sync.WaitGroup
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(tasks) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, _, err := cl.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: tasks[i]})
				cancel()
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("submit task %d (%s): %w", i, tasks[i].ID, err)
				}
				if now := time.Now(); now.After(last) {
					last = now
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return last, first
}

// countState reads every task from cl (one manager's local state) and
// counts those of ids in state want.
func countState(cl *api.Client, ids map[uuid.UUID]bool, want api.State) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tasks, err := cl.Tasks(ctx, false)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tasks {
		if ids[t.ID] && t.State == want {
			n++
		}
	}
	return n, nil
}

// checkRunningOnce checks the whole chain for every task of ids: the
// managers' state has it Running on one of the live workers, that worker's
// own record has it Running, and no other live worker runs it. It returns
// the first problems found (nil: all is well), and the number of tasks
// missing (not Running) and duplicated (Running on more than one worker).
func checkRunningOnce(c *ProcCluster, ids map[uuid.UUID]bool) (missing, dupes int, err error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tasks, err := c.Client().Tasks(ctx, true)
	if err != nil {
		return 0, 0, err
	}
	live := c.SimWorkers()
	alive := make(map[string]bool, len(live))
	for _, w := range live {
		alive[w.Name] = true
	}
	records, err := c.SimRecords(live)
	if err != nil {
		return 0, 0, err
	}
	copies := RunningCopies(records)
	var problems []string
	seen := 0
	for _, t := range tasks {
		if !ids[t.ID] {
			continue
		}
		seen++
		on := copies[t.ID]
		switch {
		case t.State != api.Running || !alive[t.Worker]:
			missing++
			problems = append(problems, fmt.Sprintf("task %s is %s on %q (live: %v; reason %q; history %s)", t.ID, t.State, t.Worker, alive[t.Worker], t.Reason, historyLine(t)))
		case len(on) > 1:
			dupes++
			problems = append(problems, fmt.Sprintf("task %s runs on %d workers: %v", t.ID, len(on), on))
		case len(on) == 0 || on[0] != t.Worker:
			missing++
			problems = append(problems, fmt.Sprintf("task %s: managers say Running on %s, the workers' records %v", t.ID, t.Worker, on))
		}
	}
	if seen != len(ids) {
		missing += len(ids) - seen
		problems = append(problems, fmt.Sprintf("%d of %d tasks are not in the managers' state", len(ids)-seen, len(ids)))
	}
	if len(problems) == 0 {
		return 0, 0, nil
	}
	sort.Strings(problems)
	if len(problems) > 5 {
		problems = append(problems[:5], fmt.Sprintf("… and %d more", len(problems)-5))
	}
	return missing, dupes, fmt.Errorf("%d missing, %d duplicated: %v", missing, dupes, problems)
}

// unaskedStops returns the managers' log lines that report a task to run
// whose current placement its worker stopped on request
// (manager.StoppedUnaskedLog): the leader runs such a task again, so the
// exactly-once check passes after it, but no stop may reach a placement the
// cluster wants; a run that logs one fails, and keeps its logs.
func unaskedStops(c *ProcCluster) []string {
	logs := map[string]string{}
	for _, m := range c.Managers {
		data, err := os.ReadFile(m.log)
		if err != nil {
			c.t.Errorf("read the log of %s: %v", m.Name, err)
			continue
		}
		logs[m.Name] = string(data)
	}
	return chaos.ScanLines(logs, manager.StoppedUnaskedLog)
}

// historyLine words a task's History on one line, for a failed check.
func historyLine(t api.Task) string {
	var b strings.Builder
	for i, h := range t.History {
		if i > 0 {
			b.WriteString(" → ")
		}
		fmt.Fprintf(&b, "%s %s/%s on %q g%d", h.Time.Format("15:04:05.000"), h.State, h.DesiredState, h.Worker, h.Generation)
		if h.Reason != "" {
			fmt.Fprintf(&b, " (%s)", h.Reason)
		}
	}
	return b.String()
}

// TestSimWorkers_PlacementAndLoss: 3 managers and 20 simulated workers in
// two processes (18 + 2). A burst of 500 tasks all run, each exactly once;
// killing the 2-worker process (10 % of the workers, as machines dying)
// moves their tasks, and again every task runs exactly once on the workers
// left.
func TestSimWorkers_PlacementAndLoss(t *testing.T) {
	const workers, lose, tasks = 20, 2, 500
	c := NewProcClusterWith(t, 3, 0, ProcOptions{Simulated: true, SimDataDir: simDataDir(t)})
	keepLogsOnFailure(t, c)
	sim := []string{"--start-delay", "20ms", "--start-jitter", "20ms", "--log-level", "warn"}
	c.AddSimWorkers(workers-lose, sim...)
	victim := c.AddSimWorkers(lose, sim...)
	c.WaitReady(workers)

	cl := c.Client()
	burst := simTasks(tasks, "sim")
	ids := make(map[uuid.UUID]bool, tasks)
	for _, tk := range burst {
		ids[tk.ID] = true
	}
	if _, err := submitAll(cl, burst, 16); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Minute, func() error {
		n, err := countState(cl, ids, api.Running)
		if err == nil && n < tasks {
			err = fmt.Errorf("%d of %d tasks Running", n, tasks)
		}
		return err
	})
	testkit.Eventually(t, time.Minute, func() error { _, _, err := checkRunningOnce(c, ids); return err })

	// Every worker took some: the burst was spread.
	records, err := c.SimRecords(c.SimWorkers())
	if err != nil {
		t.Fatal(err)
	}
	for name, recs := range records {
		if len(recs) == 0 {
			t.Errorf("worker %s got none of the %d tasks", name, tasks)
		}
	}
	var onVictim int
	for _, w := range victim.Workers {
		onVictim += len(records[w.Name])
	}

	c.Kill(victim.Proc)
	t.Logf("killed %s (%d workers, %d tasks on them)", victim.Name, lose, onVictim)
	testkit.Eventually(t, 2*time.Minute, func() error { _, _, err := checkRunningOnce(c, ids); return err })
	if lines := unaskedStops(c); len(lines) > 0 {
		t.Errorf("%d placements stopped though their tasks were to run: %v", len(lines), lines)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := cl.Nodes(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		lost := slices.ContainsFunc(victim.Workers, func(w SimWorker) bool { return w.Name == n.Name })
		if lost && n.State == api.NodeAlive {
			t.Errorf("killed worker %s still alive in /nodes", n.Name)
		}
		if lost && n.TaskCount > 0 {
			t.Errorf("killed worker %s still holds %d tasks", n.Name, n.TaskCount)
		}
	}
	if t.Failed() {
		return
	}
	// Stopped with SIGTERM, the other process stops every worker and exits
	// with status 0 (Stop fails the test if it takes past 45 s; the command's
	// own test checks that every goroutine ends).
	c.Stop(c.Sims[0].Proc)
	if err := c.Sims[0].ExitErr(); err != nil {
		t.Errorf("%s after SIGTERM: %v; want exit status 0", c.Sims[0].Name, err)
	}
}

// keepLogsOnFailure copies the nodes' logs out of the cluster's directory
// (removed when the test ends) when the test fails, or always with
// CUBE_KEEP_LOGS set (make scale KEEP_LOGS=1), and says where.
func keepLogsOnFailure(t *testing.T, c *ProcCluster) {
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("CUBE_KEEP_LOGS") == "" {
			return
		}
		dst, err := os.MkdirTemp("", "cube-logs-")
		if err != nil {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
		for _, l := range logs {
			if data, err := os.ReadFile(l); err == nil {
				_ = os.WriteFile(filepath.Join(dst, filepath.Base(l)), data, 0o644)
			}
		}
		t.Logf("node logs kept in %s", dst)
	})
}

// TestSimWorkers_StopNobodyAskedFor: a stop reaches a task's current
// placement though the cluster wants it running (sent here straight to its
// worker, fenced at its own generation, as no leader ever sends one). The
// leader runs the task again, not counted as a restart, and logs the error
// the chaos and scale runs fail on; the task runs exactly once after it.
func TestSimWorkers_StopNobodyAskedFor(t *testing.T) {
	c := NewProcClusterWith(t, 3, 0, ProcOptions{Simulated: true, SimDataDir: simDataDir(t)})
	keepLogsOnFailure(t, c)
	c.AddSimWorkers(2, "--start-delay", "20ms", "--log-level", "warn")
	c.WaitReady(2)
	cl := c.Client()
	tk := simTasks(1, "unasked")[0]
	if _, err := submitAll(cl, []api.Task{tk}, 1); err != nil {
		t.Fatal(err)
	}
	var first api.Task
	testkit.Eventually(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		first, err = cl.Task(ctx, tk.ID, false)
		if err == nil && first.State != api.Running {
			err = fmt.Errorf("task is %s", first.State)
		}
		return err
	})
	addr := ""
	for _, w := range c.SimWorkers() {
		if w.Name == first.Worker {
			addr = w.HTTPAddr
		}
	}
	if addr == "" {
		t.Fatalf("task runs on %q, not one of the simulated workers", first.Worker)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.WorkerClient(10*time.Second).StopUpTo(ctx, addr, tk.ID, first.Generation)
	cancel()
	if err != nil {
		t.Fatalf("stop generation %d on %s: %v", first.Generation, first.Worker, err)
	}
	testkit.Eventually(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cur, err := cl.Task(ctx, tk.ID, false)
		switch {
		case err != nil:
			return err
		case cur.Generation <= first.Generation || cur.State != api.Running:
			return fmt.Errorf("task is %s at generation %d (%s)", cur.State, cur.Generation, cur.Reason)
		case cur.RestartCount != 0:
			t.Fatalf("run again counted as a restart: %d", cur.RestartCount)
		}
		return nil
	})
	testkit.Eventually(t, time.Minute, func() error {
		_, _, err := checkRunningOnce(c, map[uuid.UUID]bool{tk.ID: true})
		return err
	})
	if lines := unaskedStops(c); len(lines) == 0 {
		t.Errorf("no manager logged %q", manager.StoppedUnaskedLog)
	}
}

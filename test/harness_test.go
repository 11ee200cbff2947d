//go:build harness || bench

package test

// The recovery harness: it repeats the failure scenarios of DESIGN §3 on a
// cluster of real binaries and prints median, p95 and max per scenario. It is
// a measurement, not a test of speed: it fails only when recovery does not
// happen at all. Run it with `make harness` (TRIALS=N, default 10).

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

func trials() int {
	if n, err := strconv.Atoi(os.Getenv("TRIALS")); err == nil && n > 0 {
		return n
	}
	return 10
}

type series struct {
	name string
	goal string
	d    []time.Duration
}

func (s *series) add(t *testing.T, d time.Duration) {
	s.d = append(s.d, d)
	t.Logf("%s: trial %d: %s", s.name, len(s.d), d.Round(time.Millisecond))
}

func (s *series) row() string {
	d := append([]time.Duration(nil), s.d...)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	if len(d) == 0 {
		return fmt.Sprintf("| %s | 0 | – | – | – | %s |", s.name, s.goal)
	}
	pick := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	ms := func(x time.Duration) string { return fmt.Sprintf("%d ms", x.Milliseconds()) }
	return fmt.Sprintf("| %s | %d | %s | %s | %s | %s |", s.name, len(d), ms(d[len(d)/2]), ms(pick(0.95)), ms(d[len(d)-1]), s.goal)
}

// fastPoll waits for cond with a short poll period, for measurements.
func fastPoll(t *testing.T, within time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s", within)
	return time.Time{}
}

func answers(task api.Task) bool {
	for _, b := range task.HostPorts["7777/tcp"] {
		if strings.Contains(b.HostIp, ":") {
			continue
		}
		c := &http.Client{Timeout: 300 * time.Millisecond}
		resp, err := c.Get("http://127.0.0.1:" + b.HostPort + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	return false
}

func getTask(c *ProcCluster, id uuid.UUID) (api.Task, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Client().Task(ctx, id, false)
}

func submitTask(t *testing.T, c *ProcCluster, task api.Task) api.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, _, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: task})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// runningNewer waits until the task runs at a generation above gen and answers.
func runningNewer(t *testing.T, c *ProcCluster, id uuid.UUID, gen uint64, within time.Duration) (time.Time, api.Task) {
	t.Helper()
	var task api.Task
	at := fastPoll(t, within, func() bool {
		got, err := getTask(c, id)
		if err != nil || got.State != api.Running || got.Generation <= gen || !answers(got) {
			return false
		}
		task = got
		return true
	})
	return at, task
}

func healthyTask(name string, env ...string) api.Task {
	t := echoTask(name)
	t.HealthCheckInterval, t.HealthCheckGrace, t.HealthCheckThreshold = "300ms", "500ms", 2
	t.MaxRestarts = -1
	t.Env = env
	return t
}

func TestHarness_Recovery(t *testing.T) {
	n := trials()
	c := NewProcCluster(t, 3, 3)
	crash := &series{name: "container crash → running again and healthy", goal: "p99 < 1 s"}
	unhealthy := &series{name: "health check fails (300 ms × 2) → restarted and healthy", goal: "interval × threshold + 1 s = 1.6 s"}
	workerLoss := &series{name: "worker machine dies → its tasks running elsewhere and healthy", goal: "p99 < 3 s"}
	leaderWrite := &series{name: "leader SIGKILL → next write accepted", goal: "p99 < 1 s"}
	leaderCrash := &series{name: "leader SIGKILL + container crash → running again under the new leader", goal: "—"}
	both := &series{name: "leader + worker SIGKILL → that worker's tasks running elsewhere", goal: "p99 < 3 s"}
	defer func() {
		fmt.Println("\n| scenario | trials | median | p95 | max | goal |\n| --- | --- | --- | --- | --- | --- |")
		for _, s := range []*series{crash, unhealthy, workerLoss, leaderWrite, leaderCrash, both} {
			fmt.Println(s.row())
		}
	}()

	// Crash: a running task, past the healthy-run time, crashes.
	task := submitTask(t, c, healthyTask("crash"))
	_, cur := runningNewer(t, c, task.ID, 0, 60*time.Second)
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(cur.StartTime.Add(2500 * time.Millisecond)))
		port := hostPort(cur)
		start := time.Now()
		_, _ = http.Post("http://127.0.0.1:"+port+"/crash", "", nil)
		at, next := runningNewer(t, c, task.ID, cur.Generation, 30*time.Second)
		crash.add(t, at.Sub(start))
		cur = next
	}

	// Unhealthy: /health turns 500 three seconds after each start.
	task = submitTask(t, c, healthyTask("unhealthy", "ECHO_UNHEALTHY_AFTER=3s"))
	_, cur = runningNewer(t, c, task.ID, 0, 60*time.Second)
	for i := 0; i < n; i++ {
		turned := cur.StartTime.Add(3 * time.Second)
		at, next := runningNewer(t, c, task.ID, cur.Generation, 60*time.Second)
		unhealthy.add(t, at.Sub(turned))
		cur = next
	}

	// Worker machine death: kill a worker and its containers; its tasks must
	// run elsewhere. The worker is restarted (empty) for the next trial.
	var ids []uuid.UUID
	for i := 0; i < 3; i++ {
		ids = append(ids, submitTask(t, c, healthyTask(fmt.Sprintf("spread-%d", i))).ID)
	}
	for i := 0; i < n; i++ {
		victim, on := victimOf(t, c, ids, i)
		start := time.Now()
		machineCrash(t, c, victim)
		at := start
		for _, tk := range on {
			a, _ := runningNewer(t, c, tk.ID, tk.Generation, 60*time.Second)
			at = maxTime(at, a)
		}
		if len(on) > 0 {
			workerLoss.add(t, at.Sub(start))
		}
		c.Start(victim)
		c.WaitReady(len(c.Workers))
	}

	// Leader loss: time to the next accepted write, and to a crashed task
	// running again under the new leader.
	task = submitTask(t, c, healthyTask("under-failover"))
	_, cur = runningNewer(t, c, task.ID, 0, 60*time.Second)
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(cur.StartTime.Add(2500 * time.Millisecond)))
		leader := c.LeaderProc()
		start := time.Now()
		c.Kill(leader)
		_, _ = http.Post("http://127.0.0.1:"+hostPort(cur)+"/crash", "", nil)
		var others []*Proc
		for _, m := range c.Managers {
			if m != leader {
				others = append(others, m)
			}
		}
		cl, err := api.NewClient(addrsOf(others), c.ClientOptions(api.ClientOptions{Timeout: time.Second, RetryFor: 30 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _, err = cl.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: uuid.New(), Name: "probe-write", Image: "cube-echo:latest"}})
		cancel()
		if err != nil {
			t.Fatalf("write after leader loss: %v", err)
		}
		leaderWrite.add(t, time.Since(start))
		at, next := runningNewer(t, c, task.ID, cur.Generation, 60*time.Second)
		leaderCrash.add(t, at.Sub(start))
		cur = next
		c.Start(leader)
		c.WaitReady(len(c.Workers))
	}

	// Leader and a worker together.
	for i := 0; i < n; i++ {
		victim, on := victimOf(t, c, ids, i)
		leader := c.LeaderProc()
		start := time.Now()
		c.Kill(leader)
		machineCrash(t, c, victim)
		at := start
		for _, tk := range on {
			a, _ := runningNewer(t, c, tk.ID, tk.Generation, 60*time.Second)
			at = maxTime(at, a)
		}
		if len(on) > 0 {
			both.add(t, at.Sub(start))
		}
		c.Start(leader)
		c.Start(victim)
		c.WaitReady(len(c.Workers))
	}
}

// victimOf picks the worker that runs task ids[i%len(ids)] and returns it with
// every task it runs.
func victimOf(t *testing.T, c *ProcCluster, ids []uuid.UUID, i int) (*Proc, []api.Task) {
	t.Helper()
	var all []api.Task
	for _, id := range ids {
		_, got := runningNewer(t, c, id, 0, 60*time.Second)
		all = append(all, got)
	}
	name := all[i%len(all)].Worker
	var on []api.Task
	for _, tk := range all {
		if tk.Worker == name {
			on = append(on, tk)
		}
	}
	for _, w := range c.Workers {
		if w.Name == name {
			return w, on
		}
	}
	t.Fatalf("no worker process named %s", name)
	return nil, nil
}

func hostPort(task api.Task) string {
	for _, b := range task.HostPorts["7777/tcp"] {
		if !strings.Contains(b.HostIp, ":") {
			return b.HostPort
		}
	}
	return ""
}

// machineCrash kills a worker process and its containers, as a machine loss.
func machineCrash(t *testing.T, c *ProcCluster, w *Proc) {
	t.Helper()
	c.Kill(w)
	out, err := exec.Command("sh", "-c", "docker rm -f $(docker ps -q --filter label=cube.worker="+w.Name+") 2>/dev/null || true").CombinedOutput()
	if err != nil {
		t.Fatalf("remove containers of %s: %v %s", w.Name, err, out)
	}
}

func addrsOf(ps []*Proc) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.HTTPAddr)
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

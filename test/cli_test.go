package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
)

// The CLI's feedback on real binaries against a real cluster (issue 15):
// cube run --wait follows a task to healthy, or says why not with its exit
// status; cube status ID shows the history and -o wide the health; cube
// logs -f follows the output until the task ends; cube node drain --wait
// returns once the worker is empty; cube status --watch redraws until
// interrupted; cube __complete offers the cluster's tasks, workers and
// services.
func TestE2E_CLIFeedback(t *testing.T) {
	requireImage(t)
	c := NewProcCluster(t, 3, 2)
	dir := t.TempDir()
	exitStatus := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			return -1
		}
		return 0
	}
	taskJSON := func(name string, extra string) string {
		path := filepath.Join(dir, name+".json")
		writeFile(t, path, `{"Name": "`+name+`", "Image": "cube-echo:latest", "ExposedPorts": {"7777/tcp": {}}`+extra+`}`)
		return path
	}
	statusJSON := func(ref string) api.Task {
		t.Helper()
		out, err := c.Cube("status", ref, "-o", "json")
		var task api.Task
		if err != nil || json.Unmarshal([]byte(out), &task) != nil {
			t.Fatalf("cube status %s -o json: %v\n%s", ref, err, out)
		}
		return task
	}

	// run --wait: to Running and a passed health check, each step a line.
	out, err := c.Cube("run", "-f", taskJSON("cli-web", `, "HealthCheck": "/health"`), "--wait", "--timeout", "3m")
	if exitStatus(err) != 0 || !strings.Contains(out, "Pending: submitted") || !strings.Contains(out, "Running, healthy on ") ||
		!strings.Contains(out, "and passed its health check") {
		t.Fatalf("cube run --wait (exit status %d): %v\n%s", exitStatus(err), err, out)
	}
	t.Logf("cube run --wait:\n%s", out)
	web := statusJSON("cli-web")
	if !web.Healthy || web.State != api.Running {
		t.Fatalf("after run --wait: %s, healthy %v", web.State, web.Healthy)
	}
	var states []string
	for _, e := range web.History {
		states = append(states, fmt.Sprintf("%s/%s", e.State, e.Reason))
		if e.Time.IsZero() {
			t.Errorf("a History entry without a time: %+v", e)
		}
	}
	rest := states
	for _, want := range []string{"Pending/submitted", "Scheduled/", "Running/", "Running/passed its health check"} {
		i := slices.Index(rest, want)
		if i < 0 {
			t.Errorf("History %q lacks %q (after the entries before it)", states, want)
			break
		}
		rest = rest[i+1:]
	}
	out, err = c.Cube("status", "cli-web")
	if err != nil || !strings.Contains(out, "History (oldest first") || !strings.Contains(out, "passed its health check") || !strings.Contains(out, "Health:") {
		t.Errorf("cube status cli-web: %v\n%s", err, out)
	}
	out, err = c.Cube("status", "-o", "wide")
	if err != nil || !strings.Contains(out, "HEALTH") || !strings.Contains(out, web.ContainerID) || !strings.Contains(out, "healthy") {
		t.Errorf("cube status -o wide: %v\n%s", err, out)
	}

	// Every manager holds the same History, a follower included.
	for _, m := range c.Managers {
		testkit.Eventually(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := c.ClientOf(api.ClientOptions{RetryFor: 5 * time.Second}, m).Task(ctx, web.ID, false)
			if err != nil {
				return err
			}
			a, _ := json.Marshal(got.History)
			b, _ := json.Marshal(web.History)
			if string(a) != string(b) || got.Healthy != web.Healthy {
				return fmt.Errorf("%s holds History %s, healthy %v; the leader %s", m.Name, a, got.Healthy, b)
			}
			return nil
		})
	}

	// run --wait of a task that fails at start, not to be restarted: 3.
	// (With a health check: without one, Running is all Cube knows, and
	// --wait would be done at the first Running.)
	out, err = c.Cube("run", "-f", taskJSON("cli-crash", `, "HealthCheck": "/health", "Env": ["ECHO_EXIT_AT_START=1"], "RestartPolicy": "no"`), "--wait", "--timeout", "3m")
	if exitStatus(err) != 3 || !strings.Contains(out, "ended before it ran: Failed") || !strings.Contains(out, "exited with code 1") {
		t.Errorf("cube run --wait of a crashing task: exit status %d, want 3\n%s", exitStatus(err), out)
	}
	// run --wait of a task no worker can take: 4, with the reason.
	out, err = c.Cube("run", "-f", taskJSON("cli-nowhere", ""), "--constraint", "zone==nowhere", "--wait", "--timeout", "5s")
	if exitStatus(err) != 4 || !strings.Contains(out, "is not running after 5s: Pending: no worker meets zone==nowhere") {
		t.Errorf("cube run --wait of a task no worker meets: exit status %d, want 4\n%s", exitStatus(err), out)
	}
	// A task the cluster refuses: 2.
	out, err = c.Cube("run", "-f", taskJSON("cli-bad", `, "HealthCheck": "/health", "HealthCheckInterval": "soon"`), "--wait")
	if exitStatus(err) != 2 {
		t.Errorf("cube run --wait of an invalid task: exit status %d, want 2\n%s", exitStatus(err), out)
	}

	// Dynamic completion against the cluster, as a shell asks for it: the
	// word to complete last, after -m.
	var addrs []string
	for _, m := range c.Managers {
		addrs = append(addrs, m.HTTPAddr)
	}
	complete := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		words := append(append([]string{"__complete"}, args[:len(args)-1]...), "-m", strings.Join(addrs, ","), args[len(args)-1])
		out, err := c.CubeCommand(ctx, words...).Output()
		if err != nil {
			t.Fatalf("cube %q: %v\n%s", words, err, out)
		}
		return string(out)
	}
	if out := complete("status", ""); !strings.Contains(out, web.ID.String()+"\t") || !strings.Contains(out, "cli-web\t") || !strings.Contains(out, ":4\n") {
		t.Errorf("cube __complete status \"\":\n%s", out)
	}
	if out := complete("stop", "cli-"); !strings.Contains(out, "cli-web\t") || strings.Contains(out, "cli-crash") {
		t.Errorf("cube __complete stop cli- (a task that ended has nothing to stop):\n%s", out)
	}
	for _, w := range c.Workers {
		if out := complete("node", "drain", ""); !strings.Contains(out, w.Name+"\t") {
			t.Errorf("cube __complete node drain \"\" lacks %s:\n%s", w.Name, out)
		}
	}

	// logs -f: the output as it comes, until the task ends (cube stop).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	follow := c.CubeCommand(ctx, "logs", "-f", "cli-web", "-m", strings.Join(addrs, ","))
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	follow.Stderr = &stderr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	var linesMu sync.Mutex
	started := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			linesMu.Lock()
			lines = append(lines, sc.Text())
			linesMu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(started) })
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatalf("cube logs -f printed no start line within 60 s; stderr:\n%s", stderr.String())
	}
	if out, err := c.Cube("stop", "cli-web"); err != nil {
		t.Fatalf("cube stop: %v\n%s", err, out)
	}
	<-read
	if err := follow.Wait(); err != nil {
		t.Fatalf("cube logs -f after the task ended: %v; stderr:\n%s", err, stderr.String())
	}
	linesMu.Lock()
	last := lines[len(lines)-1]
	linesMu.Unlock()
	if !strings.Contains(last, "stopped") || !strings.Contains(stderr.String(), "ended: Completed") {
		t.Errorf("cube logs -f: last line %q (want the container's last, written as it stopped), stderr %q", last, stderr.String())
	}

	// node drain --wait: returns once the worker holds no task.
	out, err = c.Cube("run", "-f", taskJSON("cli-move", ""), "--wait", "--timeout", "3m")
	if err != nil {
		t.Fatalf("cube run --wait: %v\n%s", err, out)
	}
	move := statusJSON("cli-move")
	out, err = c.Cube("node", "drain", move.Worker, "--wait", "--timeout", "3m")
	if exitStatus(err) != 0 || !strings.Contains(out, "worker "+move.Worker+" is drained: no task is placed on it") {
		t.Fatalf("cube node drain --wait: exit status %d\n%s", exitStatus(err), out)
	}
	if moved := statusJSON("cli-move"); moved.Worker == move.Worker || moved.LastWorker != move.Worker {
		t.Errorf("after drain --wait, cli-move is on %q (before: %q), want off %s", moved.Worker, moved.LastWorker, move.Worker)
	}
	if out, err := c.Cube("node", "undrain", move.Worker); err != nil {
		t.Fatalf("cube node undrain: %v\n%s", err, out)
	}

	// status --watch: snapshots one after the other, until SIGINT, exit 0.
	watch := c.CubeCommand(ctx, "status", "--watch", "--interval", "300ms", "-m", strings.Join(addrs, ","))
	var watched testkit.SyncBuffer
	watch.Stdout, watch.Stderr = &watched, &watched
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		if n := strings.Count(watched.String(), "=== "); n < 3 {
			return fmt.Errorf("%d snapshot(s) so far", n)
		}
		return nil
	})
	_ = watch.Process.Signal(syscall.SIGINT)
	if err := watch.Wait(); err != nil {
		t.Fatalf("cube status --watch after SIGINT: %v\n%s", err, watched.String())
	}
	if text := watched.String(); strings.Contains(text, "\x1b") || !strings.Contains(text, "cli-move") {
		t.Errorf("cube status --watch into a pipe:\n%q", text)
	}
}

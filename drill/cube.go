package drill

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/security"
	"github.com/google/uuid"
)

// Cube talks to Cube on the machines: its API through the managers'
// addresses, its containers through each worker machine's own engine.
type Cube struct {
	ms *Machines
	cl *api.Client
	hc *http.Client
	// direct has one client per manager machine, for questions to that one.
	direct map[string]*api.Client
}

// callTimeout bounds one API call of the drill; a call that fails is retried
// by the drill's own loops, so the client itself does not retry for long.
const callTimeout = 2 * time.Second

// credentials returns the client options that carry the machines' operator
// token and client certificate (scripts/machine-credentials.sh made them).
// Managers are verified by role (manager.cube), not by address: the drill's
// machines may sit on another subnet than machines.json names.
func credentials(root string) (api.ClientOptions, error) {
	dir := filepath.Join(root, "bin", "machine")
	tok, err := security.ReadTokenFile(filepath.Join(dir, "operator.token"))
	if err != nil {
		return api.ClientOptions{}, fmt.Errorf("machine credentials (make machine-files makes them): %w", err)
	}
	cfg, err := security.ClientTLS(filepath.Join(dir, "tls", security.CACertFile),
		filepath.Join(dir, "tls", "client-operator.pem"), filepath.Join(dir, "tls", "client-operator-key.pem"))
	if err != nil {
		return api.ClientOptions{}, fmt.Errorf("machine credentials (make machine-files makes them): %w", err)
	}
	cfg.ServerName = security.ServerName(security.RoleManager)
	return api.ClientOptions{Token: tok, TLS: cfg}, nil
}

// NewCube returns a client of the Cube on ms.
func NewCube(ms *Machines) (*Cube, error) {
	var addrs []string
	for _, m := range ms.Spec.Names("manager") {
		addrs = append(addrs, ms.Spec.Addr(m)+":5556")
	}
	creds, err := credentials(ms.Root)
	if err != nil {
		return nil, err
	}
	opts := creds
	opts.Timeout, opts.RetryFor = callTimeout, time.Second
	cl, err := api.NewClient(addrs, opts)
	if err != nil {
		return nil, err
	}
	c := &Cube{ms: ms, cl: cl, hc: &http.Client{Timeout: time.Second}, direct: map[string]*api.Client{}}
	for _, m := range ms.Spec.Names("manager") {
		opts := creds
		opts.Timeout, opts.RetryFor = 300*time.Millisecond, time.Millisecond
		d, err := api.NewClient([]string{ms.Spec.Addr(m) + ":5556"}, opts)
		if err != nil {
			return nil, err
		}
		c.direct[m] = d
	}
	return c, nil
}

// echoTask is the drills' task: the echo image with a health check, on a
// random host port of its worker.
func echoTask(name string) api.Task {
	return api.Task{ID: uuid.New(), Name: name, Image: "cube-echo:latest",
		ExposedPorts: api.PortSet{"7777/tcp": {}}, HealthCheck: "/health"}
}

func (c *Cube) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, callTimeout+time.Second)
}

// Leader names the leader's machine, "" when none is known.
func (c *Cube) Leader(ctx context.Context) string {
	cctx, cancel := c.ctx(ctx)
	defer cancel()
	ci, err := c.cl.Cluster(cctx)
	if err != nil {
		return ""
	}
	return ci.LeaderID
}

// clusterOf asks one manager's /cluster directly (no forwarding, no retry).
func (c *Cube) clusterOf(ctx context.Context, manager string) (api.ClusterInfo, error) {
	var ci api.ClusterInfo
	cl, ok := c.direct[manager]
	if !ok {
		return ci, fmt.Errorf("no manager %s", manager)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	return cl.Cluster(cctx)
}

// Submit submits a task once; a manager's 2xx acknowledges it. Submitting
// the same task again is safe (the ID makes it idempotent).
func (c *Cube) Submit(ctx context.Context, t api.Task) (api.Task, error) {
	cctx, cancel := c.ctx(ctx)
	defer cancel()
	got, _, err := c.cl.SubmitTask(cctx, api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now(), Task: t})
	return got, err
}

// Ready waits until a leader is elected and every worker of the spec is
// alive, with nothing of the managers' own to do (drain off).
func (c *Cube) Ready(ctx context.Context, within time.Duration) error {
	return poll(ctx, within, 200*time.Millisecond, func() error {
		if c.Leader(ctx) == "" {
			return errors.New("no leader")
		}
		cctx, cancel := c.ctx(ctx)
		defer cancel()
		nodes, err := c.cl.Nodes(cctx, true)
		if err != nil {
			return err
		}
		alive := map[string]bool{}
		for _, n := range nodes {
			alive[n.Name] = n.State == "alive" && n.RuntimeAvailable
		}
		for _, w := range c.ms.Spec.Names("worker") {
			if !alive[w] {
				return fmt.Errorf("worker %s is not alive with its engine", w)
			}
		}
		return nil
	})
}

// Tasks returns the tasks by ID (a consistent read).
func (c *Cube) Tasks(ctx context.Context) (map[uuid.UUID]api.Task, error) {
	cctx, cancel := c.ctx(ctx)
	defer cancel()
	ts, err := c.cl.Tasks(cctx, true)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]api.Task, len(ts))
	for _, t := range ts {
		out[t.ID] = t
	}
	return out, nil
}

// hostPort is the host port a task's 7777/tcp was published on.
func hostPort(t api.Task) string {
	for _, b := range t.HostPorts["7777/tcp"] {
		if !strings.Contains(b.HostIp, ":") {
			return b.HostPort
		}
	}
	return ""
}

// Answers reports whether the task's container answers /health at its
// worker machine's address.
func (c *Cube) Answers(ctx context.Context, t api.Task) bool {
	addr := c.ms.Spec.Addr(t.Worker)
	port := hostPort(t)
	if addr == "" || port == "" {
		return false
	}
	return answers(ctx, c.hc, "http://"+addr+":"+port+"/health")
}

func answers(ctx context.Context, hc *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Crash makes a task's container exit (the echo image's POST /crash).
func (c *Cube) Crash(ctx context.Context, t api.Task) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+c.ms.Spec.Addr(t.Worker)+":"+hostPort(t)+"/crash", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// The container may die before it answers.
		return nil
	}
	resp.Body.Close()
	return nil
}

// WaitServing waits until every task is Running, placed by a generation
// above the one in before (when before has it), not on any machine in
// avoid, and answering. It returns when the last one answered.
func (c *Cube) WaitServing(ctx context.Context, within time.Duration, ids []uuid.UUID, before map[uuid.UUID]api.Task, avoid ...string) (time.Time, map[uuid.UUID]api.Task, error) {
	serving := map[uuid.UUID]api.Task{}
	var last time.Time
	err := poll(ctx, within, 20*time.Millisecond, func() error {
		for _, id := range ids {
			if _, ok := serving[id]; ok {
				continue
			}
			// One task at a time: the whole list grows with every trial,
			// and on drill 7's lossy link (about 25 KB/s of TCP) reading
			// it took longer than a call's timeout.
			cctx, cancel := c.ctx(ctx)
			t, err := c.cl.Task(cctx, id, true)
			cancel()
			if err != nil {
				return fmt.Errorf("task %s: %w", id, err)
			}
			if t.State != api.Running || contains(avoid, t.Worker) {
				return fmt.Errorf("task %s is %s on %s", t.Name, t.State, t.Worker)
			}
			if b, ok := before[id]; ok && t.Generation <= b.Generation && t.RestartCount <= b.RestartCount {
				return fmt.Errorf("task %s not replaced yet (generation %d)", t.Name, t.Generation)
			}
			if !c.Answers(ctx, t) {
				return fmt.Errorf("task %s does not answer on %s", t.Name, t.Worker)
			}
			serving[id] = t
			last = time.Now()
		}
		return nil
	})
	return last, serving, err
}

// Containers counts the running task containers per task on every running
// worker machine's own engine, and the machines it could not ask.
func (c *Cube) Containers(ctx context.Context) (map[uuid.UUID][]string, error) {
	out := map[uuid.UUID][]string{}
	for _, w := range c.ms.Spec.Names("worker") {
		if !c.ms.Running(ctx, w) {
			continue
		}
		lines, err := c.ms.Exec(ctx, w, "docker", "ps", "--filter", "label=cube.task", "--format", `{{.Label "cube.task"}}`)
		if err != nil {
			return nil, fmt.Errorf("engine of %s: %w", w, err)
		}
		for _, l := range strings.Fields(lines) {
			id, err := uuid.Parse(l)
			if err != nil {
				continue
			}
			out[id] = append(out[id], w)
		}
	}
	return out, nil
}

// Verdict is what the invariants found after a trial converged.
type Verdict struct {
	// Lost counts acknowledged tasks that are unknown or not Running.
	Lost int
	// Duplicates counts tasks with more than one running container over
	// all machines' engines; Missing those Running with none.
	Duplicates int
	Missing    int
	// Detail says which, when any is not zero.
	Detail string
}

// Check waits (up to within) for the acknowledged tasks to converge: each
// known, Running and with exactly one running container on the machines'
// engines. It returns what it saw last.
func (c *Cube) Check(ctx context.Context, within time.Duration, acked []uuid.UUID) (Verdict, error) {
	var v Verdict
	err := poll(ctx, within, 500*time.Millisecond, func() error {
		v = Verdict{}
		ts, err := c.Tasks(ctx)
		if err != nil {
			return err
		}
		cs, err := c.Containers(ctx)
		if err != nil {
			return err
		}
		var detail []string
		for _, id := range acked {
			t, ok := ts[id]
			switch {
			case !ok || t.State != api.Running:
				v.Lost++
				detail = append(detail, fmt.Sprintf("%s: %s %s", id, t.State, t.Reason))
			case len(cs[id]) > 1:
				v.Duplicates++
				detail = append(detail, fmt.Sprintf("%s: running on %v", t.Name, cs[id]))
			case len(cs[id]) == 0:
				v.Missing++
				detail = append(detail, fmt.Sprintf("%s: Running on %s but no container", t.Name, t.Worker))
			}
		}
		// A container of no acknowledged task still running is a duplicate
		// too when its task is not Running (a stopped task's copy).
		for id, where := range cs {
			if t, ok := ts[id]; ok && t.State != api.Running && t.State != api.Scheduled {
				v.Duplicates++
				detail = append(detail, fmt.Sprintf("%s is %s but runs on %v", t.Name, t.State, where))
			}
		}
		sort.Strings(detail)
		v.Detail = strings.Join(detail, "; ")
		if v.Lost+v.Duplicates+v.Missing > 0 {
			return errors.New(v.Detail)
		}
		return nil
	})
	if ctx.Err() != nil {
		return v, ctx.Err()
	}
	if err != nil && v.Lost+v.Duplicates+v.Missing == 0 {
		return v, err
	}
	return v, nil
}

// StopAll stops the tasks (best effort: the next trial starts clean).
func (c *Cube) StopAll(ctx context.Context, ids []uuid.UUID) {
	for _, id := range ids {
		cctx, cancel := c.ctx(ctx)
		_, _ = c.cl.StopTask(cctx, id)
		cancel()
	}
	_ = poll(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		cs, err := c.Containers(ctx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if len(cs[id]) > 0 {
				return fmt.Errorf("task %s still runs", id)
			}
		}
		return nil
	})
}

// poll calls fn every interval until it returns nil, within is over or ctx
// ends; it returns fn's last error.
func poll(ctx context.Context, within, interval time.Duration, fn func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

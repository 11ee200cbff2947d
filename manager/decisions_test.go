package manager

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
	"github.com/google/uuid"
)

// decision is one row of the leader loop's decisions (manager/DESIGN.md):
// the replicated state and the workers' answers in (given), one pass of the
// loop (drive, a reconcile pass by default), the commands committed and the
// worker calls made out, both sorted.
type decision struct {
	name   string
	config func(*Config)
	given  func(h *harness)
	drive  func(h *harness)
	cmds   []string
	calls  []string
	check  func(h *harness) error // optional: the state after the pass
}

var decisions = []decision{
	// Placement.
	{
		name: "placement: a pending task goes to the emptiest worker and is dispatched",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t0", "w1", 1, api.Running, nil)
			h.submit("t1", nil)
		},
		cmds:  []string{"assign t1 to w2 gen 1"},
		calls: []string{"w2 submit t1 gen 1"},
	},
	{
		name: "placement: a task that fits nowhere waits with the reason",
		given: func(h *harness) {
			h.worker("w1")
			h.submit("t1", func(t *api.Task) { t.Cpu = 4 })
		},
		cmds: []string{"note t1: no worker has room for cpu 4.00, memory 0, disk 0 (w1: 2.00 cores free)"},
	},
	{
		name: "placement: never on a draining worker",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.seed(fsm.DrainWorker{Name: "w2", Drain: true})
			h.placed("t0", "w1", 1, api.Running, nil)
			h.submit("t1", nil)
		},
		cmds:  []string{"assign t1 to w1 gen 1"},
		calls: []string{"w1 submit t1 gen 1"},
	},
	// Host ports.
	{
		name: "host ports: tasks of one pass asking one static host port go to different workers; the one too many waits with the reason",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			base := time.Now().UTC()
			for i, name := range []string{"t1", "t2", "t3"} {
				h.seed(fsm.SubmitTask{Task: withPort(api.Task{ID: h.id(name), Name: name, Image: "cube-echo:latest"}, "7777/tcp", "7777"),
					Time: base.Add(time.Duration(i) * time.Second)})
			}
		},
		cmds: []string{"assign t1 to w1 gen 1", "assign t2 to w2 gen 1",
			"note t3: host port 7777/tcp is taken on every live worker (w1: task " + taskID("t1") + "; w2: task " + taskID("t2") + ")",
		},
		calls: []string{"w1 submit t1 gen 1", "w2 submit t2 gen 1"},
	},
	{
		name: "host ports: a pending task goes where its host port is free, though another worker is emptier",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t0", "w1", 1, api.Running, func(t *api.Task) { *t = withPort(*t, "80/tcp", "127.0.0.1:7777") })
			h.placed("t9", "w1", 1, api.Running, nil)
			h.placed("t8", "w2", 1, api.Running, nil)
			h.placed("t7", "w2", 1, api.Running, nil)
			h.placed("t6", "w2", 1, api.Running, nil)
			h.submit("t1", func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
		},
		cmds:  []string{"assign t1 to w2 gen 1"},
		calls: []string{"w2 submit t1 gen 1"},
	},
	{
		name: "host ports: a failed task whose port was taken on its worker meanwhile is restarted elsewhere",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t1", "w1", 1, api.Failed, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			h.placed("t2", "w1", 1, api.Running, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
		},
		cmds:  []string{"restart t1 on w2 gen 2 counted"},
		calls: []string{"w2 submit t1 gen 2"},
	},
	{
		name: "host ports: a task moved off a draining worker goes where its port is free",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.worker("w3")
			h.placed("t1", "w1", 1, api.Running, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			h.placed("t2", "w2", 1, api.Running, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			h.placed("t0", "w3", 1, api.Running, nil)
			h.seed(fsm.DrainWorker{Name: "w1", Drain: true})
		},
		cmds:  []string{"restart t1 on w3 gen 2"},
		calls: []string{"w1 stop t1 upto 1", "w3 submit t1 gen 2"},
	},
	{
		name: "host ports: a task that can move nowhere for its port stays on its draining worker",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t1", "w1", 1, api.Running, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			h.placed("t2", "w2", 1, api.Running, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			h.seed(fsm.DrainWorker{Name: "w1", Drain: true})
		},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "host ports: a start that failed for a taken host port is requeued, not counted, and placed on another worker",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			portClashed(h, "t1", "w1")
		},
		drive: func(h *harness) { h.pass(); h.pass() },
		cmds: []string{"requeue t1: host port 7777/tcp was taken on worker w1; placing it on another worker",
			"assign t1 to w2 gen 2"},
		calls: []string{"w2 submit t1 gen 2"},
		check: wantTask("t1", "w2", 2, api.Scheduled, 0),
	},
	{
		name: "host ports: a port taken on every worker's machine: the task waits with the reason",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			portClashed(h, "t1", "w1")
		},
		drive: func(h *harness) { h.pass(); h.pass() },
		cmds: []string{"requeue t1: host port 7777/tcp was taken on worker w1; placing it on another worker",
			"note t1: host port 7777/tcp is taken on every live worker (w1: something else on its machine (a start failed there))"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	{
		name:   "host ports: a worker is a candidate for the port again once the memory of the clash has passed",
		config: func(c *Config) { c.PortClashMemory = time.Nanosecond },
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { *t = withPort(*t, "7777/tcp", "7777") })
			portClashed(h, "t1", "w1")
		},
		drive: func(h *harness) { h.pass(); h.pass() },
		cmds: []string{"requeue t1: host port 7777/tcp was taken on worker w1; placing it on another worker",
			"assign t1 to w1 gen 2"},
		calls: []string{"w1 submit t1 gen 2"},
	},
	// Escalation: privileged mode, host network, host mounts, capabilities.
	{
		name: "escalation: a privileged task waits with the reason on a cluster whose workers allow nothing",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.submit("t1", func(t *api.Task) { t.Privileged = true })
		},
		cmds:  []string{"note t1: no worker allows privileged tasks (start a worker with --allow-privileged)"},
		check: wantTask("t1", "", 0, api.Pending, 0),
	},
	{
		name: "escalation: a task asking for NET_ADMIN goes to the one worker that allows it, though another is emptier",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			allow(h, "w2", "privileged", "cap:NET_ADMIN")
			h.placed("t0", "w2", 1, api.Running, nil)
			h.submit("t1", func(t *api.Task) { t.CapAdd = []string{"NET_ADMIN"} })
		},
		cmds:  []string{"assign t1 to w2 gen 1"},
		calls: []string{"w2 submit t1 gen 1"},
	},
	{
		name: "escalation: a mount goes only where its host path is under an allowed prefix",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			allow(h, "w1", "mount:/srv/data")
			allow(h, "w2", "mount:/srv")
			h.placed("t0", "w2", 1, api.Running, nil)
			h.submit("t1", func(t *api.Task) { t.Mounts = []string{"/srv/data2/x:/x"} })
		},
		cmds:  []string{"assign t1 to w2 gen 1"},
		calls: []string{"w2 submit t1 gen 1"},
	},
	{
		name: "escalation: workers allowing different parts of what a task asks: the reason names what each lacks",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			allow(h, "w1", "privileged")
			allow(h, "w2", "cap:NET_ADMIN")
			h.submit("t1", func(t *api.Task) { t.Privileged, t.CapAdd = true, []string{"NET_ADMIN"} })
		},
		cmds: []string{"note t1: no worker allows everything the task asks (w1 needs --allow-cap NET_ADMIN; w2 needs --allow-privileged)"},
	},
	{
		name: "escalation: a task its worker refused is restarted, counted, on a worker that allows it",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			allow(h, "w2", "host-network")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { t.NetworkMode = api.NetworkHost })
			refused(h, "t1", "w1")
		},
		cmds:  []string{"restart t1 on w2 gen 2 counted"},
		calls: []string{"w2 submit t1 gen 2"},
		check: wantTask("t1", "w2", 2, api.Scheduled, 1),
	},
	{
		name: "escalation: a task its worker refused, allowed nowhere, goes back to Pending and waits with the reason",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { t.NetworkMode = api.NetworkHost })
			refused(h, "t1", "w1")
		},
		drive: func(h *harness) { h.pass(); h.pass() },
		cmds: []string{"requeue t1: waiting for a worker with room after: " + refusedReason,
			"note t1: no worker allows host-network tasks (start a worker with --allow-host-network)"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	{
		name:   "escalation: a worker that refuses what it claims to allow is not retried in a hot loop: the second refusal waits for its back-off",
		config: func(c *Config) { c.RestartBase, c.RestartCap = time.Hour, time.Hour },
		given: func(h *harness) {
			h.worker("w1")
			allow(h, "w1", "host-network")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { t.NetworkMode = api.NetworkHost })
			refused(h, "t1", "w1")
			h.pass() // the first refusal: restarted at once, gen 2
			refused(h, "t1", "w1")
		},
		check: wantTask("t1", "w1", 2, api.Failed, 1),
	},
	// Dispatch.
	{
		name: "dispatch: the worker's answer (Scheduled) does not undo its own report, committed first, that the task runs",
		given: func(h *harness) {
			w := h.worker("w1")
			h.submit("t1", nil)
			w.onSubmit = func(t api.Task) {
				t.State, t.ContainerID, t.StartTime = api.Running, "c-t1", time.Now().UTC()
				h.seed(fsm.ReportTask{Task: t})
			}
		},
		cmds:  []string{"assign t1 to w1 gen 1"},
		calls: []string{"w1 submit t1 gen 1"},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "poll: a listing older than a report committed since (Scheduled, the task Running) changes nothing",
		given: func(h *harness) {
			w := h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			rec := w.records[h.id("t1")]
			rec.State, rec.ContainerID = api.Scheduled, ""
			w.records[h.id("t1")] = rec
		},
		drive: func(h *harness) { h.poll() },
		cmds:  nil,
		calls: []string{"w1 list"},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "dispatch: retried with back-off until the worker answers",
		given: func(h *harness) {
			h.worker("w1").failCalls = 2
			h.submit("t1", nil)
		},
		cmds:  []string{"assign t1 to w1 gen 1"},
		calls: []string{"w1 submit t1 gen 1", "w1 submit t1 gen 1", "w1 submit t1 gen 1"},
		check: func(h *harness) error {
			if h.l.sent[h.id("t1")] != 1 {
				return fmt.Errorf("sent %v, want t1 delivered at gen 1", h.l.sent)
			}
			return nil
		},
	},
	{
		name: "dispatch: refused as stale, placed above the generation the worker holds (its record)",
		given: func(h *harness) {
			h.worker("w1")
			t := h.submit("t1", nil)
			h.seed(fsm.AssignTask{ID: t.ID, Worker: "w1", Generation: 1})
			old := t
			old.Generation, old.State, old.ContainerID = 3, api.Running, "c-old"
			h.record("w1", old)
		},
		cmds:  []string{"restart t1 on w1 gen 4"},
		calls: []string{"w1 get t1", "w1 submit t1 gen 1", "w1 submit t1 gen 4"},
		check: wantTask("t1", "w1", 4, api.Scheduled, 0),
	},
	{
		name: "dispatch: refused by a worker that cleaned up the task, placed above the generation its answer names",
		given: func(h *harness) {
			w := h.worker("w1")
			t := h.submit("t1", nil)
			h.seed(fsm.AssignTask{ID: t.ID, Worker: "w1", Generation: 1})
			w.forgotten[t.ID] = 5
		},
		cmds:  []string{"restart t1 on w1 gen 6"},
		calls: []string{"w1 get t1", "w1 submit t1 gen 1", "w1 submit t1 gen 6"},
	},
	// Restart and back-off.
	{
		name: "restart: a failed task is restarted at once on its worker, counted",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Failed, nil)
		},
		cmds:  []string{"restart t1 on w1 gen 2 counted"},
		calls: []string{"w1 submit t1 gen 2"},
	},
	{
		name:   "restart: a second failure in a row waits for its back-off",
		config: func(c *Config) { c.RestartBase, c.RestartCap = time.Hour, time.Hour },
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Failed, nil)
			h.pass() // the first failure: restarted at once, gen 2
			h.observe("t1", "w1", 2, api.Running)
			h.observe("t1", "w1", 2, api.Failed)
		},
		check: wantTask("t1", "w1", 2, api.Failed, 1),
	},
	{
		name: "restart: at the limit the task is given up on",
		given: func(h *harness) {
			h.worker("w1")
			t := h.placed("t1", "w1", 1, api.Failed, func(t *api.Task) { t.MaxRestarts = 1 })
			h.seed(fsm.RestartTask{ID: t.ID, Worker: "w1", Generation: 2, Counted: true})
			h.observe("t1", "w1", 2, api.Failed)
		},
		cmds: []string{"give up t1: gave up after 1 restarts: exited with code 1"},
	},
	{
		name: "restart: policy \"no\" gives up at the first failure",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Failed, func(t *api.Task) { t.RestartPolicy = "no" })
		},
		cmds: []string{`give up t1: exited with code 1; restart policy is "no"`},
	},
	{
		name: "restart: a task to run whose placement was stopped on request (a stop the cluster did not ask for) runs again, not counted, though at its limit and with policy no",
		given: func(h *harness) {
			h.worker("w1")
			t := h.placed("t1", "w1", 1, api.Running, func(t *api.Task) { t.MaxRestarts, t.RestartPolicy = 1, "no" })
			h.seed(fsm.RestartTask{ID: t.ID, Worker: "w1", Generation: 2, Counted: true})
			h.observe("t1", "w1", 2, api.Running)
			stoppedOnRequest(h, "t1", "w1")
		},
		cmds:  []string{"restart t1 on w1 gen 3"},
		calls: []string{"w1 submit t1 gen 3"},
		check: wantTask("t1", "w1", 3, api.Scheduled, 1),
	},
	{
		name: "restart: a task stopped on request that was asked to stop is left as it ended",
		given: func(h *harness) {
			h.worker("w1")
			t := h.placed("t1", "w1", 1, api.Running, nil)
			h.seed(fsm.StopTask{ID: t.ID, Reason: api.ReasonStoppedOnRequest})
			stoppedOnRequest(h, "t1", "w1")
		},
		check: wantTask("t1", "w1", 1, api.Completed, 0),
	},
	{
		name: "restart: an unhealthy task is restarted on its worker, counted",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
		},
		drive: func(h *harness) {
			h.l.unhealthy(h.ctx, health.Result{TaskID: h.id("t1"), Generation: 1, Failures: 3, Reason: "GET /health returned 500"})
			h.settle()
		},
		cmds:  []string{"restart t1 on w1 gen 2 counted"},
		calls: []string{"w1 submit t1 gen 2"},
	},
	{
		name: "health: a passing check is committed once, for its placement",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, func(t *api.Task) { t.HealthCheck = "/health" })
		},
		drive: func(h *harness) {
			pass := health.Result{TaskID: h.id("t1"), Generation: 1, Healthy: true, At: time.Now()}
			h.l.healthy(h.ctx, pass)
			h.l.healthy(h.ctx, pass)                                                            // a new leader's checks pass again: no news
			h.l.healthy(h.ctx, health.Result{TaskID: h.id("t1"), Generation: 0, Healthy: true}) // an older placement's
			h.settle()
		},
		cmds: []string{"healthy t1 gen 1"},
		check: func(h *harness) error {
			if t := h.task("t1"); !t.Healthy || t.History[len(t.History)-1].Reason != "passed its health check" {
				return fmt.Errorf("t1 after its check passed: Healthy %v, History %+v", t.Healthy, t.History)
			}
			return nil
		},
	},
	{
		name: "health: a healthy task that fails its check is marked so, then restarted",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, func(t *api.Task) { t.HealthCheck = "/health" })
			h.seed(fsm.SetHealth{ID: h.id("t1"), Generation: 1, Healthy: true, Time: time.Now().UTC()})
		},
		drive: func(h *harness) {
			h.l.unhealthy(h.ctx, health.Result{TaskID: h.id("t1"), Generation: 1, Failures: 3, Reason: "GET /health returned 500"})
			h.settle()
		},
		cmds:  []string{"restart t1 on w1 gen 2 counted", "unhealthy t1 gen 1: GET /health returned 500"},
		calls: []string{"w1 submit t1 gen 2"},
		check: func(h *harness) error {
			t := h.task("t1")
			var reasons []string
			for _, e := range t.History {
				reasons = append(reasons, e.Reason)
			}
			want := "health check failed: GET /health returned 500"
			if t.Healthy || !slices.Contains(reasons, want) {
				return fmt.Errorf("t1: Healthy %v, History reasons %q; want %q among them", t.Healthy, reasons, want)
			}
			return nil
		},
	},
	// Lost worker and orphan probe.
	{
		name: "lost worker: a task that does not answer the probe is requeued",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.gossipState("w1", cluster.StateDead)
		},
		cmds:  []string{"requeue t1: worker w1 is dead; task does not answer: connection refused", "upsert w1 dead"},
		calls: []string{"probe t1"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	{
		name: "lost worker: a task that still answers is left for its worker to re-adopt",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.gossipState("w1", cluster.StateDead)
			h.answers["t1"] = true
		},
		cmds:  []string{"upsert w1 dead"},
		calls: []string{"probe t1"},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "lost worker: a task that cannot be probed stays while its dead worker's API says it runs",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.gossipState("w1", cluster.StateDead)
			h.unprobeable["t1"] = true
		},
		cmds:  []string{"upsert w1 dead"},
		calls: []string{"probe t1", "w1 list"},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "lost worker: a task that cannot be probed is requeued when its dead worker's API does not answer",
		given: func(h *harness) {
			h.worker("w1").failCalls = 1
			h.placed("t1", "w1", 1, api.Running, nil)
			h.gossipState("w1", cluster.StateDead)
			h.unprobeable["t1"] = true
		},
		cmds: []string{"requeue t1: worker w1 is dead; task cannot be probed (no published port), and its worker's API does not answer for it: worker w1: connection refused",
			"upsert w1 dead"},
		calls: []string{"probe t1", "w1 list"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	{
		name: "lost worker: the tasks that cannot be probed are asked about in one list of their worker",
		given: func(h *harness) {
			w := h.worker("w1")
			for _, n := range []string{"t1", "t2", "t3", "t4"} {
				h.placed(n, "w1", 1, api.Running, nil)
				h.unprobeable[n] = true
			}
			rec := w.records[h.id("t3")]
			rec.Generation = 2
			w.records[h.id("t3")] = rec
			delete(w.records, h.id("t4"))
			h.gossipState("w1", cluster.StateDead)
		},
		cmds: []string{
			"requeue t3: worker w1 is dead; task cannot be probed (no published port), and its worker holds generation 2, not 1",
			"requeue t4: worker w1 is dead; task cannot be probed (no published port), and its worker holds no record of it",
			"upsert w1 dead"},
		calls: []string{"probe t1", "probe t2", "probe t3", "probe t4", "w1 list"},
		check: func(h *harness) error {
			for _, want := range []struct {
				name, worker string
				state        api.State
			}{{"t1", "w1", api.Running}, {"t2", "w1", api.Running}, {"t3", "", api.Pending}, {"t4", "", api.Pending}} {
				if err := wantTask(want.name, want.worker, 1, want.state, 0)(h); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		name: "lost worker: a task that cannot be probed stays when its worker could not be asked (the leader's calls all in flight)",
		given: func(h *harness) {
			h.worker("w1").notSent = 1
			h.placed("t1", "w1", 1, api.Running, nil)
			h.gossipState("w1", cluster.StateDead)
			h.unprobeable["t1"] = true
		},
		cmds:  []string{"upsert w1 dead"},
		calls: []string{"probe t1"},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "lost worker: a task that cannot be probed is requeued when its worker holds a newer generation",
		given: func(h *harness) {
			w := h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			rec := w.records[h.id("t1")]
			rec.Generation = 2
			w.records[h.id("t1")] = rec
			h.gossipState("w1", cluster.StateDead)
			h.unprobeable["t1"] = true
		},
		cmds:  []string{"requeue t1: worker w1 is dead; task cannot be probed (no published port), and its worker holds generation 2, not 1", "upsert w1 dead"},
		calls: []string{"probe t1", "w1 list"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	{
		name: "lost worker: a task that cannot be probed on a worker without its runtime is requeued without asking the worker",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.gossip.mu.Lock()
			h.gossip.members[0].Meta.RuntimeDown = true
			h.gossip.mu.Unlock()
			h.unprobeable["t1"] = true
		},
		cmds:  []string{"requeue t1: worker w1 lost its container runtime; task cannot be probed (no published port)", "upsert w1 alive"},
		calls: []string{"probe t1"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	// Drain.
	{
		name: "drain: a task is moved off, not counted, and its old copy stopped",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.seed(fsm.DrainWorker{Name: "w1", Drain: true})
		},
		cmds:  []string{"restart t1 on w2 gen 2"},
		calls: []string{"w1 stop t1 upto 1", "w2 submit t1 gen 2"},
	},
	// Stop.
	{
		name: "stop: a requested stop is carried out, then the task committed Completed",
		given: func(h *harness) {
			h.worker("w1")
			t := h.placed("t1", "w1", 1, api.Running, nil)
			h.seed(fsm.StopTask{ID: t.ID, Reason: "stopped on request"})
		},
		cmds:  []string{"report t1 w1 gen 1 Completed"},
		calls: []string{"w1 stop t1 upto 1"},
	},
	// Leadership.
	{
		name: "leadership: a manager that is not the leader decides nothing",
		given: func(h *harness) {
			h.worker("w1")
			h.submit("t1", nil)
			h.raft.mu.Lock()
			h.raft.leader = false
			h.raft.mu.Unlock()
		},
	},
	// The poll: what workers hold against the replicated state.
	{
		name: "poll: a changed record is committed",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			rec := h.task("t1")
			rec.State, rec.ContainerID = api.Running, "c-t1"
			h.record("w1", rec)
		},
		drive: (*harness).poll,
		cmds:  []string{"report t1 w1 gen 1 Running"},
		calls: []string{"w1 list"},
	},
	{
		name: "poll: a record a worker rebuilt from a found container (its data lost) is adopted at its placement; the spec is kept",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, func(t *api.Task) { t.HealthCheck, t.MaxRestarts = "/health", 5 })
			h.l.sent[h.id("t1")] = 1
			h.record("w1", api.Task{ID: h.id("t1"), Image: "cube-echo:latest", Generation: 1, ContainerID: "c-found",
				State: api.Running, StartTime: time.Now().UTC()})
		},
		drive: (*harness).poll,
		cmds:  []string{"report t1 w1 gen 1 Running"},
		calls: []string{"w1 list"},
		check: func(h *harness) error {
			t := h.task("t1")
			if t.ContainerID != "c-found" || t.Name != "t1" || t.HealthCheck != "/health" || t.MaxRestarts != 5 {
				return fmt.Errorf("task after the found record: container %q name %q health check %q max restarts %d; want c-found and the spec kept",
					t.ContainerID, t.Name, t.HealthCheck, t.MaxRestarts)
			}
			return wantTask("t1", "w1", 1, api.Running, 0)(h)
		},
	},
	{
		name: "poll: a superseded copy is stopped, fenced by its generation",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			old := h.placed("t1", "w1", 1, api.Running, nil)
			h.seed(fsm.RestartTask{ID: old.ID, Worker: "w2", Generation: 2})
			h.observe("t1", "w2", 2, api.Running)
		},
		drive: (*harness).poll,
		calls: []string{"w1 list", "w1 stop t1 upto 1", "w2 list"},
	},
	{
		name: "poll: a task the cluster never heard of is stopped after a consistent read; an ended one is left",
		given: func(h *harness) {
			h.worker("w1")
			h.record("w1", api.Task{ID: h.id("x1"), Name: "x1", State: api.Running, Generation: 2, ContainerID: "c-x1"})
			h.record("w1", api.Task{ID: h.id("x2"), Name: "x2", State: api.Completed, Generation: 1})
		},
		drive: (*harness).poll,
		calls: []string{"w1 list", "w1 stop x1 upto 2"},
		check: wantReads(1),
	},
	{
		name: "poll: a higher generation on the task's own worker: placed above it, not counted",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			old := h.task("t1")
			old.Generation, old.ContainerID = 3, "c-old"
			h.record("w1", old)
		},
		drive: (*harness).poll,
		cmds:  []string{"restart t1 on w1 gen 4"},
		calls: []string{"w1 list", "w1 submit t1 gen 4"},
		check: wantTask("t1", "w1", 4, api.Scheduled, 0),
	},
	{
		name: "poll: a higher generation on another worker is stopped",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t1", "w2", 1, api.Running, nil)
			old := h.task("t1")
			old.Generation, old.ContainerID = 3, "c-old"
			h.record("w1", old)
		},
		drive: (*harness).poll,
		calls: []string{"w1 list", "w1 stop t1 upto 3", "w2 list"},
	},
	{
		name: "poll: a higher generation of a task that is not to run is stopped",
		given: func(h *harness) {
			h.worker("w1")
			t := h.placed("t1", "w1", 1, api.Running, nil)
			h.seed(fsm.StopTask{ID: t.ID})
			h.seed(fsm.ReportTask{Task: func() api.Task { x := h.task("t1"); x.State = api.Completed; return x }()})
			old := h.task("t1")
			old.Generation, old.State, old.ContainerID = 3, api.Running, "c-old"
			h.record("w1", old)
		},
		drive: (*harness).poll,
		calls: []string{"w1 list", "w1 stop t1 upto 3"},
	},
	{
		name: "poll: stale view: a manager that cannot confirm its view acts on no newer or unknown record",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			old := h.task("t1")
			old.Generation = 3
			h.record("w1", old)
			h.record("w1", api.Task{ID: h.id("x1"), State: api.Running, Generation: 2})
			h.raft.readErr = cluster.ErrNotLeader
		},
		drive: (*harness).poll,
		calls: []string{"w1 list"},
		check: wantReads(1),
	},
	{
		name: "poll: stale view: the consistent read catches the view up, and nothing is wrong",
		given: func(h *harness) {
			h.worker("w1")
			t := h.placed("t1", "w1", 1, api.Running, nil)
			newer := h.task("t1")
			newer.Generation, newer.State, newer.ContainerID = 2, api.Scheduled, ""
			h.record("w1", newer)
			h.raft.onRead = func(f *fsm.FSM) {
				f.ApplyCommand(fsm.RestartTask{ID: t.ID, Worker: "w1", Generation: 2, Counted: true})
			}
		},
		drive: (*harness).poll,
		calls: []string{"w1 list"},
		check: wantTask("t1", "w1", 2, api.Scheduled, 1),
	},
	{
		name: "poll: a worker without a record of a Running task (emptied data directory): requeued, not counted",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.forget("w1", "t1")
		},
		drive: (*harness).poll,
		cmds:  []string{"requeue t1: worker w1 has no record of it (its data may have been lost)"},
		calls: []string{"w1 list"},
		check: wantTask("t1", "", 1, api.Pending, 0),
	},
	{
		name: "poll: a worker without a record of a Scheduled task it acknowledged: requeued",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			h.forget("w1", "t1")
		},
		drive: (*harness).poll,
		cmds:  []string{"requeue t1: worker w1 has no record of it (its data may have been lost)"},
		calls: []string{"w1 list"},
	},
	{
		name: "poll: a Scheduled task not yet acknowledged is not lost (its dispatch may be in flight)",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.forget("w1", "t1")
		},
		drive: (*harness).poll,
		calls: []string{"w1 list"},
		check: wantTask("t1", "w1", 1, api.Scheduled, 0),
	},
	{
		name: "poll: a task moved on since the read is not requeued",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Running, nil)
			h.forget("w1", "t1")
		},
		drive: func(h *harness) {
			// The plan is read, then the task is restarted before the
			// worker's list comes back.
			nodes, tasks := h.f.Nodes(), h.f.Tasks()
			h.seed(fsm.RestartTask{ID: h.id("t1"), Worker: "w1", Generation: 2, Counted: true})
			h.l.startPoll(h.ctx, nodes, refs(tasks...))
			h.settle()
		},
		calls: []string{"w1 list"},
		check: wantTask("t1", "w1", 2, api.Scheduled, 1),
	},
	// Scheduled for too long (scheduled.go).
	{
		name: "scheduled: a delivered assignment within ScheduledTimeout is not sent again",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			scheduledFor(h, "t1", "w1", 1, 30*time.Second)
		},
		check: wantTask("t1", "w1", 1, api.Scheduled, 0),
	},
	{
		name: "scheduled: past ScheduledTimeout the assignment is sent again at the same generation, and the worker's record (Running, its report lost) is committed",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			rec := h.task("t1")
			rec.State, rec.ContainerID, rec.StartTime = api.Running, "c-t1", time.Now().UTC()
			h.record("w1", rec)
			scheduledFor(h, "t1", "w1", 1, time.Minute+time.Second)
		},
		cmds:  []string{"report t1 w1 gen 1 Running"},
		calls: []string{"w1 submit t1 gen 1"},
		check: wantTask("t1", "w1", 1, api.Running, 0),
	},
	{
		name: "scheduled: past ScheduledTimeout, a worker that lost the assignment gets it again, same generation",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			h.forget("w1", "t1")
			scheduledFor(h, "t1", "w1", 1, time.Minute+time.Second)
		},
		cmds:  []string{},
		calls: []string{"w1 submit t1 gen 1"},
		check: wantTask("t1", "w1", 1, api.Scheduled, 0),
	},
	{
		name: "scheduled: sent again once only; still Scheduled on the worker, nothing more before twice ScheduledTimeout",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			scheduledFor(h, "t1", "w1", 1, time.Minute+time.Second)
			w := h.l.scheduled[h.id("t1")]
			w.resent = true
			h.l.scheduled[h.id("t1")] = w
		},
		check: wantTask("t1", "w1", 1, api.Scheduled, 0),
	},
	{
		name: "scheduled: past twice ScheduledTimeout the task is requeued, not counted, and its copy stopped up to its generation",
		given: func(h *harness) {
			h.worker("w1")
			h.worker("w2")
			h.placed("t1", "w1", 1, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 1
			scheduledFor(h, "t1", "w1", 1, 2*time.Minute+time.Second)
		},
		cmds:  []string{"requeue t1: Scheduled on worker w1 for more than 2m0s without starting; placing it again"},
		calls: []string{"w1 stop t1 upto 1"},
		check: func(h *harness) error {
			if err := wantTask("t1", "", 1, api.Pending, 0)(h); err != nil {
				return err
			}
			if _, ok := h.l.scheduled[h.id("t1")]; ok {
				return fmt.Errorf("the watch of the requeued placement is kept")
			}
			return nil
		},
	},
	{
		name: "scheduled: a new placement starts a new clock",
		given: func(h *harness) {
			h.worker("w1")
			h.placed("t1", "w1", 2, api.Scheduled, nil)
			h.l.sent[h.id("t1")] = 2
			scheduledFor(h, "t1", "w1", 1, 3*time.Minute) // the old placement's clock
		},
		check: func(h *harness) error {
			w := h.l.scheduled[h.id("t1")]
			if w.gen != 2 || time.Since(w.since) > time.Minute {
				return fmt.Errorf("watch %+v: want generation 2, started now", w)
			}
			return wantTask("t1", "w1", 2, api.Scheduled, 0)(h)
		},
	},
}

// scheduledFor backdates the leader's watch of a Scheduled placement, as if
// it had seen it Scheduled for d (the harness runs FastConfig: a minute of
// ScheduledTimeout).
func scheduledFor(h *harness, name, worker string, gen uint64, d time.Duration) {
	h.l.scheduled[h.id(name)] = scheduledWatch{worker: worker, gen: gen, since: time.Now().Add(-d)}
}

// wantTask checks a task's placement, state and restart count after the pass.
// portClashed seeds a worker's report that the task's start failed because
// its host port was taken on the machine.
func portClashed(h *harness, name, worker string) {
	h.t.Helper()
	rec := h.task(name)
	rec.State, rec.FinishTime = api.Failed, time.Now().UTC()
	rec.Reason = api.ReasonHostPortTaken + "start container c1: Bind for 0.0.0.0:7777 failed: port is already allocated"
	h.seed(fsm.ReportTask{Task: rec})
	h.record(worker, rec)
}

// stoppedOnRequest seeds a worker's report that it stopped the task's
// current placement on request (its record after a DELETE).
func stoppedOnRequest(h *harness, name, worker string) {
	h.t.Helper()
	rec := h.task(name)
	rec.State, rec.Reason, rec.FinishTime = api.Completed, api.ReasonStoppedOnRequest, time.Now().UTC()
	h.seed(fsm.ReportTask{Task: rec})
	h.record(worker, rec)
}

// taskID is the ID the harness gives the task name (harness.id).
func taskID(name string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String()
}

func wantTask(name, worker string, gen uint64, state api.State, restarts int) func(*harness) error {
	return func(h *harness) error {
		t := h.task(name)
		if t.Worker != worker || t.Generation != gen || t.State != state || t.RestartCount != restarts {
			return fmt.Errorf("task %s is %s on %q gen %d restarts %d (%s); want %s on %q gen %d restarts %d",
				name, t.State, t.Worker, t.Generation, t.RestartCount, t.Reason, state, worker, gen, restarts)
		}
		return nil
	}
}

// wantReads checks the number of consistent reads.
func wantReads(n int) func(*harness) error {
	return func(h *harness) error {
		h.raft.mu.Lock()
		defer h.raft.mu.Unlock()
		if h.raft.reads != n {
			return fmt.Errorf("%d consistent reads, want %d", h.raft.reads, n)
		}
		return nil
	}
}

func TestLeaderDecisions(t *testing.T) {
	for _, d := range decisions {
		t.Run(d.name, func(t *testing.T) {
			h := newHarness(t, d.config)
			d.given(h)
			state := h.f.Tasks()
			h.reset()
			if d.drive != nil {
				d.drive(h)
			} else {
				h.pass()
			}
			gotCmds, gotCalls := h.commands(), h.calls()
			if !same(gotCmds, sorted(d.cmds)) || !same(gotCalls, sorted(d.calls)) {
				t.Errorf("state in:\n%s\ncommands out:\n%s\nwant:\n%s\nworker calls out:\n%s\nwant:\n%s",
					describeTasks(state), lines(gotCmds), lines(sorted(d.cmds)), lines(gotCalls), lines(sorted(d.calls)))
			}
			if d.check != nil {
				if err := d.check(h); err != nil {
					t.Errorf("state in:\n%s\nafter the pass: %v", describeTasks(state), err)
				}
			}
		})
	}
}

func describeTasks(ts []api.Task) string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s: %s (desired %s) on %q gen %d restarts %d %q", t.Name, t.State, t.DesiredState, t.Worker, t.Generation, t.RestartCount, t.Reason))
	}
	return lines(out)
}

// The whole loop, as followLeadership runs it: started on gaining leadership
// (after a barrier), it places and dispatches a submitted task on its own;
// stopped on losing it, it decides nothing more.
func TestLeaderLoop_RunsOnlyWhileLeading(t *testing.T) {
	h := newHarness(t, nil)
	h.worker("w1")
	h.raft.mu.Lock()
	h.raft.leader = false
	h.raft.mu.Unlock()
	h.m.Start()
	t.Cleanup(h.m.Shutdown)

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s; commands %q, calls %q", what, h.commands(), h.calls())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	h.raft.setLeader(true)
	waitFor("leading", h.m.Leading)
	if _, _, err := h.m.SubmitTask(h.ctx, api.TaskEvent{Task: api.Task{ID: h.id("t1"), Name: "t1", Image: "cube-echo:latest"}}); err != nil {
		t.Fatal(err)
	}
	waitFor("t1 dispatched to w1", func() bool {
		for _, c := range h.calls() {
			if c == "w1 submit t1 gen 1" {
				return true
			}
		}
		return false
	})

	h.raft.setLeader(false)
	waitFor("not leading", func() bool { return !h.m.Leading() })
	h.reset()
	h.seed(fsm.SubmitTask{Task: api.Task{ID: h.id("t2"), Name: "t2", Image: "cube-echo:latest"}})
	time.Sleep(200 * time.Millisecond)
	if cmds, calls := h.commands(), h.calls(); len(cmds) != 0 || len(calls) != 0 {
		t.Fatalf("a deposed leader acted: commands %q, calls %q", cmds, calls)
	}
}

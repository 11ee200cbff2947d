package test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// One end-to-end test per row of DESIGN §3 (behaviour under failure), on real
// `cube` processes (3 managers, 2–3 workers, --fast timings) and the real
// Docker engine. Each test asserts the outcome, logs how long it took from the
// fault to the observed outcome, and ends by checking the universal
// invariant: one running container per running task, none for the rest.

// Row "app fails at start-up": restarted with growing back-off, then Failed
// for good with the reason, RestartCount = the limit, and it stays Failed.
func TestRecovery_FailsAtStartBacksOffThenGivesUp(t *testing.T) {
	r := newRecRT(t, 2)
	ev := r.watch()
	time.Sleep(500 * time.Millisecond) // let the event stream connect

	task := echoTask("exit-at-start")
	task.HealthCheck = ""
	task.Env = []string{"ECHO_EXIT_AT_START=1"}
	submitted := time.Now()
	id := r.submit(task)

	final, _ := r.waitTask(id, recDeadline, func(x api.Task) error {
		if x.State != api.Failed || x.DesiredState != api.Failed {
			return fmt.Errorf("%s (desired %s), restarts %d, gen %d: %s", x.State, x.DesiredState, x.RestartCount, x.Generation, x.Reason)
		}
		return nil
	})
	t.Logf("submitted → Failed for good in %s: restarts %d, generation %d, reason %q", recSince(submitted), final.RestartCount, final.Generation, final.Reason)
	if final.RestartCount != 3 {
		t.Errorf("RestartCount %d, want 3 (the default limit)", final.RestartCount)
	}
	if !strings.Contains(final.Reason, "gave up after 3 restarts") || !strings.Contains(final.Reason, "exited with code 1") {
		t.Errorf("reason %q, want it to say it gave up after 3 restarts and the exit code 1", final.Reason)
	}
	if final.ExitCode != 1 {
		t.Errorf("ExitCode %d, want 1", final.ExitCode)
	}

	// Back-off from the committed changes: the wait between a generation's
	// failure and the next restart, and the gap between restarts.
	if _, ok := ev.waitFor(id, 30*time.Second, func(x api.Task) bool { return x.DesiredState == api.Failed }); !ok {
		t.Fatalf("the give-up was never streamed: %v; changes of the task: %v", ev, recReasons(ev.of(id)))
	}
	failedAt := map[uint64]time.Time{}
	placedAt := map[uint64]time.Time{}
	for _, c := range ev.of(id) {
		g := c.ch.Task.Generation
		if _, ok := placedAt[g]; !ok && c.ch.Task.State == api.Scheduled {
			placedAt[g] = c.at
		}
		if _, ok := failedAt[g]; !ok && c.ch.Task.State == api.Failed {
			failedAt[g] = c.at
		}
	}
	var waits, gaps []time.Duration
	for g := uint64(1); g <= final.Generation; g++ {
		if g > 1 {
			f, okf := failedAt[g-1]
			p, okp := placedAt[g]
			pp, okpp := placedAt[g-1]
			if !okf || !okp || !okpp {
				t.Fatalf("event stream misses the failure of gen %d or the placement of gen %d/%d: failed %v placed %v", g-1, g-1, g, failedAt, placedAt)
			}
			waits = append(waits, p.Sub(f).Round(time.Millisecond))
			gaps = append(gaps, p.Sub(pp).Round(time.Millisecond))
		}
	}
	t.Logf("failure → restart waits (back-off) %v; restart-to-restart gaps %v", waits, gaps)
	if len(waits) != 3 {
		t.Fatalf("%d restarts seen in the event stream, want 3", len(waits))
	}
	if waits[2] <= waits[0] {
		t.Errorf("back-off does not grow: waits %v (the last should exceed the first)", waits)
	}
	// The restart-to-restart gaps add container start-up time, whose noise on
	// a busy machine is as large as the back-off steps: logged, not asserted.

	// Failed for good: no further restart, no container.
	r.hold(id, 3*time.Second, func(x api.Task, cts []string) error {
		if x.State != api.Failed || x.RestartCount != 3 || x.Generation != final.Generation || len(cts) != 0 {
			return fmt.Errorf("after giving up: %s, restarts %d, gen %d (was %d), containers %v", x.State, x.RestartCount, x.Generation, final.Generation, cts)
		}
		return nil
	})
	r.converged()
}

// Row "app crashes later": a crash after a healthy run is restarted at once,
// in a new container, at a new generation, and answers again.
func TestRecovery_CrashIsRestarted(t *testing.T) {
	r := newRecRT(t, 2)
	id := r.submit(echoTask("crash-me"))
	before := r.waitRunning(id)[id]
	echo(t, before)
	recAfterHealthyRun(before)

	at := recCrash(t, before)
	after, _ := r.waitTask(id, recDeadline, func(x api.Task) error {
		if x.Generation <= before.Generation {
			return fmt.Errorf("still generation %d (%s): %s", x.Generation, x.State, x.Reason)
		}
		return recIsRunning(x)
	})
	running := recSince(at)
	echo(t, after)
	t.Logf("POST /crash → Running again (gen %d → %d, on %s) in %s, answering in %s", before.Generation, after.Generation, after.Worker, running, recSince(at))
	if after.RestartCount != 1 {
		t.Errorf("RestartCount %d, want 1", after.RestartCount)
	}
	if after.ContainerID == before.ContainerID {
		t.Errorf("container %s reused, want a new one", after.ContainerID)
	}
	if cts := r.c.Containers()[id.String()]; len(cts) != 1 || cts[0] != after.ContainerID {
		t.Errorf("running containers %v, want exactly [%s]", cts, after.ContainerID)
	}
	r.converged()
}

// Row "app unhealthy": a check that always fails restarts the task
// MaxRestarts times, then it is Failed with the check's words and no
// container is left; a task that turns unhealthy is restarted.
func TestRecovery_UnhealthyIsRestartedThenGivenUp(t *testing.T) {
	r := newRecRT(t, 2)
	ev := r.watch()
	time.Sleep(500 * time.Millisecond)

	hf := recFastChecks(echoTask("healthfail"))
	hf.HealthCheck = "/healthfail"
	ua := recFastChecks(echoTask("unhealthy-after-3s"))
	ua.Env = []string{"ECHO_UNHEALTHY_AFTER=3s"}
	submitted := time.Now()
	hfID := r.submit(hf)
	uaID := r.submit(ua)

	// ECHO_UNHEALTHY_AFTER=3s: restarted once it turns unhealthy.
	first := r.waitRunning(uaID)[uaID]
	unhealthyAt := first.StartTime.Add(3 * time.Second)
	restarted, _ := r.waitTask(uaID, recDeadline, func(x api.Task) error {
		if x.RestartCount < 1 || x.Generation <= first.Generation {
			return fmt.Errorf("not restarted yet: %s gen %d restarts %d", x.State, x.Generation, x.RestartCount)
		}
		return nil
	})
	c, found := ev.waitFor(uaID, 30*time.Second, func(x api.Task) bool {
		return x.Generation > first.Generation && strings.Contains(x.Reason, "health check")
	})
	why, whyAt := c.ch.Task.Reason, c.at
	if !found {
		t.Errorf("no committed change of %s gives a health-check reason for its restart; changes: %v; %v", uaID, recReasons(ev.of(uaID)), ev)
		r.streamDiag(r.c.Managers, uaID)
	} else {
		t.Logf("turned unhealthy → restart committed in %s (gen %d → %d, restarts %d): %q", whyAt.Sub(unhealthyAt).Round(time.Millisecond), first.Generation, restarted.Generation, restarted.RestartCount, why)
		if !strings.Contains(why, "GET /health returned 500") {
			t.Errorf("restart reason %q does not name the failed check", why)
		}
	}

	// /healthfail: restarted MaxRestarts times, then Failed for good.
	final, _ := r.waitTask(hfID, recDeadline, func(x api.Task) error {
		if x.State != api.Failed || x.DesiredState != api.Failed {
			return fmt.Errorf("%s (desired %s), restarts %d: %s", x.State, x.DesiredState, x.RestartCount, x.Reason)
		}
		return nil
	})
	gaveUp := time.Now()
	t.Logf("/healthfail: submitted → Failed in %s, restarts %d, reason %q", recSince(submitted), final.RestartCount, final.Reason)
	if final.RestartCount != 3 {
		t.Errorf("RestartCount %d, want 3", final.RestartCount)
	}
	if want := "gave up after 3 restarts: health check failed: GET /healthfail returned 500"; !strings.Contains(final.Reason, want) {
		t.Errorf("reason %q, want %q", final.Reason, want)
	}
	testkit.Eventually(t, recDeadline, func() error {
		if cts := r.c.Containers()[hfID.String()]; len(cts) != 0 {
			return fmt.Errorf("containers still running for the given-up task: %v", cts)
		}
		return nil
	})
	t.Logf("/healthfail: container gone %s after the task was seen Failed", recSince(gaveUp))
	r.hold(hfID, 2*time.Second, func(x api.Task, cts []string) error {
		if x.State != api.Failed || x.Generation != final.Generation || len(cts) != 0 {
			return fmt.Errorf("after giving up: %s gen %d, containers %v", x.State, x.Generation, cts)
		}
		return nil
	})
	r.converged()
}

func recReasons(cs []recChange) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("gen %d %s %q", c.ch.Task.Generation, c.ch.Task.State, c.ch.Task.Reason))
	}
	return out
}

// Row "not enough memory": a task no worker can hold waits Pending with a
// reason and is never dispatched, while a task that fits runs.
func TestRecovery_TooBigStaysPending(t *testing.T) {
	r := newRecRT(t, 2)
	big := echoTask("too-big")
	big.Memory = 1 << 50
	submitted := time.Now()
	id := r.submit(big)
	okID := r.submit(echoTask("fits"))

	got, _ := r.waitTask(id, recDeadline, func(x api.Task) error {
		if x.State != api.Pending || !strings.Contains(x.Reason, "no worker has room") {
			return fmt.Errorf("%s on %q: %q", x.State, x.Worker, x.Reason)
		}
		return nil
	})
	t.Logf("submitted → Pending with a reason in %s: %q", recSince(submitted), got.Reason)
	r.waitRunning(okID)
	r.hold(id, 4*time.Second, func(x api.Task, cts []string) error {
		if x.State != api.Pending || x.Worker != "" || x.Generation != 0 || x.ContainerID != "" || len(cts) != 0 {
			return fmt.Errorf("dispatched: %s on %q gen %d container %q, running %v", x.State, x.Worker, x.Generation, x.ContainerID, cts)
		}
		if !strings.Contains(x.Reason, "no worker has room") {
			return fmt.Errorf("reason changed to %q", x.Reason)
		}
		return nil
	})
	r.converged()
}

// Restart policies: "no" never restarts; exit 0 under on-failure is
// Completed; "always" restarts after exit 0 up to the limit.
func TestRecovery_RestartPolicies(t *testing.T) {
	r := newRecRT(t, 2)

	no := echoTask("policy-no")
	no.RestartPolicy = "no"
	noID := r.submit(no)

	done := echoTask("exit-0-on-failure")
	done.HealthCheck = ""
	done.Env = []string{"ECHO_EXIT_AT_START=0"}
	doneID := r.submit(done)

	always := echoTask("exit-0-always")
	always.HealthCheck = ""
	always.Env = []string{"ECHO_EXIT_AT_START=0"}
	always.RestartPolicy = "always"
	alwaysStart := time.Now()
	alwaysID := r.submit(always)

	// "no": a crash is final.
	before := r.waitRunning(noID)[noID]
	recAfterHealthyRun(before)
	at := recCrash(t, before)
	failed, _ := r.waitTask(noID, recDeadline, func(x api.Task) error {
		if x.State != api.Failed || x.DesiredState != api.Failed {
			return fmt.Errorf("%s (desired %s) gen %d: %s", x.State, x.DesiredState, x.Generation, x.Reason)
		}
		return nil
	})
	t.Logf(`policy "no": crash → Failed for good in %s: %q`, recSince(at), failed.Reason)
	if !strings.Contains(failed.Reason, `restart policy is "no"`) || !strings.Contains(failed.Reason, "exited with code 1") {
		t.Errorf("reason %q, want the exit code and the policy", failed.Reason)
	}
	if failed.RestartCount != 0 || failed.Generation != before.Generation {
		t.Errorf("restarted: restarts %d, gen %d → %d", failed.RestartCount, before.Generation, failed.Generation)
	}

	// exit 0 under on-failure: Completed, not restarted.
	completed, took := r.waitTask(doneID, recDeadline, func(x api.Task) error {
		if x.State != api.Completed {
			return fmt.Errorf("%s gen %d restarts %d: %s", x.State, x.Generation, x.RestartCount, x.Reason)
		}
		return nil
	})
	t.Logf("exit 0 under on-failure → Completed (seen after %s), desired %s, reason %q", took.Round(time.Millisecond), completed.DesiredState, completed.Reason)
	if completed.RestartCount != 0 || completed.Generation != 1 || completed.ExitCode != 0 {
		t.Errorf("Completed task: restarts %d, gen %d, exit code %d; want 0, 1, 0", completed.RestartCount, completed.Generation, completed.ExitCode)
	}

	// exit 0 under always: restarted to the limit, then given up.
	gaveUp, _ := r.waitTask(alwaysID, recDeadline, func(x api.Task) error {
		if x.State != api.Failed || x.DesiredState != api.Failed {
			return fmt.Errorf("%s (desired %s) restarts %d: %s", x.State, x.DesiredState, x.RestartCount, x.Reason)
		}
		return nil
	})
	t.Logf(`policy "always", exit 0: submitted → given up in %s after %d restarts: %q`, recSince(alwaysStart), gaveUp.RestartCount, gaveUp.Reason)
	if gaveUp.RestartCount != 3 || !strings.Contains(gaveUp.Reason, "gave up after 3 restarts") || !strings.Contains(gaveUp.Reason, "code 0") {
		t.Errorf("restarts %d, reason %q; want 3 and a give-up reason naming exit code 0", gaveUp.RestartCount, gaveUp.Reason)
	}

	// All three stay as they are.
	for _, c := range []struct {
		id    uuid.UUID
		state api.State
		gen   uint64
	}{{noID, api.Failed, failed.Generation}, {doneID, api.Completed, completed.Generation}, {alwaysID, api.Failed, gaveUp.Generation}} {
		r.hold(c.id, time.Second, func(x api.Task, cts []string) error {
			if x.State != c.state || x.Generation != c.gen || len(cts) != 0 {
				return fmt.Errorf("changed: %s gen %d (want %s gen %d), containers %v", x.State, x.Generation, c.state, c.gen, cts)
			}
			return nil
		})
	}
	r.converged()
}

// startTasks submits n echo tasks (default health check) and waits until
// they run.
func (r *recRT) startTasks(prefix string, n int) map[uuid.UUID]api.Task {
	r.t.Helper()
	var ids []uuid.UUID
	for i := 0; i < n; i++ {
		ids = append(ids, r.submit(echoTask(fmt.Sprintf("%s-%d", prefix, i))))
	}
	return r.waitRunning(ids...)
}

// waitMoved waits until each task runs on another worker than dead, at a
// higher generation, and checks what the move recorded.
func (r *recRT) waitMoved(before map[uuid.UUID]api.Task, ids []uuid.UUID, dead string, t0 time.Time) map[uuid.UUID]api.Task {
	r.t.Helper()
	out := map[uuid.UUID]api.Task{}
	for _, id := range ids {
		b := before[id]
		moved, _ := r.waitTask(id, recDeadline, func(x api.Task) error {
			if x.Worker == dead || x.Generation <= b.Generation {
				return fmt.Errorf("%s on %q gen %d: %s", x.State, x.Worker, x.Generation, x.Reason)
			}
			return recIsRunning(x)
		})
		r.t.Logf("task %.8s: Running on %s (gen %d → %d) %s after the fault", id, moved.Worker, b.Generation, moved.Generation, recSince(t0))
		if moved.LastWorker != dead {
			r.t.Errorf("task %s: LastWorker %q, want %q", id, moved.LastWorker, dead)
		}
		if moved.RestartCount != b.RestartCount {
			r.t.Errorf("task %s: RestartCount %d → %d; a lost worker's task must not count as a restart", id, b.RestartCount, moved.RestartCount)
		}
		out[id] = moved
	}
	return out
}

// unchanged checks that the tasks still run where and as they did.
func (r *recRT) unchanged(before map[uuid.UUID]api.Task, ids []uuid.UUID) {
	r.t.Helper()
	cts := r.c.Containers()
	for _, id := range ids {
		b, x := before[id], r.task(id)
		if x.State != api.Running || x.Worker != b.Worker || x.Generation != b.Generation || x.ContainerID != b.ContainerID || x.RestartCount != b.RestartCount {
			r.t.Errorf("task %s changed: %s on %s gen %d container %.12s restarts %d; was Running on %s gen %d container %.12s restarts %d",
				id, x.State, x.Worker, x.Generation, x.ContainerID, x.RestartCount, b.Worker, b.Generation, b.ContainerID, b.RestartCount)
		}
		if c := cts[id.String()]; len(c) != 1 || c[0] != b.ContainerID {
			r.t.Errorf("task %s: running containers %v, want [%s]", id, c, b.ContainerID)
		}
	}
}

// Row "machine crash": the worker process and its containers die; its tasks
// run on the other workers, at a higher generation, not counted as restarts.
func TestRecovery_WorkerMachineCrash(t *testing.T) {
	r := newRecRT(t, 3)
	before := r.startTasks("machine", 4)
	w := r.busiestWorker(before)
	lost := recTasksOn(before, w.Name)
	var kept []uuid.UUID
	for id := range before {
		if before[id].Worker != w.Name {
			kept = append(kept, id)
		}
	}

	t0 := time.Now()
	r.c.Kill(w)
	n := r.removeContainersOf(w)
	t.Logf("killed worker %s and removed its %d containers (%d tasks on it) in %s", w.Name, n, len(lost), recSince(t0))

	moved := r.waitMoved(before, lost, w.Name, t0)
	t.Logf("machine crash → all %d tasks Running elsewhere in %s", len(lost), recSince(t0))
	cts := r.c.Containers()
	for _, id := range lost {
		if c := cts[id.String()]; len(c) != 1 || c[0] != moved[id].ContainerID {
			t.Errorf("task %s: running containers %v, want [%s]", id, c, moved[id].ContainerID)
		}
	}
	echo(t, moved[lost[0]])
	r.unchanged(before, kept)
	r.converged()
}

// Row "worker process crash": the agent dies, its containers live on; nothing
// moves or restarts, and the restarted agent re-adopts them.
func TestRecovery_WorkerProcessCrash(t *testing.T) {
	r := newRecRT(t, 3)
	before := r.startTasks("agent", 4)
	var all []uuid.UUID
	for id := range before {
		all = append(all, id)
	}
	w := r.busiestWorker(before)
	ctsBefore := r.c.Containers()

	t0 := time.Now()
	r.c.Kill(w)
	t.Logf("killed worker process %s (%d tasks on it), containers untouched", w.Name, len(recTasksOn(before, w.Name)))
	// The worker is seen dead (gossip), its tasks are probed and left alone.
	r.waitWorkerState(w, api.NodeDead, t0)
	t.Logf("worker %s recorded not alive %s after the kill", w.Name, recSince(t0))
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		r.unchanged(before, all)
		if t.Failed() {
			t.FailNow()
		}
	}
	if fmt.Sprint(r.c.Containers()) != fmt.Sprint(ctsBefore) {
		t.Fatalf("containers changed while the worker was down: %v → %v", ctsBefore, r.c.Containers())
	}
	t.Logf("%s after the kill: every task still Running untouched", recSince(t0))

	t1 := time.Now()
	r.c.Start(w)
	r.waitWorkerState(w, api.NodeAlive, t1)
	t.Logf("worker %s restarted and recorded alive again in %s", w.Name, recSince(t1))
	// It re-adopted its containers: it holds its tasks, Running, same containers.
	testkit.Eventually(t, recDeadline, func() error {
		held := r.workerHolds(w)
		for _, id := range recTasksOn(before, w.Name) {
			h, ok := held[id]
			if !ok || h.State != api.Running || h.ContainerID != before[id].ContainerID || h.Generation != before[id].Generation {
				return fmt.Errorf("worker holds %s as %+v, want Running gen %d container %.12s", id, h, before[id].Generation, before[id].ContainerID)
			}
		}
		return nil
	})
	t.Logf("worker %s re-adopted its %d containers %s after its restart", w.Name, len(recTasksOn(before, w.Name)), recSince(t1))
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		r.unchanged(before, all)
		if t.Failed() {
			t.FailNow()
		}
	}
	if fmt.Sprint(r.c.Containers()) != fmt.Sprint(ctsBefore) {
		t.Fatalf("containers changed after the worker came back: %v → %v", ctsBefore, r.c.Containers())
	}
	echo(t, before[recTasksOn(before, w.Name)[0]])
	r.converged()
}

// Row "worker back after its tasks moved": the agent dies and its containers
// stop answering (docker pause), so the leader moves them; when the
// containers and the agent come back, the superseded copies are stopped.
func TestRecovery_WorkerBackAfterTasksMoved(t *testing.T) {
	r := newRecRT(t, 3)
	before := r.startTasks("back", 4)
	w := r.busiestWorker(before)
	lost := recTasksOn(before, w.Name)
	var old []string
	for _, id := range lost {
		old = append(old, before[id].ContainerID)
	}

	t0 := time.Now()
	r.c.Kill(w)
	r.pause(old, true)
	t.Logf("killed worker process %s and paused its %d containers", w.Name, len(old))
	moved := r.waitMoved(before, lost, w.Name, t0)
	t.Logf("unreachable tasks → Running elsewhere in %s", recSince(t0))

	t1 := time.Now()
	r.pause(old, false)
	testkit.Eventually(t, recDeadline, func() error {
		cts := r.c.Containers()
		for _, id := range lost {
			if len(cts[id.String()]) != 2 {
				return fmt.Errorf("task %s: running containers %v, want old and new", id, cts[id.String()])
			}
		}
		return nil
	})
	t.Logf("old copies running again next to the new ones (two per moved task)")
	r.c.Start(w)
	testkit.Eventually(t, recDeadline, func() error {
		cts := r.c.Containers()
		for _, id := range lost {
			if c := cts[id.String()]; len(c) != 1 || c[0] != moved[id].ContainerID {
				return fmt.Errorf("task %s: running containers %v, want only the new [%s]", id, c, moved[id].ContainerID)
			}
		}
		return nil
	})
	t.Logf("worker back → superseded copies stopped %s after the unpause", recSince(t1))
	r.c.WaitReady(len(r.c.Workers))
	r.unchanged(moved, lost)
	r.converged()
}

// Row "manager crash": with the leader SIGKILLed, the new leader restarts a
// crashed task and acts on a health check that fails after the failover.
func TestRecovery_LeaderKilledRecoveryGoesOn(t *testing.T) {
	r := newRecRT(t, 2)
	aID := r.submit(echoTask("crash-after-failover"))
	b := recFastChecks(echoTask("unhealthy-after-failover"))
	b.Env = []string{"ECHO_UNHEALTHY_AFTER=8s"}
	bID := r.submit(b)
	running := r.waitRunning(aID, bID)

	old := r.c.LeaderProc()
	killed := time.Now()
	r.c.Kill(old)
	r.use(r.others(old)...)
	next, took := r.newLeaderAmong(r.others(old), killed)
	t.Logf("leader %s SIGKILLed; %s leads after %s", old.Name, next.Name, took.Round(time.Millisecond))
	unhealthyAt := running[bID].StartTime.Add(8 * time.Second)
	if !killed.Before(unhealthyAt.Add(-2 * time.Second)) {
		t.Fatalf("too slow: the task turns unhealthy at %s, the leader was killed at %s", unhealthyAt, killed)
	}
	if x := r.task(bID); x.Generation != running[bID].Generation {
		t.Fatalf("task restarted before the failover: gen %d → %d", running[bID].Generation, x.Generation)
	}
	ev := r.watch()

	// A crash under the new leader.
	a := running[aID]
	recAfterHealthyRun(a)
	at := recCrash(t, a)
	after, _ := r.waitTask(aID, recDeadline, func(x api.Task) error {
		if x.Generation <= a.Generation {
			return fmt.Errorf("still gen %d %s: %s", x.Generation, x.State, x.Reason)
		}
		return recIsRunning(x)
	})
	echo(t, after)
	t.Logf("crash under the new leader → Running again (gen %d → %d) in %s", a.Generation, after.Generation, recSince(at))
	if after.RestartCount != 1 {
		t.Errorf("RestartCount %d, want 1", after.RestartCount)
	}

	// A health check failing after the failover.
	bb := running[bID]
	restarted, _ := r.waitTask(bID, recDeadline, func(x api.Task) error {
		if x.Generation <= bb.Generation || x.RestartCount < 1 {
			return fmt.Errorf("not restarted: gen %d %s", x.Generation, x.State)
		}
		return nil
	})
	c, found := ev.waitFor(bID, 30*time.Second, func(x api.Task) bool {
		return x.Generation > bb.Generation && strings.Contains(x.Reason, "health check failed")
	})
	why, whyAt := c.ch.Task.Reason, c.at
	if !found {
		t.Errorf("no committed restart of %s for a failed health check; its changes: %v; %v; those of the crashed task: %v", bID, recReasons(ev.of(bID)), ev, recReasons(ev.of(aID)))
		r.streamDiag(r.others(old), bID)
	} else {
		t.Logf("turned unhealthy after the failover → restarted by %s in %s (gen %d → %d): %q", next.Name, whyAt.Sub(unhealthyAt).Round(time.Millisecond), bb.Generation, restarted.Generation, why)
	}
	r.converged()
}

// Row "leader and a worker lost together": the new leader reschedules the
// dead worker's tasks using its own gossip view.
func TestRecovery_LeaderAndWorkerKilledTogether(t *testing.T) {
	r := newRecRT(t, 3)
	before := r.startTasks("both", 4)
	w := r.busiestWorker(before)
	lost := recTasksOn(before, w.Name)
	leader := r.c.LeaderProc()

	t0 := time.Now()
	recSignal(t, leader, syscall.SIGKILL)
	recSignal(t, w, syscall.SIGKILL)
	r.c.Kill(leader)
	r.c.Kill(w)
	n := r.removeContainersOf(w)
	t.Logf("SIGKILLed leader %s and worker %s, removed its %d containers (%d tasks), in %s", leader.Name, w.Name, n, len(lost), recSince(t0))
	r.use(r.others(leader)...)

	next, took := r.newLeaderAmong(r.others(leader), t0)
	t.Logf("%s leads %s after the kill", next.Name, took.Round(time.Millisecond))
	moved := r.waitMoved(before, lost, w.Name, t0)
	t.Logf("leader + worker loss → all %d tasks Running elsewhere in %s", len(lost), recSince(t0))
	echo(t, moved[lost[0]])
	r.converged()
}

// Row "partition isolating the leader" (a frozen leader): SIGSTOP the leader,
// let the others elect and change things, then SIGCONT it. It must not act on
// its stale state: it steps down, and every task runs once.
func TestRecovery_FrozenLeaderResumes(t *testing.T) {
	r := newRecRT(t, 3)
	before := r.startTasks("frozen", 3)
	var ids []uuid.UUID
	for id := range before {
		ids = append(ids, id)
	}
	crashID, stopID := ids[0], ids[1]
	recAfterHealthyRun(before[crashID])

	old := r.c.LeaderProc()
	frozen := time.Now()
	recSignal(t, old, syscall.SIGSTOP)
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			old.mu.Lock()
			if old.cmd != nil {
				_ = old.cmd.Process.Signal(syscall.SIGCONT)
			}
			old.mu.Unlock()
		}
	})
	r.use(r.others(old)...)
	next, took := r.newLeaderAmong(r.others(old), frozen)
	t.Logf("leader %s frozen (SIGSTOP); %s leads after %s", old.Name, next.Name, took.Round(time.Millisecond))

	// Changes the frozen leader does not know of: a restart at a new
	// generation, and a stop.
	at := recCrash(t, before[crashID])
	restarted, _ := r.waitTask(crashID, recDeadline, func(x api.Task) error {
		if x.Generation <= before[crashID].Generation {
			return fmt.Errorf("still gen %d %s", x.Generation, x.State)
		}
		return recIsRunning(x)
	})
	t.Logf("crash while the old leader is frozen → Running again (gen %d → %d) in %s", before[crashID].Generation, restarted.Generation, recSince(at))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := r.cl.StopTask(ctx, stopID)
	cancel()
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	r.waitTask(stopID, recDeadline, func(x api.Task) error {
		if x.State != api.Completed {
			return fmt.Errorf("%s", x.State)
		}
		return nil
	})

	if d := time.Until(frozen.Add(3 * time.Second)); d > 0 {
		time.Sleep(d) // frozen long enough for every timer of its to have expired
	}
	recSignal(t, old, syscall.SIGCONT)
	resumed = true
	t1 := time.Now()
	t.Logf("old leader resumed after %s frozen", recSince(frozen))

	// It steps down: every manager, itself included, names the new leader.
	testkit.Eventually(t, recDeadline, func() error {
		for _, m := range r.c.Managers {
			info, err := r.clusterInfo(m)
			if err != nil {
				return fmt.Errorf("%s: %v", m.Name, err)
			}
			if info.Leader != next.HTTPAddr {
				return fmt.Errorf("%s names leader %q, want %s (%s)", m.Name, info.Leader, next.Name, next.HTTPAddr)
			}
		}
		return nil
	})
	t.Logf("old leader %s follows %s %s after it resumed", old.Name, next.Name, recSince(t1))

	// It does not act on its stale view: for a few seconds nothing changes.
	want := map[uuid.UUID]api.Task{crashID: restarted, ids[2]: before[ids[2]]}
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		r.unchanged(want, []uuid.UUID{crashID, ids[2]})
		if x := r.task(stopID); x.State != api.Completed || len(r.c.Containers()[stopID.String()]) != 0 {
			t.Errorf("stopped task came back: %s, containers %v", x.State, r.c.Containers()[stopID.String()])
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	r.use(r.c.Managers...)
	if info, err := r.clusterInfo(old); err != nil || info.Leader != next.HTTPAddr {
		t.Errorf("old leader's view: %+v, %v", info, err)
	}
	r.converged()
}

// Visibility: `cube logs ID` through any manager, `cube events` streaming a
// submitted task's state changes.
func TestRecovery_LogsAndEventsCLI(t *testing.T) {
	r := newRecRT(t, 2)

	// cube events, against one manager, until interrupted.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out testkit.SyncBuffer
	cmd := r.c.CubeCommand(ctx, "events", "-m", r.c.Managers[1].HTTPAddr)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	testkit.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(out.String(), "INDEX") {
			return fmt.Errorf("no header yet: %q", out.String())
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // the header is printed before the stream connects

	submitted := time.Now()
	id := r.submit(echoTask("visible"))
	testkit.Eventually(t, recDeadline, func() error {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, id.String()) && strings.Contains(line, "Running") {
				return nil
			}
		}
		return fmt.Errorf("no Running line for %s yet:\n%s", id, out.String())
	})
	t.Logf("cube events printed the task Running %s after the submit", recSince(submitted))
	for _, state := range []string{"Pending", "Scheduled"} {
		found := false
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, id.String()) && strings.Contains(line, state) {
				found = true
			}
		}
		if !found {
			t.Errorf("cube events printed no %s line for %s:\n%s", state, id, out.String())
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("cube events after an interrupt: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		cancel()
		t.Errorf("cube events did not exit on an interrupt")
		<-exited
	}

	// cube logs through every manager.
	task := r.waitRunning(id)[id]
	// Every run of the race-enabled CLI lasts about 1 s more than its work:
	// the race runtime sleeps at exit (GORACE atexit_sleep_ms, 1000 by
	// default). The API call shows the time of the read itself.
	base := time.Now()
	if _, err := r.cl.Logs(context.Background(), id, 0); err != nil {
		t.Errorf("GET /tasks/%s/logs: %v", id, err)
	}
	t.Logf("for comparison, one GET /tasks/{id}/logs through the API client took %s", recSince(base))
	for _, m := range r.c.Managers {
		start := time.Now()
		calls, last := 0, time.Duration(0)
		testkit.Eventually(t, 30*time.Second, func() error {
			calls++
			t0 := time.Now()
			got, err := r.cubeVia(m, "logs", id.String())
			last = time.Since(t0)
			if err != nil || !strings.Contains(got, "listening on") {
				return fmt.Errorf("cube logs via %s: %v\n%s", m.Name, err, got)
			}
			return nil
		})
		t.Logf("cube logs via %s shows the start line (task on %s) in %s (%d calls, the last took %s)", m.Name, task.Worker, recSince(start), calls, last.Round(time.Millisecond))
	}
	r.converged()
}

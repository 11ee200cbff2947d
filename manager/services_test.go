package manager

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
)

// The leader's reconciliation of services, on the harness: passes of the
// loop against scripted workers, with the workers' reports of Running
// played by runAll.

func newServiceHarness(t *testing.T, workers int, tweak func(*Config)) *harness {
	h := newHarness(t, tweak)
	for i := 1; i <= workers; i++ {
		h.worker(fmt.Sprintf("w%d", i))
	}
	return h
}

func svc(count int, image string, edit func(*api.Service)) api.Service {
	s := api.Service{Name: "web", Count: count, Task: api.Task{Image: image},
		Update: api.UpdatePolicy{MaxParallel: 1, MinHealthyTime: "0s", HealthyDeadline: "1m"}}
	if edit != nil {
		edit(&s)
	}
	return s
}

// put commits a service as PUT /services/{name} does.
func (h *harness) put(s api.Service) api.Service {
	h.t.Helper()
	res := h.f.ApplyCommand(fsm.PutService{Service: s, Time: time.Now().UTC()})
	if res.Err != nil {
		h.t.Fatalf("put service: %v", res.Err)
	}
	return res.Service
}

func (h *harness) svc(name string) api.Service {
	h.t.Helper()
	s, ok := h.f.Service(name)
	if !ok {
		h.t.Fatalf("no service %s", name)
	}
	return s
}

// name registers readable names of the service tasks: "web.2@v1#0".
func (h *harness) nameServiceTasks() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.f.Tasks() {
		if t.Service == "" {
			continue
		}
		if _, ok := h.names[t.ID]; ok {
			continue
		}
		slot := slotOf(t.Service, t.Name)
		for inc := 0; inc < 100; inc++ {
			if serviceTaskID(t.Service, t.ServiceVersion, slot, inc) == t.ID {
				h.names[t.ID] = fmt.Sprintf("%s@v%d#%d", t.Name, t.ServiceVersion, inc)
			}
		}
	}
}

// runAll plays every worker's report that its Scheduled tasks run.
func (h *harness) runAll() {
	h.t.Helper()
	for _, t := range h.f.LiveTasks() {
		if t.State != api.Scheduled || t.DesiredState != api.Running {
			continue
		}
		rec := t
		rec.State, rec.ContainerID, rec.StartTime = api.Running, "c-"+t.ID.String()[:8], time.Now().UTC()
		h.seed(fsm.ReportTask{Task: rec})
		h.record(t.Worker, rec)
	}
}

// step is one pass, then the workers run what was placed.
func (h *harness) step() {
	h.pass()
	h.nameServiceTasks()
	h.runAll()
}

// live returns the service's live tasks (to run, not finished) by state.
func (h *harness) live(service string) (running, other []api.Task) {
	for _, t := range h.f.LiveTasks() {
		if t.Service != service || t.DesiredState != api.Running {
			continue
		}
		if t.State == api.Running {
			running = append(running, t)
		} else {
			other = append(other, t)
		}
	}
	return running, other
}

// versions describes the service's live tasks: "v1:2 v2:1".
func (h *harness) versions(service string) string {
	running, other := h.live(service)
	by := map[uint64]int{}
	for _, t := range append(running, other...) {
		by[t.ServiceVersion]++
	}
	var out []string
	for v, n := range by {
		out = append(out, fmt.Sprintf("v%d:%d", v, n))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// settleService steps until the service runs Count tasks of its current
// version, its version is healthy and no rollout runs, checking after each
// step that at least floor tasks run; it returns the steps taken.
func (h *harness) settleService(name string, floor int) int {
	h.t.Helper()
	for i := 1; i <= 40; i++ {
		h.step()
		running, _ := h.live(name)
		if len(running) < floor {
			h.t.Fatalf("step %d: %d tasks of %s run, below %d (%s)", i, len(running), name, floor, h.versions(name))
		}
		s := h.svc(name)
		if len(running) == s.Count && h.versions(name) == fmt.Sprintf("v%d:%d", s.Version, s.Count) &&
			s.History[versionIndex(s, s.Version)].Healthy && (s.Rollout == nil || s.Rollout.State != api.RolloutRunning) {
			return i
		}
	}
	h.t.Fatalf("service %s did not settle: %s, %+v", name, h.versions(name), h.svc(name).Rollout)
	return 0
}

// A service of 3 runs 3 tasks named by slot, spread over the workers,
// with restart policy always; its version is then marked healthy.
func TestServices_CountAndHealthy(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	h.put(svc(3, "cube-echo:1", nil))
	h.pass()
	h.nameServiceTasks()
	if got := h.commands(); !same(got, []string{"submit web.1@v1#0", "submit web.2@v1#0", "submit web.3@v1#0"}) {
		t.Fatalf("first pass:\n%s", lines(got))
	}
	h.settleService("web", 0)
	running, _ := h.live("web")
	workers := map[string]bool{}
	for _, task := range running {
		workers[task.Worker] = true
		if task.RestartPolicy != "always" || task.Service != "web" || task.ServiceVersion != 1 {
			t.Errorf("task %s: policy %q service %q version %d", task.Name, task.RestartPolicy, task.Service, task.ServiceVersion)
		}
	}
	if len(workers) != 3 {
		t.Errorf("3 tasks on %d workers: %v", len(workers), workers)
	}
	// Settled: a pass commits nothing.
	h.reset()
	h.pass()
	if got := h.commands(); len(got) != 0 {
		t.Fatalf("a settled service's pass committed:\n%s", lines(got))
	}
}

// Submissions whose answers were lost, and a new leader deciding again,
// never make more than Count tasks: the IDs are the same.
func TestServices_IdempotentAcrossRetriesAndLeaders(t *testing.T) {
	h := newServiceHarness(t, 2, nil)
	h.put(svc(3, "cube-echo:1", nil))
	h.raft.mu.Lock()
	h.raft.lose = func(cmd any) bool { _, ok := cmd.(fsm.SubmitTask); return ok }
	h.raft.mu.Unlock()
	h.pass() // the first submission commits, its answer is lost: the pass stops there
	h.pass()
	h.raft.mu.Lock()
	h.raft.lose = nil
	h.raft.mu.Unlock()
	// A new leader, knowing nothing of the old one's decisions.
	h.l.end()
	h.l = newLoop(h.m)
	h.l.lastPoll = time.Now()
	h.l.begin(h.ctx)
	h.settleService("web", 0)
	if n := len(h.f.Tasks()); n != 3 {
		t.Fatalf("%d tasks stored, want 3", n)
	}
}

// Scale 3 → 6 → 2: up at once, then down, stopping the tasks not yet
// running first.
func TestServices_Scale(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	h.put(svc(3, "cube-echo:1", nil))
	h.settleService("web", 0)
	h.put(svc(6, "cube-echo:1", nil))
	h.pass() // three more submitted, Pending
	if _, other := h.live("web"); len(other) != 3 {
		t.Fatalf("after scale to 6: %d tasks not running, want 3 Pending", len(other))
	}
	if s := h.svc("web"); s.Version != 1 || s.Rollout != nil {
		t.Fatalf("a Count change made a rollout: %+v", s)
	}
	h.put(svc(2, "cube-echo:1", nil))
	h.reset()
	h.pass()
	running, other := h.live("web")
	if len(running) != 2 || len(other) != 0 {
		t.Fatalf("after scale to 2: %d running, %d other (%s)\n%s", len(running), len(other), h.versions("web"), lines(h.commands()))
	}
	h.settleService("web", 2)
}

// A task given up on is replaced in its slot by a new incarnation; a
// second failure in a row waits for the back-off.
func TestServices_ReplaceWithBackoff(t *testing.T) {
	h := newServiceHarness(t, 2, func(c *Config) { c.RestartBase, c.RestartCap = time.Hour, 2*time.Hour })
	h.put(svc(2, "cube-echo:1", nil))
	h.settleService("web", 0)
	victim := func() api.Task {
		running, _ := h.live("web")
		sort.Slice(running, func(i, j int) bool { return running[i].Name < running[j].Name })
		h.seed(fsm.GiveUpTask{ID: running[0].ID, Reason: "gave up after 3 restarts", Time: time.Now().UTC()})
		return running[0]
	}
	v := victim()
	h.reset()
	h.pass()
	h.nameServiceTasks()
	if got := h.commands(); !same(got, []string{"submit web.1@v1#1"}) {
		t.Fatalf("replacement of %s:\n%s", v.Name, lines(got))
	}
	h.runAll()
	h.pass()
	h.runAll()
	victim()
	h.reset()
	h.pass()
	if got := h.commands(); len(got) != 0 {
		t.Fatalf("a second failure in a row was replaced at once:\n%s", lines(got))
	}
}

// A new template rolls out one task at a time, never below Count−1
// running, and completes with the new version healthy.
func TestServices_RollingUpdate(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	h.put(svc(3, "cube-echo:1", nil))
	h.settleService("web", 0)
	s := h.put(svc(3, "cube-echo:2", nil))
	if s.Version != 2 || s.Rollout == nil || s.Rollout.State != api.RolloutRunning {
		t.Fatalf("update: %+v", s)
	}
	h.reset()
	h.pass()
	h.nameServiceTasks()
	cmds := h.commands()
	if len(cmds) != 3 || !strings.HasPrefix(cmds[0], "*fsm.SetRollout") && !strings.HasPrefix(cmds[0], "fsm.SetRollout") ||
		!strings.Contains(strings.Join(cmds, "\n"), "submit web.3@v2#0") {
		t.Fatalf("first batch:\n%s", lines(cmds))
	}
	steps := h.settleService("web", 2)
	s = h.svc("web")
	if s.Rollout.State != api.RolloutCompleted || s.Rollout.Replaced != 3 || !s.History[1].Healthy {
		t.Fatalf("after the rollout (%d steps): %+v %+v", steps, s.Rollout, s.History)
	}
}

// With MaxParallel 2, batches of two.
func TestServices_RollingUpdate_Parallel(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	edit := func(s *api.Service) { s.Update.MaxParallel = 2 }
	h.put(svc(4, "cube-echo:1", edit))
	h.settleService("web", 0)
	h.put(svc(4, "cube-echo:2", edit))
	h.pass()
	if got := h.versions("web"); got != "v1:2 v2:2" {
		t.Fatalf("first batch of two: %s", got)
	}
	h.settleService("web", 2)
}

// A task of the new version with a health check counts only once the
// checker said it passes, and for MinHealthyTime.
func TestServices_RolloutWaitsForHealthChecks(t *testing.T) {
	h := newServiceHarness(t, 2, nil)
	edit := func(s *api.Service) { s.Task.HealthCheck = "/health"; s.Update.MinHealthyTime = "50ms" }
	h.put(svc(2, "cube-echo:1", edit))
	h.step()
	h.step()
	for _, task := range h.f.LiveTasks() {
		h.l.healthy(h.ctx, health.Result{TaskID: task.ID, Generation: task.Generation, Healthy: true, At: time.Now().Add(-time.Minute)})
	}
	h.step()
	if s := h.svc("web"); !s.History[0].Healthy {
		t.Fatalf("version 1 not healthy: %+v", s.History)
	}
	h.put(svc(2, "cube-echo:2", edit))
	h.step() // batch 1
	h.step()
	h.step()
	if got := h.versions("web"); got != "v1:1 v2:1" {
		t.Fatalf("the rollout went on without a healthy verdict: %s", got)
	}
	var fresh api.Task
	for _, task := range h.f.LiveTasks() {
		if task.ServiceVersion == 2 {
			fresh = task
		}
	}
	h.l.healthy(h.ctx, health.Result{TaskID: fresh.ID, Generation: fresh.Generation, Healthy: true, At: time.Now()})
	h.step()
	if got := h.versions("web"); got != "v1:1 v2:1" {
		t.Fatalf("the rollout went on before MinHealthyTime: %s", got)
	}
	time.Sleep(60 * time.Millisecond)
	h.step()
	if got := h.versions("web"); got != "v2:2" {
		t.Fatalf("the next batch did not start after MinHealthyTime: %s", got)
	}
}

// A batch not healthy within HealthyDeadline fails the rollout; with
// AutoRevert the last healthy version is current again and its tasks
// replace the failed version's, which keep their slots.
func TestServices_FailedRolloutAutoReverts(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	edit := func(s *api.Service) { s.Update.HealthyDeadline = "50ms"; s.Update.AutoRevert = true }
	h.put(svc(3, "cube-echo:1", edit))
	h.settleService("web", 0)
	h.put(svc(3, "cube-echo:broken", edit))
	h.pass() // batch 1: its task is placed but never runs
	h.pass()
	time.Sleep(60 * time.Millisecond)
	h.pass()
	s := h.svc("web")
	if s.Version != 1 || s.Rollout == nil || s.Rollout.State != api.RolloutRolledBack || s.Rollout.To != 2 || !strings.Contains(s.Rollout.Reason, "rolled back to version 1") {
		t.Fatalf("after the deadline: version %d, rollout %+v", s.Version, s.Rollout)
	}
	h.settleService("web", 2)
	if s := h.svc("web"); s.Version != 1 || s.Rollout.State != api.RolloutRolledBack || s.History[1].Healthy {
		t.Fatalf("after the rollback: %+v", s)
	}
}

// A task of the new version that crashes fails the rollout at once, long
// before HealthyDeadline, and AutoRevert rolls back.
func TestServices_CrashFailsRolloutAtOnce(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	edit := func(s *api.Service) { s.Update.HealthyDeadline = "1h"; s.Update.AutoRevert = true }
	h.put(svc(3, "cube-echo:1", edit))
	h.settleService("web", 0)
	h.put(svc(3, "cube-echo:exits", edit))
	h.step() // batch 1: one task of version 2 placed, and started
	h.step()
	var crashed api.Task
	for _, t := range h.f.LiveTasks() {
		if t.Service == "web" && t.ServiceVersion == 2 && t.State == api.Running {
			crashed = t
		}
	}
	if crashed.Name == "" {
		t.Fatalf("no task of version 2 runs: %s", h.versions("web"))
	}
	rec := crashed
	rec.State, rec.ExitCode, rec.Reason, rec.FinishTime = api.Failed, 1, "exited with code 1 after 20ms", time.Now().UTC()
	h.seed(fsm.ReportTask{Task: rec})
	h.pass()
	s := h.svc("web")
	if s.Version != 1 || s.Rollout == nil || s.Rollout.State != api.RolloutRolledBack ||
		!strings.Contains(s.Rollout.Reason, "task "+crashed.Name+" of version 2 failed: exited with code 1") {
		t.Fatalf("after a task of the new version crashed: version %d, rollout %+v", s.Version, s.Rollout)
	}
	h.settleService("web", 2)
}

// Without AutoRevert a failed rollout stops where it is.
func TestServices_FailedRolloutStops(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	edit := func(s *api.Service) { s.Update.HealthyDeadline = "50ms" }
	h.put(svc(3, "cube-echo:1", edit))
	h.settleService("web", 0)
	h.put(svc(3, "cube-echo:broken", edit))
	h.pass()
	h.pass()
	time.Sleep(60 * time.Millisecond)
	h.pass()
	if s := h.svc("web"); s.Version != 2 || s.Rollout.State != api.RolloutFailed {
		t.Fatalf("after the deadline: %+v", s.Rollout)
	}
	for range 3 {
		h.pass()
	}
	if got := h.versions("web"); got != "v1:2 v2:1" {
		t.Fatalf("a failed rollout went on: %s", got)
	}
}

// A rollback by hand makes the last healthy version current and rolls
// out to it; with no earlier healthy version it is refused.
func TestServices_RollbackByHand(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	h.put(svc(2, "cube-echo:1", nil))
	if _, err := h.m.RollbackService(h.ctx, "web", 0); err == nil || !strings.Contains(err.Error(), "no healthy version") {
		t.Fatalf("rollback without a healthy version: %v", err)
	}
	h.settleService("web", 0)
	h.put(svc(2, "cube-echo:2", nil))
	h.settleService("web", 1)
	if _, err := h.m.RollbackService(h.ctx, "web", 1); err == nil {
		t.Fatal("rollback from a version that is not current was taken")
	}
	st, err := h.m.RollbackService(h.ctx, "web", 2)
	if err != nil || st.Version != 1 || st.Rollout.From != 2 || st.Rollout.To != 1 || st.Rollout.State != api.RolloutRunning {
		t.Fatalf("rollback: %+v, %v", st, err)
	}
	h.settleService("web", 1)
	if s := h.svc("web"); s.Rollout.State != api.RolloutCompleted || h.versions("web") != "v1:2" {
		t.Fatalf("after the rollback: %+v %s", s.Rollout, h.versions("web"))
	}
}

// A new leader in the middle of a rollout carries it on from where it
// was: no batch is started over, no task is made twice.
func TestServices_LeaderChangeMidRollout(t *testing.T) {
	h := newServiceHarness(t, 3, nil)
	h.put(svc(3, "cube-echo:1", nil))
	h.settleService("web", 0)
	h.put(svc(3, "cube-echo:2", nil))
	h.step()
	h.step()
	before := h.svc("web").Rollout.Replaced
	if before == 0 || before == 3 {
		t.Fatalf("not mid-rollout: replaced %d", before)
	}
	h.l.end()
	h.l = newLoop(h.m)
	h.l.lastPoll = time.Now()
	h.l.begin(h.ctx)
	h.settleService("web", 2)
	s := h.svc("web")
	if s.Rollout.Replaced != 3 || s.Rollout.State != api.RolloutCompleted {
		t.Fatalf("after the new leader: %+v", s.Rollout)
	}
	v2 := 0
	for _, task := range h.f.Tasks() {
		if task.ServiceVersion == 2 {
			v2++
		}
	}
	if v2 != 3 {
		t.Fatalf("%d tasks of version 2 were made, want 3", v2)
	}
}

// Deleting a service stops its tasks; the loop stops their containers.
func TestServices_Delete(t *testing.T) {
	h := newServiceHarness(t, 2, nil)
	h.put(svc(2, "cube-echo:1", nil))
	h.settleService("web", 0)
	if err := h.m.DeleteService(h.ctx, "web"); err != nil {
		t.Fatal(err)
	}
	h.reset()
	h.pass()
	h.pass()
	if running, other := h.live("web"); len(running)+len(other) != 0 {
		t.Fatalf("tasks of a deleted service still to run: %d", len(running)+len(other))
	}
	stops := 0
	for _, c := range h.calls() {
		if strings.Contains(c, " stop ") {
			stops++
		}
	}
	if stops != 2 {
		t.Fatalf("worker calls after delete:\n%s", lines(h.calls()))
	}
}

// The status counts running and healthy tasks by version.
func TestServices_Status(t *testing.T) {
	h := newServiceHarness(t, 2, nil)
	h.put(svc(2, "cube-echo:1", func(s *api.Service) { s.Task.HealthCheck = "/health" }))
	h.step()
	h.step()
	st, err := h.m.Service(h.ctx, "web", false)
	if err != nil || st.Running != 2 || st.Healthy != 0 || st.ByVersion[1] != 2 {
		t.Fatalf("status before health verdicts: %+v, %v", st, err)
	}
	for _, task := range h.f.LiveTasks() {
		h.l.healthy(h.ctx, health.Result{TaskID: task.ID, Generation: task.Generation, Healthy: true, At: time.Now()})
	}
	if st, _ := h.m.Service(h.ctx, "web", false); st.Healthy != 2 {
		t.Fatalf("status after health verdicts: %+v", st)
	}
	if list, err := h.m.Services(h.ctx, false); err != nil || len(list) != 1 || list[0].Name != "web" {
		t.Fatalf("Services: %+v, %v", list, err)
	}
}

// cube_services counts the services by the state of their last rollout.
func TestServices_Metric(t *testing.T) {
	h := newServiceHarness(t, 1, nil)
	reg := h.m.Metrics()
	wantSample(t, reg, "cube_services", map[string]string{"rollout": "none"}, 0)
	h.put(svc(1, "cube-echo:1", nil))
	wantSample(t, reg, "cube_services", map[string]string{"rollout": "none"}, 1)
	h.put(svc(1, "cube-echo:2", nil))
	wantSample(t, reg, "cube_services", map[string]string{"rollout": "none"}, 0)
	wantSample(t, reg, "cube_services", map[string]string{"rollout": "running"}, 1)
}

// A batch's HealthyDeadline runs on both clocks: the committed start
// (wall clock, so that a new leader knows how long it waited) and the
// leader's monotonic clock since it first saw the batch. A leader whose
// wall clock stepped forward (the chaos suite's clock-jump: 2-10 min) saw a
// batch started a minute ago as 7 minutes old and failed a healthy rollout
// at once; now only the time it watched the batch can make it overdue.
func TestBatchOverdue_BothClocks(t *testing.T) {
	l := &loop{batchSeen: map[string]batchMark{}}
	deadline := 5 * time.Minute
	now := time.Now()
	s := api.Service{Name: "web", Version: 2, Rollout: &api.Rollout{From: 1, To: 2, State: api.RolloutRunning}}

	// The leader's clock jumped 6 minutes ahead of the batch's start.
	s.Rollout.UpdateTime = now.Add(-7 * time.Minute).UTC()
	if l.batchOverdue(s, now, deadline) {
		t.Fatal("a batch first seen now is overdue by a jumped wall clock alone")
	}
	if l.batchOverdue(s, now.Add(4*time.Minute), deadline) {
		t.Fatal("overdue after 4 minutes of watching it")
	}
	if !l.batchOverdue(s, now.Add(5*time.Minute+time.Second), deadline) {
		t.Fatal("not overdue after watching it past the deadline")
	}

	// The next batch starts the watch again.
	s.Rollout.UpdateTime = now.Add(-10 * time.Minute).UTC()
	if l.batchOverdue(s, now.Add(6*time.Minute), deadline) {
		t.Fatal("a new batch is overdue at first sight")
	}

	// A wall clock stepped back: the batch's start lies ahead; the leader
	// waits until the wall clock too has passed the deadline.
	l = &loop{batchSeen: map[string]batchMark{}}
	s.Rollout.UpdateTime = now.Add(3 * time.Minute).UTC()
	if l.batchOverdue(s, now, deadline) || l.batchOverdue(s, now.Add(6*time.Minute), deadline) {
		t.Fatal("overdue before the wall clock passed the deadline")
	}
	if !l.batchOverdue(s, now.Add(8*time.Minute+time.Second), deadline) {
		t.Fatal("not overdue once both clocks passed the deadline")
	}
}

package manager

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// The leader's reconciliation of services, one step of every pass: keep
// Count live tasks of each service's current version, replacing the tasks
// of other versions batch by batch (a rollout), and record in the
// replicated state what a new leader must not decide again (a version
// became healthy, a rollout completed or failed, a rollback). See
// manager/DESIGN.md, "Services".

// serviceNS is the namespace of service task IDs.
var serviceNS = uuid.MustParse("4f9c1d52-6b0e-4c55-9a1e-3c2f7d8b1e60")

// serviceTaskID is the ID of the task of a service's version in a slot,
// at an incarnation (0 for the first, one more for each replacement of a
// task of that slot and version that ended for good): the same on every
// leader, so that a submission retried after an unknown outcome, or
// decided again by a new leader, names the task already stored and
// creates nothing.
func serviceTaskID(service string, version uint64, slot, incarnation int) uuid.UUID {
	return uuid.NewSHA1(serviceNS, []byte(fmt.Sprintf("%s/%d/%d/%d", service, version, slot, incarnation)))
}

// slotOf returns the slot in a service task's name ("web.3" → 3); 0 if the
// name holds none.
func slotOf(service, name string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(name, service+"."))
	if err != nil || n <= 0 || !strings.HasPrefix(name, service+".") {
		return 0
	}
	return n
}

// maxIncarnations bounds the search for a slot's next incarnation.
const maxIncarnations = 10000

// svcBackoff spaces out the replacements of a service's tasks that ended
// for good (failed), so that a broken image does not churn tasks. Soft
// state: a new leader replaces at once.
type svcBackoff struct {
	streak    int
	notBefore time.Time
}

// updatePolicy returns the policy's values with the defaults filled in.
func updatePolicy(p api.UpdatePolicy) (parallel int, minHealthy, deadline time.Duration) {
	parallel, minHealthy, deadline = p.MaxParallel, api.DefaultMinHealthyTime, api.DefaultHealthyDeadline
	if parallel <= 0 {
		parallel = api.DefaultMaxParallel
	}
	if d, err := time.ParseDuration(p.MinHealthyTime); err == nil && p.MinHealthyTime != "" && d >= 0 {
		minHealthy = d
	}
	if d, err := time.ParseDuration(p.HealthyDeadline); err == nil && p.HealthyDeadline != "" && d > 0 {
		deadline = d
	}
	return parallel, minHealthy, deadline
}

// reconcileServices is the services' step of a pass over the live tasks.
func (l *loop) reconcileServices(ctx context.Context, tasks []*api.Task) {
	services := l.m.fsm.Services()
	byService := make(map[string][]api.Task)
	for _, t := range tasks {
		if t.Service != "" && t.DesiredState == api.Running && !t.Finished() {
			byService[t.Service] = append(byService[t.Service], *t)
		}
	}
	if len(services) == 0 && len(byService) == 0 {
		return
	}
	known := make(map[string]bool, len(services))
	for _, s := range services {
		known[s.Name] = true
		if ctx.Err() != nil {
			return
		}
		l.reconcileService(ctx, s, byService[s.Name])
	}
	// Tasks of a service the state no longer holds (deleted while one was
	// being decided, or in a restored state) are stopped.
	for name, ts := range byService {
		if !known[name] {
			for _, t := range ts {
				l.stopServiceTask(ctx, t, fmt.Sprintf("service %s does not exist", name))
			}
		}
	}
	maps.DeleteFunc(l.svcBackoff, func(name string, _ *svcBackoff) bool { return !known[name] })
	maps.DeleteFunc(l.batchSeen, func(name string, _ batchMark) bool { return !known[name] })
}

// batchMark is when this leader first saw a rollout's batch: the version
// rolled out to and the batch's committed start, on its monotonic clock.
type batchMark struct {
	version uint64
	start   time.Time // the rollout's UpdateTime (wall clock, committed)
	seen    time.Time // time.Now() when first seen (monotonic)
}

// batchOverdue reports whether the current batch of s's rollout has waited
// longer than deadline on both clocks: since its committed start (the
// rollout's UpdateTime, a wall-clock moment, so that a new leader knows how
// long the batch has waited) and on this leader's monotonic clock since it
// first saw the batch. The wall clock alone let a leader whose clock
// stepped forward (an NTP step; the chaos suite's clock-jump, 2-10 min) fail
// a healthy rollout at once, and one that stepped back let it wait minutes
// too long; a leader change can now delay a failure by up to the deadline,
// never make it early (as for MinHealthyTime, manager/DESIGN.md
// "Services").
func (l *loop) batchOverdue(s api.Service, now time.Time, deadline time.Duration) bool {
	start := s.Rollout.UpdateTime
	m, ok := l.batchSeen[s.Name]
	if !ok || m.version != s.Version || !m.start.Equal(start) {
		m = batchMark{version: s.Version, start: start, seen: now}
		l.batchSeen[s.Name] = m
	}
	return now.Sub(start) > deadline && now.Sub(m.seen) > deadline
}

// svcTask is a live task of a service with what the step needs about it.
type svcTask struct {
	api.Task
	slot    int
	current bool // of the current version
	healthy bool // Running and healthy now
	done    bool // healthy for MinHealthyTime
}

// reconcileService brings one service toward Count healthy tasks of its
// current version:
//
//  1. more live tasks than Count: stop the extras, old versions first, then
//     those not Running, then those not healthy, the highest slot first;
//  2. tasks of another version (a rollout or a rollback), while every task
//     of the current version is done (healthy for MinHealthyTime) and
//     none is missing: stop the next MaxParallel of them, the unhealthy
//     first; a batch not done within HealthyDeadline fails the rollout
//     (and, with AutoRevert, rolls back to the last healthy version);
//  3. fewer than Count: start tasks of the current version in the free
//     slots (replacements of failed ones with a back-off);
//  4. Count tasks of the current version, all done: the version is
//     healthy, and the rollout to it completed.
func (l *loop) reconcileService(ctx context.Context, s api.Service, live []api.Task) {
	now := time.Now()
	parallel, minHealthy, deadline := updatePolicy(s.Update)
	var cur, old []svcTask
	for _, t := range live {
		if t.State == api.Running && t.HealthCheck == "" {
			l.m.health.set(t.ID, t.Generation, now) // healthy from the first time the leader sees it Running
		}
		st := svcTask{Task: t, slot: slotOf(s.Name, t.Name), current: t.ServiceVersion == s.Version}
		if since, ok := l.m.healthySince(t); ok {
			st.healthy, st.done = true, now.Sub(since) >= minHealthy
		}
		if st.current {
			cur = append(cur, st)
		} else {
			old = append(old, st)
		}
	}
	rollout := s.Rollout
	rolling := rollout != nil && rollout.State == api.RolloutRunning && rollout.To == s.Version
	halted := rollout != nil && rollout.State == api.RolloutFailed && rollout.To == s.Version

	// 1. Too many.
	if extra := len(cur) + len(old) - s.Count; extra > 0 {
		all := append(append([]svcTask(nil), old...), cur...)
		sort.SliceStable(all, func(i, j int) bool { return stopFirst(all[i], all[j]) })
		for _, t := range all[:extra] {
			l.stopServiceTask(ctx, t.Task, fmt.Sprintf("scaled down: service %s has Count %d", s.Name, s.Count))
		}
		return
	}

	notDone := 0
	for _, t := range cur {
		if !t.done {
			notDone++
		}
	}
	// A task of the new version that ended or was restarted has failed: the
	// rollout stops at once, as Swarm's and Nomad's do, instead of waiting
	// out HealthyDeadline for a version that exits at start.
	if rolling {
		for _, t := range cur {
			if t.State == api.Failed || t.RestartCount > 0 {
				why := t.Reason
				if why == "" {
					why = fmt.Sprintf("restarted %d time(s)", t.RestartCount)
				}
				l.failRollout(ctx, s, fmt.Sprintf("task %s of version %d failed: %s", t.Name, s.Version, why))
				return
			}
		}
	}
	if rolling && notDone > 0 && l.batchOverdue(s, now, deadline) {
		l.failRollout(ctx, s, fmt.Sprintf("%d task(s) of version %d not healthy for %s within %s", notDone, s.Version, minHealthy, deadline))
		return
	}

	// 2. The next batch of a rollout.
	if len(old) > 0 && !halted && notDone == 0 && len(cur)+len(old) >= s.Count {
		sort.SliceStable(old, func(i, j int) bool { return stopFirst(old[i], old[j]) })
		batch := min(parallel, len(old))
		stopped := 0
		var kept []svcTask
		for i, t := range old {
			if i < batch && l.stopServiceTask(ctx, t.Task, fmt.Sprintf("replaced by version %d of service %s", s.Version, s.Name)) {
				stopped++
				continue
			}
			kept = append(kept, t)
		}
		if stopped == 0 {
			return
		}
		old = kept
		if rolling {
			r := *rollout
			r.Replaced += stopped
			r.UpdateTime = now.UTC() // the batch's deadline runs from here
			if _, err := l.m.apply(ctx, fsm.SetRollout{Name: s.Name, Expect: s.Version, Rollout: &r, Time: now.UTC()}); err != nil {
				l.log.Warn("record rollout progress", "service", s.Name, "error", err)
			}
		}
		l.log.Info("rollout batch started", "service", s.Name, "version", s.Version, "replacing", stopped, "left", len(old))
	}

	// 3. Too few.
	if missing := s.Count - len(cur) - len(old); missing > 0 {
		used := make(map[int]bool, len(cur)+len(old))
		for _, t := range append(append([]svcTask(nil), cur...), old...) {
			used[t.slot] = true
		}
		l.startServiceTasks(ctx, s, used, missing, now)
		return
	}

	// 4. Settled.
	if len(old) == 0 && notDone == 0 {
		delete(l.svcBackoff, s.Name)
		i := versionIndex(s, s.Version)
		markHealthy := i >= 0 && !s.History[i].Healthy
		complete := rolling || halted
		if !markHealthy && !complete {
			return
		}
		cmd := fsm.SetRollout{Name: s.Name, Expect: s.Version, Time: now.UTC()}
		if markHealthy {
			cmd.Healthy = s.Version
		}
		if complete {
			r := *rollout
			r.State, r.Reason, r.UpdateTime = api.RolloutCompleted, "", now.UTC()
			cmd.Rollout = &r
		}
		if _, err := l.m.apply(ctx, cmd); err != nil {
			l.log.Warn("record a healthy service version", "service", s.Name, "version", s.Version, "error", err)
			return
		}
		l.log.Info("service version healthy", "service", s.Name, "version", s.Version, "count", s.Count, "rollout_completed", complete)
	}
}

// versionIndex returns the index of version v in s.History, -1 if absent.
func versionIndex(s api.Service, v uint64) int {
	for i, h := range s.History {
		if h.Version == v {
			return i
		}
	}
	return -1
}

// stopFirst orders a service's tasks by which to stop first: old versions,
// then those not Running, then the unhealthy, then the highest slot.
func stopFirst(a, b svcTask) bool {
	switch {
	case a.current != b.current:
		return !a.current
	case (a.State == api.Running) != (b.State == api.Running):
		return a.State != api.Running
	case a.healthy != b.healthy:
		return !a.healthy
	}
	return a.slot > b.slot
}

// stopServiceTask commits the stop of one task of a service; the loop's
// next pass stops its container. A task that has ended and waits for a
// restart is given up on instead (a stop would be refused: it has ended).
func (l *loop) stopServiceTask(ctx context.Context, t api.Task, why string) bool {
	var err error
	if t.State.Terminal() {
		_, err = l.m.apply(ctx, fsm.GiveUpTask{ID: t.ID, Reason: why, Time: time.Now().UTC()})
	} else {
		_, err = l.m.apply(ctx, fsm.StopTask{ID: t.ID, Reason: why, Time: time.Now().UTC()})
	}
	if err != nil && !errors.Is(err, api.ErrConflict) {
		l.log.Warn("stop a service task", "task_id", t.ID, "service", t.Service, "error", err)
		return false
	}
	l.m.health.drop(t.ID, 0)
	l.log.Info("service task stopped", "task_id", t.ID, "name", t.Name, "version", t.ServiceVersion, "why", why)
	return true
}

// startServiceTasks submits n tasks of the service's current version in
// the lowest free slots. Each ID is the slot's first incarnation the state
// does not hold; one that replaces a task that failed for good waits for
// the service's back-off.
func (l *loop) startServiceTasks(ctx context.Context, s api.Service, used map[int]bool, n int, now time.Time) {
	bo := l.svcBackoff[s.Name]
	slot := 0
	for ; n > 0; n-- {
		for slot++; used[slot]; slot++ {
		}
		id, replaces := l.nextIncarnation(s, slot)
		if id == uuid.Nil {
			l.log.Error("service slot has no incarnation left", "service", s.Name, "slot", slot)
			continue
		}
		if replaces {
			if bo != nil && now.Before(bo.notBefore) {
				continue // the loop comes back on its tick
			}
			if bo == nil {
				bo = &svcBackoff{}
				l.svcBackoff[s.Name] = bo
			}
			bo.streak++
			bo.notBefore = now.Add(l.backoff(bo.streak + 1))
		}
		t := s.Task
		t.ID, t.Name, t.Service, t.ServiceVersion = id, fmt.Sprintf("%s.%d", s.Name, slot), s.Name, s.Version
		if t.RestartPolicy == "" {
			t.RestartPolicy = "always"
		}
		res, err := l.m.apply(ctx, fsm.SubmitTask{Task: t, Time: now.UTC(), MaxTasks: l.m.cfg.MaxTasks})
		if err != nil {
			l.log.Warn("start a service task", "service", s.Name, "slot", slot, "error", err)
			return
		}
		if res.Created {
			l.log.Info("service task started", "task_id", id, "name", t.Name, "version", s.Version, "replaces_failed", replaces)
		}
	}
}

// nextIncarnation returns the ID of the slot's next task of the current
// version: its first incarnation the state does not hold, and whether it
// replaces one that failed.
func (l *loop) nextIncarnation(s api.Service, slot int) (uuid.UUID, bool) {
	var prev api.Task
	for inc := 0; inc < maxIncarnations; inc++ {
		id := serviceTaskID(s.Name, s.Version, slot, inc)
		t, err := l.m.fsm.Task(id)
		if err != nil {
			return id, inc > 0 && prev.State == api.Failed
		}
		prev = t
	}
	return uuid.Nil, false
}

// failRollout records that the rollout to the current version failed;
// with AutoRevert, the last healthy version becomes current again in the
// same entry, and the next passes replace the failed version's tasks.
func (l *loop) failRollout(ctx context.Context, s api.Service, reason string) {
	now := time.Now().UTC()
	r := *s.Rollout
	r.State, r.Reason, r.UpdateTime = api.RolloutFailed, reason, now
	cmd := fsm.SetRollout{Name: s.Name, Expect: s.Version, Rollout: &r, Time: now}
	if s.Update.AutoRevert {
		if target := lastHealthy(s); target != 0 {
			r.State = api.RolloutRolledBack
			r.Reason = fmt.Sprintf("%s; rolled back to version %d", reason, target)
			cmd.Current = target
		} else {
			r.Reason = reason + "; no earlier healthy version to roll back to"
		}
	}
	if _, err := l.m.apply(ctx, cmd); err != nil {
		l.log.Warn("record a failed rollout", "service", s.Name, "error", err)
		return
	}
	l.log.Warn("rollout failed", "service", s.Name, "version", s.Version, "state", r.State, "reason", r.Reason)
}

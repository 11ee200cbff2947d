package manager

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
	"github.com/google/uuid"
)

var _ api.ServiceManager = (*Manager)(nil)

// healthMark says that a placement (task, generation) has been healthy
// since a time, as the leader knows it: passing its health check (the
// checker's first healthy verdict), or Running, for a task without one,
// since the leader first saw it so.
type healthMark struct {
	gen   uint64
	since time.Time
}

// healthView is the leader's soft knowledge of healthy placements: written
// by the loop, read by the loop's rollouts and by the service status any
// request asks for. A new leader starts empty and learns again (its checks
// start over); nothing in it is replicated.
type healthView struct {
	mu sync.Mutex
	m  map[uuid.UUID]healthMark
}

func (v *healthView) get(id uuid.UUID) (healthMark, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	h, ok := v.m[id]
	return h, ok
}

// set records that (id, gen) is healthy since since, unless it already is
// since earlier.
func (v *healthView) set(id uuid.UUID, gen uint64, since time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[uuid.UUID]healthMark)
	}
	if h, ok := v.m[id]; ok && h.gen == gen {
		return
	}
	v.m[id] = healthMark{gen: gen, since: since}
}

// drop forgets the mark of (id, gen), or of id whatever its generation
// when gen is 0.
func (v *healthView) drop(id uuid.UUID, gen uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if h, ok := v.m[id]; ok && (gen == 0 || h.gen == gen) {
		delete(v.m, id)
	}
}

// keep forgets every mark but those of the tasks in active.
func (v *healthView) keep(active map[uuid.UUID]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id := range v.m {
		if !active[id] {
			delete(v.m, id)
		}
	}
}

func (v *healthView) reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m = nil
}

// healthySince returns since when the task's current placement has been
// healthy, as the leader knows it; false if it is not (or not known to be).
func (m *Manager) healthySince(t api.Task) (time.Time, bool) {
	if t.State != api.Running || t.DesiredState != api.Running {
		return time.Time{}, false
	}
	h, ok := m.health.get(t.ID)
	if !ok || h.gen != t.Generation {
		return time.Time{}, false
	}
	return h.since, true
}

// healthyNow reports whether a task counts as healthy in a service's
// status: Running and, if it has a health check, passing it as far as
// this manager knows (only the leader runs checks).
func (m *Manager) healthyNow(t api.Task) bool {
	if t.State != api.Running || t.DesiredState != api.Running {
		return false
	}
	if t.HealthCheck == "" {
		return true
	}
	_, ok := m.healthySince(t)
	return ok
}

// serviceStatus is a service with the counts of its tasks among tasks.
func (m *Manager) serviceStatus(s api.Service, tasks []api.Task) api.ServiceStatus {
	st := api.ServiceStatus{Service: s}
	for _, t := range tasks {
		if t.Service != s.Name || t.State != api.Running || t.DesiredState != api.Running {
			continue
		}
		st.Running++
		if m.healthyNow(t) {
			st.Healthy++
		}
		if st.ByVersion == nil {
			st.ByVersion = make(map[uint64]int)
		}
		st.ByVersion[t.ServiceVersion]++
	}
	return st
}

// callerName is who asks, for a version's By: the token's (or
// certificate's) name; "" with security off.
func callerName(ctx context.Context) string {
	c, ok := api.CallerFrom(ctx)
	if !ok || c.Kind == api.CallerAnonymous {
		return ""
	}
	return c.Name
}

// checkService is what the leader checks of a service before committing
// it: the API's checks and the health check's own.
func checkService(s api.Service) error {
	if err := api.CheckService(s); err != nil {
		return err
	}
	if err := health.ValidateTask(fsm.ServiceTemplate(s)); err != nil {
		return &api.ValidationError{Msg: fmt.Sprintf("service %s: Task: %v", s.Name, err)}
	}
	return nil
}

// CreateService commits a new service; the leader's loop starts its tasks.
func (m *Manager) CreateService(ctx context.Context, s api.Service) (api.ServiceStatus, error) {
	if !m.raft.IsLeader() {
		return api.ServiceStatus{}, api.ErrNotLeader
	}
	if err := checkService(s); err != nil {
		return api.ServiceStatus{}, err
	}
	res, err := m.apply(ctx, fsm.PutService{Service: s, Mode: fsm.PutCreate, Time: time.Now().UTC(), By: callerName(ctx)})
	if err != nil {
		return api.ServiceStatus{}, err
	}
	m.log.Info("service created", "service", s.Name, "count", s.Count, "image", s.Task.Image)
	return m.serviceStatus(res.Service, nil), nil
}

// PutService creates or changes a service. An unchanged one commits
// nothing; a changed template makes a new version and starts its rollout.
func (m *Manager) PutService(ctx context.Context, s api.Service) (api.ServiceStatus, bool, error) {
	if !m.raft.IsLeader() {
		return api.ServiceStatus{}, false, api.ErrNotLeader
	}
	if err := checkService(s); err != nil {
		return api.ServiceStatus{}, false, err
	}
	if cur, ok := m.fsm.Service(s.Name); ok && cur.Count == s.Count && cur.Update == s.Update && fsm.SameTemplate(cur.Task, fsm.ServiceTemplate(s)) {
		return m.serviceStatus(cur, m.fsm.LiveTasks()), false, nil
	}
	res, err := m.apply(ctx, fsm.PutService{Service: s, Time: time.Now().UTC(), By: callerName(ctx)})
	if err != nil {
		return api.ServiceStatus{}, false, err
	}
	if res.Changed {
		m.log.Info("service put", "service", s.Name, "version", res.Service.Version, "count", res.Service.Count, "created", res.Created)
	}
	return m.serviceStatus(res.Service, m.fsm.LiveTasks()), res.Created, nil
}

// Services lists every service with the counts of its tasks.
func (m *Manager) Services(ctx context.Context, consistent bool) ([]api.ServiceStatus, error) {
	if err := m.read(ctx, consistent); err != nil {
		return nil, err
	}
	services := m.fsm.Services()
	out := make([]api.ServiceStatus, 0, len(services))
	if len(services) == 0 {
		return out, nil
	}
	tasks := m.fsm.LiveTasks()
	for _, s := range services {
		out = append(out, m.serviceStatus(s, tasks))
	}
	return out, nil
}

// Service returns one service with the counts of its tasks.
func (m *Manager) Service(ctx context.Context, name string, consistent bool) (api.ServiceStatus, error) {
	if err := m.read(ctx, consistent); err != nil {
		return api.ServiceStatus{}, err
	}
	s, ok := m.fsm.Service(name)
	if !ok {
		return api.ServiceStatus{}, fmt.Errorf("service %q: %w", name, api.ErrNotFound)
	}
	return m.serviceStatus(s, m.fsm.LiveTasks()), nil
}

// ScaleService sets a service's Count; the loop starts or stops tasks at
// once, whatever a rollout is doing.
func (m *Manager) ScaleService(ctx context.Context, name string, count int) (api.ServiceStatus, error) {
	if !m.raft.IsLeader() {
		return api.ServiceStatus{}, api.ErrNotLeader
	}
	res, err := m.apply(ctx, fsm.PutService{Service: api.Service{Name: name, Count: count}, Mode: fsm.PutScale, Time: time.Now().UTC()})
	if err != nil {
		return api.ServiceStatus{}, err
	}
	if res.Changed {
		m.log.Info("service scaled", "service", name, "count", count)
	}
	return m.serviceStatus(res.Service, m.fsm.LiveTasks()), nil
}

// lastHealthy returns the newest version of s's history marked healthy
// other than the current one; 0 if there is none.
func lastHealthy(s api.Service) uint64 {
	for i := len(s.History) - 1; i >= 0; i-- {
		if h := s.History[i]; h.Healthy && h.Version != s.Version {
			return h.Version
		}
	}
	return 0
}

// RollbackService makes the last healthy version before the current one
// current again; the loop replaces the tasks of the current version with
// it, batch by batch, as a rollout.
func (m *Manager) RollbackService(ctx context.Context, name string, from uint64) (api.ServiceStatus, error) {
	if !m.raft.IsLeader() {
		return api.ServiceStatus{}, api.ErrNotLeader
	}
	s, ok := m.fsm.Service(name)
	switch {
	case !ok:
		return api.ServiceStatus{}, fmt.Errorf("service %q: %w", name, api.ErrNotFound)
	case from != 0 && from != s.Version:
		return m.serviceStatus(s, nil), fmt.Errorf("service %s is at version %d, not %d: %w", name, s.Version, from, api.ErrConflict)
	}
	target := lastHealthy(s)
	if target == 0 {
		return m.serviceStatus(s, nil), fmt.Errorf("service %s has no healthy version before version %d to roll back to: %w", name, s.Version, api.ErrConflict)
	}
	now := time.Now().UTC()
	res, err := m.apply(ctx, fsm.SetRollout{Name: name, Expect: s.Version, Current: target, Time: now,
		Rollout: &api.Rollout{From: s.Version, To: target, State: api.RolloutRunning, Reason: fmt.Sprintf("rollback to version %d on request", target), StartTime: now, UpdateTime: now}})
	if err != nil {
		return api.ServiceStatus{}, err
	}
	m.log.Info("service rolled back on request", "service", name, "from", s.Version, "to", target)
	return m.serviceStatus(res.Service, m.fsm.LiveTasks()), nil
}

// DeleteService deletes a service; its tasks are marked to stop in the
// same entry and the loop stops them.
func (m *Manager) DeleteService(ctx context.Context, name string) error {
	if !m.raft.IsLeader() {
		return api.ErrNotLeader
	}
	res, err := m.apply(ctx, fsm.DeleteService{Name: name, Time: time.Now().UTC(), Reason: "service " + name + " deleted"})
	if err != nil {
		return err
	}
	m.log.Info("service deleted", "service", name, "tasks_stopped", len(res.Tasks))
	return nil
}

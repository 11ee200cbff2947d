package fsm

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// Services (api.Service) are named task templates the leader keeps running
// Count times. The state holds each service's current version, its history
// and the progress of its last rollout; the tasks themselves are ordinary
// tasks that name their service and version. Every decision that the
// leader takes about a rollout and that a new leader must not take again
// differently (a version became healthy, a rollout failed, a rollback
// switched the current version) is a SetRollout, so that the rollout
// carries on from where it was after a failover.

// The modes of PutService.
const (
	// PutUpsert creates the service or changes it (PUT /services/{name}).
	PutUpsert = ""
	// PutCreate creates it only; a service of that name is a conflict
	// (POST /services).
	PutCreate = "create"
	// PutScale changes Count only; the service must exist
	// (POST /services/{name}/scale). Only Name and Count are read.
	PutScale = "scale"
)

// PutService creates or changes a service. A changed template (the Task,
// its Constraints and Prefer) makes a new version (the highest so far + 1),
// recorded in History with Time and By, and starts a rollout to it; a
// changed Count or Update policy alone changes them in place. A service
// equal to the stored one changes nothing (Changed false).
type PutService struct {
	Service api.Service
	Mode    string `json:",omitempty"`
	// Time is the leader's clock; By names who asked (the token's name),
	// empty without one.
	Time time.Time
	By   string `json:",omitempty"`
}

// DeleteService removes a service and, in the same entry, marks every
// live task of it to stop, as StopTask does: a task not yet placed ends at
// once, a placed one is stopped by the leader; a task that ended and
// waited for a restart is not restarted.
type DeleteService struct {
	Name   string
	Time   time.Time
	Reason string `json:",omitempty"`
}

// SetRollout records the leader's decisions about a service's versions:
// a new Rollout (progress, completion, failure), a version marked Healthy,
// or another version made Current (a rollback, by hand or by AutoRevert).
// Expect is the current version the leader decided on: if the service has
// moved on meanwhile (an update committed in between) the command is
// refused (api.ErrConflict) and the leader decides again.
type SetRollout struct {
	Name   string
	Expect uint64
	// Rollout, if set, replaces the service's rollout.
	Rollout *api.Rollout `json:",omitempty"`
	// Current, if set, makes that version of History the current one.
	Current uint64 `json:",omitempty"`
	// Healthy, if set, marks that version of History healthy.
	Healthy uint64 `json:",omitempty"`
	Time    time.Time
}

// ServiceTemplate returns the template of a service as it is stored and
// compared: its Task without the fields the cluster sets, carrying the
// service's Constraints and Prefer (the task's own if the service has
// none), empty lists and maps as nil.
func ServiceTemplate(s api.Service) api.Task {
	t := s.Task
	t.ID, t.ContainerID, t.Name, t.State, t.HostPorts = uuid.Nil, "", "", api.Pending, nil
	t.StartTime, t.FinishTime, t.SubmitTime = time.Time{}, time.Time{}, time.Time{}
	t.RestartCount, t.Worker, t.Generation, t.ExitCode, t.Reason, t.LastWorker = 0, "", 0, 0, "", ""
	t.DesiredState, t.Service, t.ServiceVersion = api.Pending, "", 0
	t.Healthy, t.History = false, nil
	if len(s.Constraints) > 0 {
		t.Constraints = slices.Clone(s.Constraints)
	}
	if len(s.Prefer) > 0 {
		t.Prefer = slices.Clone(s.Prefer)
	}
	if len(t.ExposedPorts) == 0 {
		t.ExposedPorts = nil
	}
	if len(t.PortBindings) == 0 {
		t.PortBindings = nil
	}
	for _, l := range []*[]string{&t.Env, &t.Cmd, &t.Mounts, &t.CapAdd, &t.Constraints, &t.Prefer} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return t
}

// SameTemplate reports whether two templates (as ServiceTemplate returns
// them) are equal.
func SameTemplate(a, b api.Task) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// validRolloutState reports whether s is one of api's rollout states.
func validRolloutState(s string) bool {
	switch s {
	case api.RolloutRunning, api.RolloutCompleted, api.RolloutFailed, api.RolloutRolledBack:
		return true
	}
	return false
}

// maxByLen bounds PutService.By and the reasons of service commands.
const maxByLen = 256

func serviceInvalid(format string, args ...any) *Result {
	return &Result{Err: &api.ValidationError{Msg: fmt.Sprintf(format, args...)}}
}

func (f *FSM) putServiceLocked(c PutService) *Result {
	in := c.Service
	if c.Mode != PutUpsert && c.Mode != PutCreate && c.Mode != PutScale {
		return serviceInvalid("put service: mode %q is not one of \"\", %q, %q", c.Mode, PutCreate, PutScale)
	}
	if len(c.By) > maxByLen {
		return serviceInvalid("put service: By is longer than %d characters", maxByLen)
	}
	cur, ok := f.services[in.Name]
	if c.Mode == PutScale {
		if !ok {
			return &Result{Err: fmt.Errorf("service %q: %w", in.Name, api.ErrNotFound)}
		}
		if in.Count < 0 || in.Count > api.MaxServiceCount {
			return serviceInvalid("service %s: Count %d must be between 0 and %d", in.Name, in.Count, api.MaxServiceCount)
		}
		if cur.Count == in.Count {
			return &Result{Service: cur}
		}
		next := cur
		next.Count, next.UpdateTime = in.Count, c.Time
		f.services[next.Name] = next
		return &Result{Service: next, Changed: true}
	}
	if err := api.ValidateService(in); err != nil {
		return &Result{Err: &api.ValidationError{Msg: err.Error()}}
	}
	tmpl := ServiceTemplate(in)
	if err := tmpl.Validate(); err != nil {
		return &Result{Err: &api.ValidationError{Msg: fmt.Sprintf("service %s: Task: %v", in.Name, err)}}
	}
	if ok && c.Mode == PutCreate {
		return &Result{Service: cur, Err: fmt.Errorf("service %q already exists (version %d): %w; change it with PUT /services/%s", in.Name, cur.Version, api.ErrConflict, in.Name)}
	}
	if !ok {
		s := api.Service{
			Name: in.Name, Count: in.Count, Task: tmpl, Update: in.Update,
			Constraints: tmpl.Constraints, Prefer: tmpl.Prefer,
			Version: 1, CreateTime: c.Time, UpdateTime: c.Time,
			History: []api.ServiceVersion{{Version: 1, Task: tmpl, Time: c.Time, By: c.By}},
		}
		f.services[s.Name] = s
		return &Result{Service: s, Created: true, Changed: true}
	}
	next := cur
	changed := false
	if next.Count != in.Count {
		next.Count, changed = in.Count, true
	}
	if next.Update != in.Update {
		next.Update, changed = in.Update, true
	}
	if !SameTemplate(cur.Task, tmpl) {
		v := cur.Version
		for _, h := range cur.History {
			v = max(v, h.Version)
		}
		v++
		next.Version, next.Task = v, tmpl
		next.Constraints, next.Prefer = tmpl.Constraints, tmpl.Prefer
		hist := append(slices.Clone(cur.History), api.ServiceVersion{Version: v, Task: tmpl, Time: c.Time, By: c.By})
		if n := len(hist) - api.ServiceHistoryMax; n > 0 {
			hist = hist[n:]
		}
		next.History = hist
		next.Rollout = &api.Rollout{From: cur.Version, To: v, State: api.RolloutRunning, StartTime: c.Time, UpdateTime: c.Time}
		changed = true
	}
	if !changed {
		return &Result{Service: cur}
	}
	next.UpdateTime = c.Time
	f.services[next.Name] = next
	return &Result{Service: next, Changed: true}
}

func (f *FSM) deleteServiceLocked(c DeleteService) *Result {
	s, ok := f.services[c.Name]
	if !ok {
		return &Result{Err: fmt.Errorf("service %q: %w", c.Name, api.ErrNotFound)}
	}
	if len(c.Reason) > maxByLen {
		return serviceInvalid("delete service: Reason is longer than %d characters", maxByLen)
	}
	delete(f.services, c.Name)
	reason := c.Reason
	if reason == "" {
		reason = "service " + c.Name + " deleted"
	}
	var ids []uuid.UUID
	for id := range f.live {
		if t := f.tasks[id]; t != nil && t.Service == c.Name && t.DesiredState == api.Running {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	res := &Result{Service: s, Changed: true}
	for _, id := range ids {
		t := *f.tasks[id]
		t.DesiredState = api.Completed
		if t.State == api.Pending {
			// Never placed: nothing to stop on a worker.
			t.State, t.Reason, t.FinishTime = api.Completed, reason, c.Time
		}
		// A placed one keeps its state until its worker confirms the stop;
		// one that ended (waiting for a restart) is finished now.
		t = f.putLocked(t, c.Time, reason)
		res.Tasks = append(res.Tasks, t)
	}
	return res
}

func (f *FSM) setRolloutLocked(c SetRollout) *Result {
	s, ok := f.services[c.Name]
	if !ok {
		return &Result{Err: fmt.Errorf("service %q: %w", c.Name, api.ErrNotFound)}
	}
	if c.Expect != s.Version {
		return &Result{Service: s, Err: fmt.Errorf("service %s is at version %d, not %d: %w", c.Name, s.Version, c.Expect, api.ErrConflict)}
	}
	if r := c.Rollout; r != nil {
		switch {
		case !validRolloutState(r.State):
			return serviceInvalid("rollout of %s: state %q is not one of running, completed, failed, rolled-back", c.Name, r.State)
		case len(r.Reason) > maxByLen:
			return serviceInvalid("rollout of %s: Reason is longer than %d characters", c.Name, maxByLen)
		case r.Replaced < 0 || r.Replaced > 1<<30:
			return serviceInvalid("rollout of %s: Replaced %d is out of range", c.Name, r.Replaced)
		}
	}
	version := func(v uint64) int {
		return slices.IndexFunc(s.History, func(h api.ServiceVersion) bool { return h.Version == v })
	}
	next := s
	next.History = slices.Clone(s.History)
	if c.Healthy != 0 {
		i := version(c.Healthy)
		if i < 0 {
			return &Result{Service: s, Err: fmt.Errorf("service %s has no version %d in its history: %w", c.Name, c.Healthy, api.ErrConflict)}
		}
		next.History[i].Healthy = true
	}
	if c.Current != 0 && c.Current != s.Version {
		i := version(c.Current)
		if i < 0 {
			return &Result{Service: s, Err: fmt.Errorf("service %s has no version %d in its history: %w", c.Name, c.Current, api.ErrConflict)}
		}
		h := next.History[i]
		next.Version, next.Task = h.Version, h.Task
		next.Constraints, next.Prefer = h.Task.Constraints, h.Task.Prefer
	}
	if c.Rollout != nil {
		r := *c.Rollout
		next.Rollout = &r
	}
	if sameService(s, next) {
		return &Result{Service: s}
	}
	next.UpdateTime = c.Time
	f.services[next.Name] = next
	return &Result{Service: next, Changed: true}
}

// sameService compares two stored services.
func sameService(a, b api.Service) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// Service returns one service.
func (f *FSM) Service(name string) (api.Service, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, ok := f.services[name]
	return s, ok
}

// Services returns every service, by name. Stored services are replaced,
// never changed in place; callers must not change what they get either
// (History and Rollout are shared).
func (f *FSM) Services() []api.Service {
	f.mu.RLock()
	out := make([]api.Service, 0, len(f.services))
	for _, s := range f.services {
		out = append(out, s)
	}
	f.mu.RUnlock()
	sortServices(out)
	return out
}

func sortServices(ss []api.Service) {
	sort.Slice(ss, func(i, j int) bool { return ss[i].Name < ss[j].Name })
}

package manager

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
)

// HostPortUse records, per worker, the static host ports ("7777/tcp", see
// api.Task.StaticHostPorts) bound there and the task holding each. Like the
// allocation of cpu, memory and disk (fsm.Nodes), it is derived from the
// replicated tasks placed on a worker (Scheduled or Running), never sampled.
type HostPortUse map[string]map[string]uuid.UUID

// UsedHostPorts derives the host ports held on each worker from tasks.
func UsedHostPorts(tasks []*api.Task) HostPortUse {
	u := HostPortUse{}
	for _, t := range tasks {
		if t.Worker == "" || (t.State != api.Scheduled && t.State != api.Running) {
			continue
		}
		u.take(t.Worker, *t)
	}
	return u
}

// take counts t's static host ports as held on worker. The first holder of a
// port keeps it (two holders can only be a placement made before ports
// were counted; one of them will fail to start).
func (u HostPortUse) take(worker string, t api.Task) {
	if u == nil {
		return
	}
	for _, p := range t.StaticHostPorts() {
		m := u[worker]
		if m == nil {
			m = map[string]uuid.UUID{}
			u[worker] = m
		}
		if _, held := m[p]; !held {
			m[p] = t.ID
		}
	}
}

// taken returns the first of t's static host ports that another task holds
// on worker, and that task. A port t itself holds there (an unhealthy copy
// restarted in place) is not taken.
func (u HostPortUse) taken(worker string, t api.Task) (port string, holder uuid.UUID, ok bool) {
	m := u[worker]
	if len(m) == 0 {
		return "", uuid.Nil, false
	}
	for _, p := range t.StaticHostPorts() {
		if id, held := m[p]; held && id != t.ID {
			return p, id, true
		}
	}
	return "", uuid.Nil, false
}

// clone returns a copy that can be changed without changing u.
func (u HostPortUse) clone() HostPortUse {
	out := make(HostPortUse, len(u))
	for w, m := range u {
		out[w] = maps.Clone(m)
	}
	return out
}

// portFree keeps the nodes on which none of t's static host ports is taken.
// For a task without static host ports it returns nodes itself.
func portFree(t api.Task, nodes []api.Node, ports HostPortUse) []api.Node {
	if len(ports) == 0 || len(t.PortBindings) == 0 {
		return nodes
	}
	out := make([]api.Node, 0, len(nodes))
	for _, n := range nodes {
		if _, _, taken := ports.taken(n.Name, t); !taken {
			out = append(out, n)
		}
	}
	return out
}

// portClashMemory is how long a worker stays out of the candidates for a
// host port a start failed for there.
func (l *loop) portClashMemory() time.Duration {
	if d := l.m.cfg.PortClashMemory; d > 0 {
		return d
	}
	return 30 * time.Second
}

// usedPorts is UsedHostPorts(tasks) plus the ports remembered as taken on a
// worker's machine by something else (held by uuid.Nil); it forgets the
// memories that expired.
func (l *loop) usedPorts(tasks []*api.Task) HostPortUse {
	u := UsedHostPorts(tasks)
	now := time.Now()
	for w, m := range l.clashes {
		for p, until := range m {
			if !now.Before(until) {
				delete(m, p)
				continue
			}
			if u[w] == nil {
				u[w] = map[string]uuid.UUID{}
			}
			if _, held := u[w][p]; !held {
				u[w][p] = uuid.Nil
			}
		}
		if len(m) == 0 {
			delete(l.clashes, w)
		}
	}
	return u
}

// portClash handles a task whose start failed because a static host port
// was taken on its worker's machine. That is a failed placement, not a
// failure of the app: the worker is kept out of the candidates for those
// ports for a while (also in ports, for the rest of the pass), and the task
// goes back to Pending, not counted as a restart, to be placed elsewhere, or
// to wait with the reason when its ports are taken everywhere.
func (l *loop) portClash(ctx context.Context, t api.Task, ports HostPortUse) {
	until := time.Now().Add(l.portClashMemory())
	m := l.clashes[t.Worker]
	if m == nil {
		m = map[string]time.Time{}
		l.clashes[t.Worker] = m
	}
	held := ports[t.Worker]
	if held == nil && ports != nil {
		held = map[string]uuid.UUID{}
		ports[t.Worker] = held
	}
	for _, p := range t.StaticHostPorts() {
		m[p] = until
		if _, ok := held[p]; !ok && held != nil {
			held[p] = uuid.Nil
		}
	}
	reason := fmt.Sprintf("host port %s was taken on worker %s; placing it on another worker", strings.Join(t.StaticHostPorts(), ", "), t.Worker)
	if _, err := l.m.apply(ctx, fsm.RequeueTask{ID: t.ID, Reason: reason, Time: time.Now().UTC()}); err != nil {
		l.log.Warn("requeue task after a host port clash", "task_id", t.ID, "error", err)
		return
	}
	l.log.Info("task requeued: its host port was taken", "task_id", t.ID, "worker", t.Worker, "generation", t.Generation, "ports", t.StaticHostPorts(), "start_error", t.Reason)
}

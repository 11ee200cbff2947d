package manager

import (
	"maps"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// HostPortUse records, per worker, the static host ports ("7777/tcp", see
// api.Task.StaticHostPorts) bound there and the task holding each. Like the
// allocation of cpu, memory and disk (fsm.Nodes), it is derived from the
// replicated tasks placed on a worker (Scheduled or Running), never sampled.
type HostPortUse map[string]map[string]uuid.UUID

// UsedHostPorts derives the host ports held on each worker from tasks.
func UsedHostPorts(tasks []api.Task) HostPortUse {
	u := HostPortUse{}
	for _, t := range tasks {
		if t.Worker == "" || (t.State != api.Scheduled && t.State != api.Running) {
			continue
		}
		u.take(t.Worker, t)
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

package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// CheckServiceState checks the converged state of the services (issue 14):
// each service that exists runs exactly Count tasks, all of its current
// Version, each Running in exactly one container (running counts running
// containers per task, as for CheckRunningOnce); no task of a service that
// does not exist is to run, nor has a running container. It returns one
// line per violation, in a fixed order (nil for none).
//
// A service's live tasks are what its leader counts: DesiredState Running
// and not finished for good (a task waiting for its restart is live, and
// not Running: a violation once the cluster should have converged).
//
// A service whose rollout to its current version failed, with no healthy
// version to roll back to (halted: manager/DESIGN.md, "Services"), keeps
// the tasks of the versions it was replacing by design, as Nomad keeps a
// failed deployment's old allocations: under chaos a new version's task
// can fail its health check on a starved machine before any version has
// settled. Its tasks may be of older versions; every other check holds.
// A line about a service's versions names its rollout, so that a stuck
// one says why.
func CheckServiceState(services []api.Service, final []api.Task, running map[string]int) []string {
	counts := make(map[string]int, len(running))
	for label, n := range running {
		if id, err := uuid.Parse(label); err == nil {
			label = id.String()
		}
		counts[label] += n
	}
	exists := make(map[string]api.Service, len(services))
	for _, s := range services {
		exists[s.Name] = s
	}
	live := make(map[string][]api.Task)
	var out []string
	for _, t := range final {
		if t.Service == "" {
			continue
		}
		if _, ok := exists[t.Service]; !ok {
			switch {
			case t.DesiredState == api.Running && !t.Finished():
				out = append(out, fmt.Sprintf("service %s does not exist, but its task %s (%s) is to run", t.Service, t.Name, short(t.ID)))
			case counts[t.ID.String()] > 0:
				out = append(out, fmt.Sprintf("service %s does not exist, but its task %s (%s) runs in %d container(s)", t.Service, t.Name, short(t.ID), counts[t.ID.String()]))
			}
			continue
		}
		if t.DesiredState == api.Running && !t.Finished() {
			live[t.Service] = append(live[t.Service], t)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(exists)) {
		s := exists[name]
		ts := live[name]
		sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
		halted := Halted(s)
		if len(ts) != s.Count {
			out = append(out, fmt.Sprintf("service %s: %d live task(s), want Count %d", name, len(ts), s.Count))
		}
		versions := make(map[uint64]int)
		for _, t := range ts {
			versions[t.ServiceVersion]++
			switch {
			case halted && t.ServiceVersion > s.Version:
				out = append(out, fmt.Sprintf("service %s: task %s (%s) is of version %d, newer than the service's %d (%s)", name, t.Name, short(t.ID), t.ServiceVersion, s.Version, rolloutOf(s)))
			case !halted && t.ServiceVersion != s.Version:
				out = append(out, fmt.Sprintf("service %s: task %s (%s) is of version %d, the service's is %d (%s)", name, t.Name, short(t.ID), t.ServiceVersion, s.Version, rolloutOf(s)))
			}
			if t.State != api.Running {
				out = append(out, fmt.Sprintf("service %s: task %s (%s) is %s, not Running", name, t.Name, short(t.ID), t.State))
			}
			if n := counts[t.ID.String()]; n != 1 {
				out = append(out, fmt.Sprintf("service %s: task %s (%s) runs in %d containers, want 1", name, t.Name, short(t.ID), n))
			}
		}
		if len(versions) > 1 && !halted {
			out = append(out, fmt.Sprintf("service %s: live tasks of %d versions %v (%s)", name, len(versions), slices.Sorted(maps.Keys(versions)), rolloutOf(s)))
		}
	}
	return out
}

// Halted reports whether s's rollout to its current version failed and
// stopped there (no healthy version to roll back to).
func Halted(s api.Service) bool {
	return s.Rollout != nil && s.Rollout.State == api.RolloutFailed && s.Rollout.To == s.Version
}

// rolloutOf describes s's last rollout for a violation line.
func rolloutOf(s api.Service) string {
	r := s.Rollout
	if r == nil {
		return "no rollout"
	}
	out := fmt.Sprintf("rollout %d→%d %s, %d replaced", r.From, r.To, r.State, r.Replaced)
	if r.Reason != "" {
		out += ": " + r.Reason
	}
	return out
}

func short(id uuid.UUID) string { return id.String()[:8] }

// newest returns the highest version a service has had: its current one,
// or a newer one in its history when a rollback made an older one current.
func newest(s api.Service) uint64 {
	v := s.Version
	for _, h := range s.History {
		v = max(v, h.Version)
	}
	return v
}

// CheckServicesAcknowledged checks the final services against what the
// clients were told, and returns one line per violation (nil for none):
//
//   - lost: a service whose create, scale or update was acknowledged is
//     absent at the end, and no delete of it (acknowledged, or of unknown
//     outcome) can have come after that write;
//   - lost update: a service whose update was acknowledged with version V
//     has never had a version as high as V at the end (its current Version,
//     or a newer one in its history: an automatic rollback makes an older
//     version current), and no delete can have come after the update (a
//     service deleted and made again starts at version 1);
//   - resurrected: a service whose delete was acknowledged exists at the
//     end, and no create or update (acknowledged, or of unknown outcome)
//     can have come after that delete.
//
// An operation of unknown outcome may take effect at any time after its
// call; an acknowledged one took effect between its call and its return.
// So a write W can come after an operation D if W is unknown or W's return
// is after D's call.
func CheckServicesAcknowledged(ops []Op, services []api.Service) []string {
	exists := make(map[string]api.Service, len(services))
	for _, s := range services {
		exists[s.Name] = s
	}
	byName := make(map[string][]Op)
	for _, op := range ops {
		if op.Kind.IsService() {
			byName[op.Service] = append(byName[op.Service], op)
		}
	}
	canFollow := func(later, earlier Op) bool {
		return later.Outcome == Unknown || (later.Outcome == OK && later.Return > earlier.Call)
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		list := byName[name]
		s, ok := exists[name]
		deletedAfter := func(w Op) bool {
			for _, d := range list {
				if d.Kind == SvcDelete && canFollow(d, w) {
					return true
				}
			}
			return false
		}
		for _, w := range list {
			if w.Outcome != OK {
				continue
			}
			switch {
			case w.Kind == SvcDelete && ok:
				recreated := false
				for _, c := range list {
					if (c.Kind == SvcCreate || c.Kind == SvcUpdate) && canFollow(c, w) {
						recreated = true
					}
				}
				if !recreated {
					out = append(out, fmt.Sprintf("service %s: resurrected: its delete was acknowledged at %d, nothing made it again, and it exists (version %d)", name, w.Return, s.Version))
				}
			case w.Kind == SvcDelete:
			case !ok && !deletedAfter(w):
				out = append(out, fmt.Sprintf("service %s: lost: its %s (Count %d, version %d) was acknowledged and no delete followed, but it does not exist", name, w.Kind, w.Count, w.Version))
			case ok && w.Kind == SvcUpdate && newest(s) < w.Version && !deletedAfter(w):
				out = append(out, fmt.Sprintf("service %s: lost update: version %d was acknowledged, but the service's newest version is %d", name, w.Version, newest(s)))
			}
		}
	}
	return out
}

// ServiceStats sums up the services of a run for the report.
type ServiceStats struct {
	// Services and Tasks count the services at the end and their live
	// tasks; RolledBack those whose last rollout was rolled back, Halted
	// those whose rollout failed with no version to roll back to.
	Services, Tasks, RolledBack, Halted int
	// Acknowledged counts the services whose create was acknowledged.
	Acknowledged int
}

// SumServices counts the final services, their live tasks and rollbacks,
// and the acknowledged creates.
func SumServices(ops []Op, services []api.Service, final []api.Task) ServiceStats {
	st := ServiceStats{Services: len(services)}
	exists := make(map[string]bool, len(services))
	for _, s := range services {
		exists[s.Name] = true
		if s.Rollout != nil && s.Rollout.State == api.RolloutRolledBack {
			st.RolledBack++
		}
		if Halted(s) {
			st.Halted++
		}
	}
	for _, t := range final {
		if exists[t.Service] && t.DesiredState == api.Running && !t.Finished() {
			st.Tasks++
		}
	}
	acked := make(map[string]bool)
	for _, op := range ops {
		if op.Kind == SvcCreate && op.Outcome == OK {
			acked[op.Service] = true
		}
	}
	st.Acknowledged = len(acked)
	return st
}

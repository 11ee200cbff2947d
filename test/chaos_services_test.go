package test

// The chaos clients' service operations (issue 14): create a small service
// of echo tasks with their health check, scale it, change its template (a
// rolling update), now and then delete it, each through the client's random
// manager and recorded in the history like the task operations. After
// healing, each service must run exactly Count tasks of its version (one
// container each), no deleted service's task may run, and no acknowledged
// change may be lost (chaos.CheckServiceState, CheckServicesAcknowledged).

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/chaos"
)

// A client makes a service operation instead of a task operation once in
// svcOneIn turns. The services' tasks count in the bound on active tasks,
// and together stay within half of it, so that plain tasks keep a share:
// every update replaces all of a service's tasks, batch by batch, and a
// rollout waits MinHealthyTime per batch, so the services are a heavier
// churn per operation than tasks.
const (
	svcOneIn    = 10
	svcMaxCount = 3
)

// chaosService is the template of the chaos services: echoService's (a
// health check, MaxParallel 1, MinHealthyTime 1 s, AutoRevert) with the
// default HealthyDeadline (5 min): under faults a batch may well take more
// than the 20 s of the e2e tests, and a rollout failed with no healthy
// version to go back to would stay half done by design.
func chaosService(name string, count int, gen int) api.Service {
	s := echoService(name, count)
	s.Update.HealthyDeadline = ""
	s.Task.Env = []string{fmt.Sprintf("CHAOS_GEN=%d", gen)}
	return s
}

// serviceOp runs one service operation through cl and records it; false
// if there was none to make (no room for a new service, none to change),
// and the client makes a task operation instead.
func (r *chaosRun) serviceOp(ctx context.Context, cl *api.Client, client int) bool {
	r.mu.Lock()
	names := make([]string, 0, len(r.svcs))
	load := 0
	for n, c := range r.svcs {
		names = append(names, n)
		load += c
	}
	r.mu.Unlock()
	sort.Strings(names)
	budget := max(r.maxActive/2, svcMaxCount)
	k := r.intn(20)
	count := 1 + r.intn(svcMaxCount)
	if len(names) == 0 || k < 4 { // create
		if load+count > budget {
			return false
		}
		r.mu.Lock()
		r.svcSeq++
		name := fmt.Sprintf("chaos-%d-%d", client, r.svcSeq)
		r.svcs[name] = count // counted while the call runs
		r.mu.Unlock()
		p := r.rec.BeginService(client, chaos.SvcCreate, name, count)
		st, err := cl.CreateService(ctx, chaosService(name, count, r.intn(1_000_000)))
		p.EndService(st, err)
		if chaos.ClassifyWrite(err) == chaos.Fail {
			r.forget(name)
		}
		return true
	}
	name := names[r.intn(len(names))]
	r.mu.Lock()
	cur := r.svcs[name]
	r.mu.Unlock()
	switch {
	case k < 11: // scale
		if load-cur+count > budget {
			return false
		}
		r.setCount(name, max(cur, count))
		p := r.rec.BeginService(client, chaos.SvcScale, name, count)
		st, err := cl.ScaleService(ctx, name, count)
		p.EndService(st, err)
		r.settle(name, cur, count, err)
	case k < 18: // update the template: a new version, a rolling update
		p := r.rec.BeginService(client, chaos.SvcUpdate, name, cur)
		st, _, err := cl.PutService(ctx, chaosService(name, cur, r.intn(1_000_000)))
		p.EndService(st, err)
		r.settle(name, cur, cur, err)
	default: // delete
		p := r.rec.BeginService(client, chaos.SvcDelete, name, 0)
		err := cl.DeleteService(ctx, name)
		p.EndService(api.ServiceStatus{}, err)
		if err == nil || errors.Is(err, api.ErrNotFound) {
			r.forget(name)
		}
		// Unknown: it may still exist; it keeps its share until an
		// operation on it is answered 404.
	}
	return true
}

// settle updates the bookkeeping of a service after a scale or update
// that asked for count, the service having had up to cur.
func (r *chaosRun) settle(name string, cur, count int, err error) {
	switch {
	case err == nil:
		r.setCount(name, count)
	case errors.Is(err, api.ErrNotFound):
		r.forget(name)
	case chaos.ClassifyWrite(err) == chaos.Fail:
		r.setCount(name, cur)
	default: // unknown: either
		r.setCount(name, max(cur, count))
	}
}

func (r *chaosRun) setCount(name string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.svcs[name] = n
}

func (r *chaosRun) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.svcs, name)
}

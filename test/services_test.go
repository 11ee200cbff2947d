package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
)

// Services end to end on real binaries (issue 14): a service keeps Count
// tasks, scales at once, rolls out a new version batch by batch without
// dropping below Count−MaxParallel healthy copies, rolls back a bad
// version by itself, and carries a rollout on across a leader's death.

// echoService is a service of echo tasks with a health check.
func echoService(name string, count int) api.Service {
	return api.Service{Name: name, Count: count,
		Task: api.Task{Image: "cube-echo:latest", ExposedPorts: api.PortSet{"7777/tcp": {}}, HealthCheck: "/health",
			HealthCheckInterval: "300ms", HealthCheckGrace: "1s"},
		Update: api.UpdatePolicy{MaxParallel: 1, MinHealthyTime: "1s", HealthyDeadline: "20s", AutoRevert: true}}
}

// svcRT is a cluster and a client for the service tests.
type svcRT struct {
	t  *testing.T
	c  *ProcCluster
	cl *api.Client
	hc *http.Client
}

func newSvcRT(t *testing.T, workers int) *svcRT {
	c := NewProcCluster(t, 3, workers)
	return &svcRT{t: t, c: c, cl: c.Client(), hc: &http.Client{Timeout: time.Second}}
}

func (r *svcRT) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// serviceTasks returns the tasks of the service that are to run.
func (r *svcRT) serviceTasks(name string) ([]api.Task, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	tasks, err := r.cl.Tasks(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []api.Task
	for _, t := range tasks {
		if t.Service == name && t.DesiredState == api.Running && !t.Finished() {
			out = append(out, t)
		}
	}
	return out, nil
}

// answers reports whether the task's /health answers 200, probed from
// here, whatever the leader thinks. A probe that fails is made once more:
// on a loaded machine (race-enabled binaries, other tests) one slow answer
// is not an outage.
func (r *svcRT) answers(t api.Task) bool {
	for _, b := range t.HostPorts["7777/tcp"] {
		if strings.Contains(b.HostIp, ":") {
			continue
		}
		for range 2 {
			resp, err := r.hc.Get("http://127.0.0.1:" + b.HostPort + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return true
				}
			}
		}
		return false
	}
	return false
}

// healthy counts the service's tasks that run, are to run, and answer;
// the tasks it returns have Reason "answers" when they did (for messages).
func (r *svcRT) healthy(name string) (int, []api.Task, error) {
	tasks, err := r.serviceTasks(name)
	if err != nil {
		return 0, nil, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for i, t := range tasks {
		tasks[i].Reason = ""
		if t.State != api.Running {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.answers(t) {
				mu.Lock()
				n++
				tasks[i].Reason = "answers"
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return n, tasks, nil
}

// waitSettled waits until the service runs exactly Count healthy tasks,
// all of version, and its status says so.
func (r *svcRT) waitSettled(name string, count int, version uint64, within time.Duration) api.ServiceStatus {
	r.t.Helper()
	var st api.ServiceStatus
	testkit.Eventually(r.t, within, func() error {
		n, tasks, err := r.healthy(name)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			if t.ServiceVersion != version {
				return fmt.Errorf("task %s is of version %d, want %d", t.Name, t.ServiceVersion, version)
			}
		}
		if len(tasks) != count || n != count {
			return fmt.Errorf("%d tasks to run, %d answer; want %d", len(tasks), n, count)
		}
		ctx, cancel := r.ctx()
		defer cancel()
		st, err = r.cl.Service(ctx, name)
		if err != nil {
			return err
		}
		if st.Version != version || st.Running != count || st.Healthy != count {
			return fmt.Errorf("status: version %d, %d running, %d healthy; want version %d, %d", st.Version, st.Running, st.Healthy, version, count)
		}
		return nil
	})
	return st
}

// sampler counts the service's healthy tasks every 100 ms until stopped,
// and remembers the lowest count seen.
type sampler struct {
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	min    int
	at     string
	errors int
	n      int
}

func (r *svcRT) sample(name string) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}), min: 1 << 30}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			n, tasks, err := r.healthy(name)
			s.mu.Lock()
			if err != nil {
				s.errors++
			} else {
				s.n++
				if n < s.min {
					var desc []string
					for _, t := range tasks {
						desc = append(desc, fmt.Sprintf("%s v%d %s gen %d %s (%s)", t.Name, t.ServiceVersion, t.State, t.Generation, t.Worker, t.Reason))
					}
					s.min, s.at = n, strings.Join(desc, ", ")
				}
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sampler) end() (min, samples int, at string) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.min, s.n, s.at
}

func TestServices_CountScaleUpdateRollback(t *testing.T) {
	r := newSvcRT(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	web := echoService("web", 3)
	if _, err := r.cl.CreateService(ctx, web); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st := r.waitSettled("web", 3, 1, 90*time.Second)
	t.Logf("3 tasks running and healthy in %s", time.Since(start))
	testkit.Eventually(t, 30*time.Second, func() error {
		st, err := r.cl.Service(ctx, "web")
		if err != nil || len(st.History) != 1 || !st.History[0].Healthy {
			return fmt.Errorf("version 1 not marked healthy: %+v, %v", st.History, err)
		}
		return nil
	})
	if st.History[0].By == "" {
		t.Errorf("version 1 names no author: %+v", st.History[0])
	}

	// Scale 3 → 6 → 2, then back to 3.
	for _, n := range []int{6, 2, 3} {
		start := time.Now()
		if _, err := r.cl.ScaleService(ctx, "web", n); err != nil {
			t.Fatal(err)
		}
		r.waitSettled("web", n, 1, 90*time.Second)
		t.Logf("scaled to %d in %s", n, time.Since(start))
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		tasks, err := r.serviceTasks("web")
		if err != nil {
			return err
		}
		ids := map[string]bool{}
		for _, task := range tasks {
			ids[task.ID.String()] = true
		}
		for id, cts := range r.c.Containers() {
			if len(cts) > 1 {
				return fmt.Errorf("task %s has %d containers", id, len(cts))
			}
		}
		running := 0
		for id := range r.c.Containers() {
			if ids[id] {
				running++
			}
		}
		if running != 3 || len(r.c.Containers()) != 3 {
			return fmt.Errorf("%d containers of the service's 3 tasks, %d in all; want 3", running, len(r.c.Containers()))
		}
		return nil
	})

	// A rolling update with MaxParallel 1 never drops below 2 healthy.
	web.Task.Env = []string{"VERSION=2"}
	s := r.sample("web")
	start = time.Now()
	if st, _, err := r.cl.PutService(ctx, web); err != nil || st.Version != 2 {
		t.Fatalf("update: %+v, %v", st, err)
	}
	r.waitSettled("web", 3, 2, 2*time.Minute)
	testkit.Eventually(t, 30*time.Second, func() error {
		st, err := r.cl.Service(ctx, "web")
		if err != nil || st.Rollout == nil || st.Rollout.State != api.RolloutCompleted || st.Rollout.Replaced != 3 {
			return fmt.Errorf("rollout not completed: %+v, %v", st.Rollout, err)
		}
		return nil
	})
	min, n, at := s.end()
	t.Logf("rolling update of 3 in %s; lowest healthy count %d over %d samples", time.Since(start), min, n)
	if min < 2 || n < 10 {
		t.Fatalf("lowest healthy count during the update: %d over %d samples (at: %s); want ≥ 2", min, n, at)
	}

	// A bad version (the echo exits at start) is rolled back by itself.
	bad := web
	bad.Task.Env = []string{"VERSION=3", "ECHO_EXIT_AT_START=1"}
	bad.Update.HealthyDeadline = "10s"
	s = r.sample("web")
	start = time.Now()
	if st, _, err := r.cl.PutService(ctx, bad); err != nil || st.Version != 3 {
		t.Fatalf("bad update: %+v, %v", st, err)
	}
	testkit.Eventually(t, 90*time.Second, func() error {
		st, err := r.cl.Service(ctx, "web")
		if err != nil || st.Version != 2 || st.Rollout == nil || st.Rollout.State != api.RolloutRolledBack {
			return fmt.Errorf("not rolled back: version %d, rollout %+v, %v", st.Version, st.Rollout, err)
		}
		return nil
	})
	r.waitSettled("web", 3, 2, 2*time.Minute)
	min, n, at = s.end()
	t.Logf("bad update rolled back and healthy again in %s; lowest healthy count %d over %d samples", time.Since(start), min, n)
	if min < 2 {
		t.Fatalf("lowest healthy count during the bad update: %d (at: %s); want ≥ 2", min, at)
	}

	// A rollback by hand goes back to version 1, the last healthy before 2.
	if st, err := r.cl.RollbackService(ctx, "web"); err != nil || st.Version != 1 {
		t.Fatalf("rollback: %+v, %v", st, err)
	}
	r.waitSettled("web", 3, 1, 2*time.Minute)

	// Deleting it stops every container.
	if err := r.cl.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		if n := len(r.c.Containers()); n != 0 {
			return fmt.Errorf("%d containers still run", n)
		}
		return nil
	})
}

// A leader killed in the middle of a rollout: the new leader carries it
// on from where it was, neither starting it over nor stalling.
func TestServices_LeaderKilledMidRollout(t *testing.T) {
	r := newSvcRT(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	web := echoService("web", 3)
	web.Update.MinHealthyTime = "3s"
	if _, err := r.cl.CreateService(ctx, web); err != nil {
		t.Fatal(err)
	}
	r.waitSettled("web", 3, 1, 90*time.Second)
	testkit.Eventually(t, 30*time.Second, func() error {
		st, err := r.cl.Service(ctx, "web")
		if err != nil || !st.History[0].Healthy {
			return fmt.Errorf("version 1 not healthy yet: %v", err)
		}
		return nil
	})
	web.Task.Env = []string{"VERSION=2"}
	if _, _, err := r.cl.PutService(ctx, web); err != nil {
		t.Fatal(err)
	}
	var replaced int
	testkit.Eventually(t, 60*time.Second, func() error {
		st, err := r.cl.Service(ctx, "web")
		if err != nil || st.Rollout == nil || st.Rollout.Replaced < 1 {
			return fmt.Errorf("rollout not under way: %+v, %v", st.Rollout, err)
		}
		replaced = st.Rollout.Replaced
		return nil
	})
	if replaced >= 3 {
		t.Fatalf("the rollout was done before the leader could be killed (replaced %d)", replaced)
	}
	leader := r.c.LeaderProc()
	s := r.sample("web")
	r.c.Kill(leader)
	t.Logf("killed leader %s with %d of 3 replaced", leader.Name, replaced)
	start := time.Now()
	r.waitSettled("web", 3, 2, 2*time.Minute)
	testkit.Eventually(t, 30*time.Second, func() error {
		st, err := r.cl.Service(ctx, "web")
		if err != nil || st.Rollout == nil || st.Rollout.State != api.RolloutCompleted {
			return fmt.Errorf("rollout not completed: %+v, %v", st.Rollout, err)
		}
		if st.Rollout.Replaced != 3 {
			return fmt.Errorf("rollout replaced %d, want 3 (started over?)", st.Rollout.Replaced)
		}
		return nil
	})
	min, n, at := s.end()
	t.Logf("rollout completed %s after the leader's death; lowest healthy %d over %d samples", time.Since(start), min, n)
	if min < 2 {
		t.Errorf("lowest healthy count across the leader change: %d (at: %s)", min, at)
	}
	all, err := r.cl.Tasks(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	v2 := 0
	for _, task := range all {
		if task.Service == "web" && task.ServiceVersion == 2 {
			v2++
		}
	}
	if v2 != 3 {
		t.Fatalf("%d tasks of version 2 were made, want 3", v2)
	}
}

// A service of 3 on 3 workers runs one task on each (the scheduler's
// spread of a service's tasks, issue 14's labels work). Then a worker's
// machine dies (its process and containers killed, as the chaos suite's
// worker-machine-crash): the service runs 3 tasks again on the other two,
// spread as far as they allow (2 and 1), each in one container.
func TestServices_SpreadOneByOne(t *testing.T) {
	r := newSvcRT(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// On empty workers E-PVM alone spreads them too; the scheduler's spread
	// of a service's tasks (the labels work of issue 14) is what keeps it
	// so under other load.
	if _, err := r.cl.CreateService(ctx, echoService("spread", 3)); err != nil {
		t.Fatal(err)
	}
	r.waitSettled("spread", 3, 1, 90*time.Second)
	tasks, err := r.serviceTasks("spread")
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]int{}
	for _, task := range tasks {
		on[task.Worker]++
	}
	if len(on) != 3 {
		t.Fatalf("3 tasks of one service on %d workers: %v", len(on), on)
	}

	dead := r.c.Workers[0]
	start := time.Now()
	machineCrashWorker(t, r.c, dead)
	r.waitSettled("spread", 3, 1, 2*time.Minute)
	t.Logf("3 tasks running and healthy again %s after %s died", time.Since(start).Round(time.Millisecond), dead.Name)
	tasks, err = r.serviceTasks("spread")
	if err != nil {
		t.Fatal(err)
	}
	on = map[string]int{}
	for _, task := range tasks {
		on[task.Worker]++
	}
	if on[dead.Name] != 0 || len(on) != 2 {
		t.Fatalf("after %s died, 3 tasks on %v; want 2 and 1 on the other two", dead.Name, on)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		cts := r.c.ContainersOn(r.c.Workers[1:]...)
		for _, task := range tasks {
			if n := len(cts[task.ID.String()]); n != 1 {
				return fmt.Errorf("task %s runs in %d containers", task.Name, n)
			}
		}
		if len(cts) != 3 {
			return fmt.Errorf("%d tasks with containers on the live workers, want 3", len(cts))
		}
		return nil
	})
}

//go:build bench

package test

// The service rows of the benchmark (issue 14), Cube beside Docker Swarm on
// the same engine with the same echo image:
//
//   - svc-scale: a service of 0 scaled to 50 → all 50 running (as the
//     orchestrator reports) and answering GET /health from this process;
//   - svc-update: a rolling update of 10 replicas, 2 at a time (an Env
//     change) → the 10 copies to run are all of the new version, running and
//     answering;
//   - svc-rollback: a bad update (the new version exits at start) → rolled
//     back by the orchestrator itself, the 10 copies of the old version
//     running and answering.
//
// During the two update rows a sampler counts, every 100 ms, the service's
// running containers (as the engine lists them) that answer GET /health:
// the smallest count is the row's "min healthy". Both sides are counted the
// same way, from outside, whatever each orchestrator thinks.
//
// Alone: BENCH_ONLY=services (or svc-scale,svc-update,svc-rollback)
// BENCH_INSECURE=0 make bench. BENCH_SVC_TRIALS (5) sets the trials of each
// row, BENCH_SVC_SCALE (50) the size of the scale row.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// The services' fixed parameters.
const (
	benchSvcCount    = 10
	benchSvcParallel = 2
	benchSvcSample   = 100 * time.Millisecond
	// The health check, the same on both sides: every 1 s, 1 s timeout,
	// 2 failures in a row, 1 s start-up grace (Swarm: start period). 1 s
	// rather than the recovery rows' 300 ms: a Swarm check is a process
	// exec'd in the container, and 10-12 of them every 300 ms load a
	// 2-core machine's engine.
	benchSvcHealthEvery = time.Second
	// Cube's MinHealthyTime and HealthyDeadline; Swarm's update monitor
	// (how long after a task's update a failure counts) as shipped.
	benchSvcMinHealthy = "500ms"
	benchSvcDeadline   = "10s"
	benchSvcMonitor    = 5 * time.Second
)

func init() {
	n := benchEnvInt("BENCH_SVC_SCALE", 50)
	benchMeasures = append(benchMeasures,
		benchMeasure{Key: "svc-scale", Name: fmt.Sprintf("service scaled 0 → %d (Cube: POST /services/{name}/scale; Swarm: replicas 0 → %d through the API, as `docker service scale`) → all %d running and answering /health", n, n, n),
			Short: fmt.Sprintf("service 0 → %d → all answering", n), Anchor: "—", Goal: "faster than Swarm on the same engine", VsSwarm: true},
		benchMeasure{Key: "svc-update", Name: fmt.Sprintf("rolling update of %d replicas, %d at a time (an Env change; health check 1 s × 2) → all %d on the new version, running and answering; min healthy = fewest copies answering /health in any 100 ms sample",
			benchSvcCount, benchSvcParallel, benchSvcCount),
			Short: fmt.Sprintf("rolling update %d × %d → all new", benchSvcCount, benchSvcParallel), Anchor: "—",
			Goal: fmt.Sprintf("faster than Swarm; min healthy ≥ %d", benchSvcCount-benchSvcParallel), VsSwarm: true, MinHealthy: benchSvcCount - benchSvcParallel},
		benchMeasure{Key: "svc-rollback", Name: fmt.Sprintf("bad update of %d replicas, %d at a time (the new version exits at start) → rolled back by itself, all %d on the old version, running and answering; min healthy as above",
			benchSvcCount, benchSvcParallel, benchSvcCount),
			Short: "bad update → rolled back", Anchor: "—",
			Goal: fmt.Sprintf("faster than Swarm; min healthy ≥ %d", benchSvcCount-benchSvcParallel), VsSwarm: true, MinHealthy: benchSvcCount - benchSvcParallel},
	)
}

// benchSvcKeys are the BENCH_ONLY keys of the service rows.
var benchSvcKeys = []string{"services", "svc-scale", "svc-update", "svc-rollback"}

// svcParams records the rows' parameters in the run.
func (b *bench) svcParams() {
	if b.run.Params == nil {
		b.run.Params = map[string]any{}
	}
	b.run.Params["services"] = map[string]any{
		"trials":        benchEnvInt("BENCH_SVC_TRIALS", 5),
		"scale_to":      benchEnvInt("BENCH_SVC_SCALE", 50),
		"update_count":  benchSvcCount,
		"max_parallel":  benchSvcParallel,
		"sample_ms":     benchSvcSample.Milliseconds(),
		"healthy":       "a running container of the service (engine's list) whose published 7777 answers GET /health 200 from the benchmark (0.5 s timeout, one retry), the same for both",
		"cube_update":   fmt.Sprintf("MaxParallel %d, MinHealthyTime %s, HealthyDeadline %s, AutoRevert; health check HTTP GET /health every 1 s, timeout 1 s, threshold 2, grace 1 s", benchSvcParallel, benchSvcMinHealthy, benchSvcDeadline),
		"swarm_update":  fmt.Sprintf("--update-parallelism %d --update-delay 0s --update-order stop-first --update-failure-action rollback --update-monitor %s --update-max-failure-ratio 0 --rollback-parallelism %d; health check exec [\"/echo\", \"-health\"] (GET /health inside the container) every 1 s, timeout 1 s, retries 2, start period 1 s", benchSvcParallel, benchSvcMonitor, benchSvcParallel),
		"bad_version":   "Env ECHO_EXIT_AT_START=1: the process exits with code 1 before it listens",
		"scale_service": "no health check (as the placement row): running = the orchestrator says so, answering = probed from the benchmark",
	}
}

// ---------------------------------------------------------------------------
// Counting healthy copies from outside.

// benchSvcProbe answers whether a container's published 7777 answers.
type benchSvcProbe struct {
	cli  *client.Client
	hc   *http.Client
	list func(ctx context.Context) ([]container.Summary, error)
}

// port returns a container's published host port of 7777/tcp (IPv4).
func (p *benchSvcProbe) port(c container.Summary) string {
	for _, pt := range c.Ports {
		if pt.PrivatePort == 7777 && pt.PublicPort != 0 && !strings.Contains(pt.IP, ":") {
			return strconv.Itoa(int(pt.PublicPort))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	in, err := p.cli.ContainerInspect(ctx, c.ID)
	if err != nil || in.NetworkSettings == nil {
		return ""
	}
	for _, pb := range in.NetworkSettings.Ports["7777/tcp"] {
		if !strings.Contains(pb.HostIP, ":") {
			return pb.HostPort
		}
	}
	return ""
}

func (p *benchSvcProbe) answers(port string) bool {
	if port == "" {
		return false
	}
	for range 2 {
		resp, err := p.hc.Get("http://127.0.0.1:" + port + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
	}
	return false
}

// healthy returns the IDs of the running containers that answer now.
func (p *benchSvcProbe) healthy() (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := p.list(ctx)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]bool{}
	for _, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.answers(p.port(c)) {
				mu.Lock()
				out[c.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// benchSvcSampler counts the healthy copies every benchSvcSample.
type benchSvcSampler struct {
	stop, done chan struct{}
	mu         sync.Mutex
	min, n     int
	errs       int
}

func (p *benchSvcProbe) sample() *benchSvcSampler {
	s := &benchSvcSampler{stop: make(chan struct{}), done: make(chan struct{}), min: 1 << 30}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(benchSvcSample)
		defer tick.Stop()
		for {
			h, err := p.healthy()
			s.mu.Lock()
			if err != nil {
				s.errs++
			} else {
				s.n++
				s.min = min(s.min, len(h))
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// end stops the sampler: the smallest count and the number of samples.
func (s *benchSvcSampler) end() (int, int) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return -1, 0
	}
	return s.min, s.n
}

// addSvc records a trial with its min healthy.
func (b *bench) addSvc(s *benchSeries, total int, t0, end time.Time, p map[string]float64, minHealthy, samples int) {
	b.add(s, total, t0, end, p, fmt.Sprintf("min healthy %d of %d, %d samples", minHealthy, benchSvcCount, samples))
	tr := &s.Trials[len(s.Trials)-1]
	tr.MinHealthy, tr.Samples = &minHealthy, samples
	lo := minHealthy
	if v, ok := s.Extra["min_healthy"]; ok {
		lo = min(lo, int(v))
	}
	if s.Extra == nil {
		s.Extra = map[string]float64{}
	}
	s.Extra["min_healthy"] = float64(lo)
	s.Extra["count"] = benchSvcCount
}

// ---------------------------------------------------------------------------
// Cube.

// cubeServices measures the service rows on a cluster of their own.
func (b *bench) cubeServices(ev *benchEvents) {
	if !b.want(benchSvcKeys...) {
		return
	}
	b.svcParams()
	c := b.newCluster()
	defer c.Close()
	cl := benchClient(c, c.Managers, 5*time.Second, 20*time.Second)
	cli := dockerClient(b.t)
	defer cli.Close()
	probe := &benchSvcProbe{cli: cli, hc: &http.Client{Timeout: 500 * time.Millisecond}, list: func(ctx context.Context) ([]container.Summary, error) {
		list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", benchTaskLabel), filters.Arg("status", "running"))})
		var mine []container.Summary
		for _, ct := range list {
			if strings.HasPrefix(ct.Labels["cube.worker"], c.Prefix) {
				mine = append(mine, ct)
			}
		}
		return mine, err
	}}
	if b.want("services", "svc-scale") {
		b.cubeSvcScale(c, cl, ev, probe)
	}
	if b.want("services", "svc-update", "svc-rollback") {
		b.cubeSvcUpdate(c, cl, probe)
	}
	b.copyLogs(c, "services-"+b.sys)
}

func benchCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (b *bench) cubeSvcScale(c *ProcCluster, cl *api.Client, ev *benchEvents, probe *benchSvcProbe) {
	n, trials := benchEnvInt("BENCH_SVC_SCALE", 50), benchEnvInt("BENCH_SVC_TRIALS", 5)
	s := b.series("svc-scale", b.sys)
	name := "bench-scale"
	ctx, cancel := benchCtx()
	// No health check: Swarm's scale service has none either.
	_, err := cl.CreateService(ctx, api.Service{Name: name, Count: 0, Task: api.Task{Image: "cube-echo:latest", ExposedPorts: api.PortSet{"7777/tcp": {}}}})
	cancel()
	if err != nil {
		b.t.Fatalf("create service %s: %v", name, err)
	}
	for i := range trials {
		t0 := time.Now()
		ctx, cancel := benchCtx()
		_, err := cl.ScaleService(ctx, name, n)
		cancel()
		if err != nil {
			b.t.Fatalf("scale %s to %d: %v", name, n, err)
		}
		running, end := b.waitScaled(n, probe, func() int {
			ctx, cancel := benchCtx()
			defer cancel()
			st, err := cl.Service(ctx, name)
			if err != nil {
				return -1
			}
			return st.Running
		})
		p := map[string]float64{}
		benchPhase(p, "running", t0, running, true)
		b.burstPhases(ev, p, t0, func(e benchEvent) bool { return strings.HasPrefix(e.Attrs["cube.worker"], c.Prefix) })
		b.add(s, trials, t0, end, p, fmt.Sprintf("trial %d: %.1f tasks/s", i+1, float64(n)/end.Sub(t0).Seconds()))
		ctx, cancel = benchCtx()
		_, err = cl.ScaleService(ctx, name, 0)
		cancel()
		if err != nil {
			b.t.Fatalf("scale %s to 0: %v", name, err)
		}
		deadline := time.Now().Add(3 * benchWait)
		for benchContainerCount(c) != 0 {
			if time.Now().After(deadline) {
				b.t.Fatalf("%s: containers left %s after scaling to 0", name, 3*benchWait)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	ctx, cancel = benchCtx()
	defer cancel()
	_ = cl.DeleteService(ctx, name)
}

// waitScaled waits until the orchestrator reports n running and n running
// containers answered; it returns both times.
func (b *bench) waitScaled(n int, probe *benchSvcProbe, runningNow func() int) (time.Time, time.Time) {
	var running time.Time
	answered := map[string]bool{}
	deadline := time.Now().Add(3 * benchWait)
	for time.Now().Before(deadline) {
		if running.IsZero() && runningNow() >= n {
			running = time.Now()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		list, err := probe.list(ctx)
		cancel()
		if err == nil {
			var wg sync.WaitGroup
			var mu sync.Mutex
			up := 0
			for _, ct := range list {
				if answered[ct.ID] {
					up++
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if probe.answers(probe.port(ct)) {
						mu.Lock()
						answered[ct.ID] = true
						up++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if up >= n && !running.IsZero() {
				return running, time.Now()
			}
		}
		time.Sleep(benchSvcSample)
	}
	b.t.Fatalf("scale: %d of %d answering within %s (orchestrator said all running: %v)", len(answered), n, 3*benchWait, !running.IsZero())
	return time.Time{}, time.Time{}
}

// cubeSvcTemplate is the update rows' service.
func cubeSvcTemplate(name string) api.Service {
	return api.Service{Name: name, Count: benchSvcCount,
		Task: api.Task{Image: "cube-echo:latest", ExposedPorts: api.PortSet{"7777/tcp": {}}, HealthCheck: "/health",
			HealthCheckInterval: benchSvcHealthEvery.String(), HealthCheckTimeout: "1s", HealthCheckGrace: "1s", HealthCheckThreshold: 2,
			Env: []string{"BENCH_VERSION=0"}},
		Update: api.UpdatePolicy{MaxParallel: benchSvcParallel, MinHealthyTime: benchSvcMinHealthy, HealthyDeadline: benchSvcDeadline, AutoRevert: true}}
}

// cubeSvcSettled reports whether the service runs Count tasks of its
// current version, all Running and answering, with no rollout running and
// the version marked healthy (the version a failed update rolls back to:
// without the mark there is none, and a bad update only stops).
func (b *bench) cubeSvcSettled(cl *api.Client, probe *benchSvcProbe, name string) (api.ServiceStatus, bool) {
	ctx, cancel := benchCtx()
	defer cancel()
	st, err := cl.Service(ctx, name)
	if err != nil || st.Rollout != nil && st.Rollout.State == api.RolloutRunning {
		return st, false
	}
	healthy := false
	for _, v := range st.History {
		healthy = healthy || v.Version == st.Version && v.Healthy
	}
	return st, healthy && b.cubeSvcAll(cl, probe, name, st.Version)
}

// cubeSvcAll reports whether the service's tasks to run are Count, all of
// version, Running and answering.
func (b *bench) cubeSvcAll(cl *api.Client, probe *benchSvcProbe, name string, version uint64) bool {
	ctx, cancel := benchCtx()
	defer cancel()
	tasks, err := cl.Tasks(ctx, false)
	if err != nil {
		return false
	}
	var mine []api.Task
	for _, t := range tasks {
		if t.Service == name && t.DesiredState == api.Running && !t.Finished() {
			if t.ServiceVersion != version || t.State != api.Running {
				return false
			}
			mine = append(mine, t)
		}
	}
	if len(mine) != benchSvcCount {
		return false
	}
	ok := true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range mine {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !probe.answers(hostPort(t)) {
				mu.Lock()
				ok = false
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok
}

// waitSvc polls cond every benchSvcSample until it holds.
func (b *bench) waitSvc(what string, within time.Duration, cond func() bool) time.Time {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now()
		}
		time.Sleep(benchSvcSample)
	}
	b.t.Fatalf("%s: not within %s", what, within)
	return time.Time{}
}

func (b *bench) cubeSvcUpdate(c *ProcCluster, cl *api.Client, probe *benchSvcProbe) {
	trials := benchEnvInt("BENCH_SVC_TRIALS", 5)
	name := "bench-update"
	svc := cubeSvcTemplate(name)
	ctx, cancel := benchCtx()
	_, err := cl.CreateService(ctx, svc)
	cancel()
	if err != nil {
		b.t.Fatalf("create service %s: %v", name, err)
	}
	settle := func() api.ServiceStatus {
		var st api.ServiceStatus
		b.waitSvc(name+" settled", 3*benchWait, func() bool {
			var ok bool
			st, ok = b.cubeSvcSettled(cl, probe, name)
			return ok
		})
		// The stopped containers gone too, so the next trial starts quiet.
		deadline := time.Now().Add(30 * time.Second)
		for benchContainerCount(c) > benchSvcCount && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		return st
	}
	settle()
	put := func(env []string) api.ServiceStatus {
		s := svc
		s.Task.Env = env
		ctx, cancel := benchCtx()
		defer cancel()
		st, _, err := cl.PutService(ctx, s)
		if err != nil {
			b.t.Fatalf("put service %s: %v", name, err)
		}
		return st
	}
	good := []string{"BENCH_VERSION=0"}
	if b.want("services", "svc-update") {
		s := b.series("svc-update", b.sys)
		for i := range trials {
			good = []string{fmt.Sprintf("BENCH_VERSION=%d", i+1)}
			smp := probe.sample()
			t0 := time.Now()
			st := put(good)
			var completed time.Time
			end := b.waitSvc(name+" updated", 3*benchWait, func() bool {
				if completed.IsZero() {
					if cur, err := cl.Service(context.Background(), name); err == nil && cur.Rollout != nil && cur.Rollout.To == st.Version && cur.Rollout.State == api.RolloutCompleted {
						completed = time.Now()
					}
				}
				return b.cubeSvcAll(cl, probe, name, st.Version)
			})
			lo, n := smp.end()
			p := map[string]float64{}
			if fin := settle(); fin.Version != st.Version {
				b.t.Fatalf("%s: version %d after the update to %d (%+v)", name, fin.Version, st.Version, fin.Rollout)
			}
			if completed.IsZero() {
				completed = time.Now()
			}
			benchPhase(p, "rollout-completed", t0, completed, true)
			b.addSvc(s, trials, t0, end, p, lo, n)
		}
	}
	if b.want("services", "svc-rollback") {
		s := b.series("svc-rollback", b.sys)
		for i := range trials {
			before := settle()
			smp := probe.sample()
			t0 := time.Now()
			bad := put(append(slices.Clone(good), "ECHO_EXIT_AT_START=1", fmt.Sprintf("BENCH_BAD=%d", i+1)))
			var failed time.Time
			end := b.waitSvc(name+" rolled back", 3*benchWait, func() bool {
				ctx, cancel := benchCtx()
				cur, err := cl.Service(ctx, name)
				cancel()
				// AutoRevert keeps the failed rollout's record (To: the bad
				// version), marked rolled back, and makes the old version
				// current again.
				if err != nil || cur.Rollout == nil || cur.Rollout.To != bad.Version || cur.Rollout.State != api.RolloutRolledBack || cur.Version == bad.Version {
					return false
				}
				if failed.IsZero() {
					failed = time.Now()
				}
				return b.cubeSvcAll(cl, probe, name, cur.Version)
			})
			lo, n := smp.end()
			if fin := settle(); fin.Version != before.Version {
				b.t.Fatalf("%s: version %d after the rollback, want %d", name, fin.Version, before.Version)
			}
			p := map[string]float64{}
			benchPhase(p, "rollout-failed", t0, failed, true)
			b.addSvc(s, trials, t0, end, p, lo, n)
		}
	}
	ctx, cancel = benchCtx()
	defer cancel()
	_ = cl.DeleteService(ctx, name)
	deadline := time.Now().Add(2 * benchWait)
	for benchContainerCount(c) != 0 && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Swarm.

// swarmServices measures the service rows on the swarm of the run.
func (b *bench) swarmServices(ss *benchSwarmSession, ev *benchEvents, image string) {
	if !b.want(benchSvcKeys...) {
		return
	}
	b.svcParams()
	probeOf := func(service string) *benchSvcProbe {
		return &benchSvcProbe{cli: ss.cli, hc: &http.Client{Timeout: 500 * time.Millisecond}, list: func(ctx context.Context) ([]container.Summary, error) {
			return ss.cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
				filters.Arg("label", "com.docker.swarm.service.name="+service), filters.Arg("status", "running"))})
		}}
	}
	if b.want("services", "svc-scale") {
		b.swarmSvcScale(ss, ev, image, probeOf("cube-bench-svc-scale"))
	}
	if b.want("services", "svc-update", "svc-rollback") {
		b.swarmSvcUpdate(ss, image, probeOf("cube-bench-svc-update"))
	}
}

func (b *bench) swarmSvcScale(ss *benchSwarmSession, ev *benchEvents, image string, probe *benchSvcProbe) {
	n, trials := benchEnvInt("BENCH_SVC_SCALE", 50), benchEnvInt("BENCH_SVC_TRIALS", 5)
	s := b.series("svc-scale", sysSwarmDefault)
	name := "cube-bench-svc-scale"
	ss.create(name, image, 0, nil)
	for i := range trials {
		t0 := time.Now()
		ss.scale(name, n)
		running, end := b.waitScaled(n, probe, func() int {
			tasks, err := ss.runningTasks(name)
			if err != nil {
				return -1
			}
			return len(tasks)
		})
		p := map[string]float64{}
		benchPhase(p, "running", t0, running, true)
		b.burstPhases(ev, p, t0, func(e benchEvent) bool { return e.Attrs["com.docker.swarm.service.name"] == name })
		b.add(s, trials, t0, end, p, fmt.Sprintf("trial %d: %.1f tasks/s", i+1, float64(n)/end.Sub(t0).Seconds()))
		ss.scale(name, 0)
		deadline := time.Now().Add(3 * benchWait)
		for len(ss.containers(name, false)) > 0 {
			if time.Now().After(deadline) {
				b.t.Fatalf("%s: containers running %s after scaling to 0", name, 3*benchWait)
			}
			time.Sleep(250 * time.Millisecond)
		}
		deadline = time.Now().Add(30 * time.Second)
		for len(ss.containers(name, true)) > 0 && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
		}
	}
	ss.remove(name)
}

// createSpec creates a service through the API (what `docker service
// create` sends; the CLI cannot give an exec-form health check, and the
// image has no shell for its CMD-SHELL one); cmdline is the CLI
// equivalent recorded in the results.
func (ss *benchSwarmSession) createSpec(spec swarm.ServiceSpec, cmdline string) {
	ss.services = append(ss.services, spec.Name)
	ss.b.run.Swarm.Services = append(ss.b.run.Swarm.Services, cmdline)
	ctx, cancel := benchCtx()
	defer cancel()
	if _, err := ss.cli.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{QueryRegistry: false}); err != nil {
		ss.b.t.Fatalf("create service %s: %v", spec.Name, err)
	}
}

// swarmSvcState is a service as the update rows look at it.
type swarmSvcState struct {
	update    swarm.UpdateState
	env       []string // the spec's current Env
	allOf     bool     // Count tasks to run, all of env, running and answering
	inspected bool
}

func (ss *benchSwarmSession) svcState(name string, probe *benchSvcProbe) swarmSvcState {
	var out swarmSvcState
	ctx, cancel := benchCtx()
	defer cancel()
	svc, _, err := ss.cli.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	if err != nil {
		return out
	}
	out.inspected = true
	if svc.UpdateStatus != nil {
		out.update = svc.UpdateStatus.State
	}
	out.env = svc.Spec.TaskTemplate.ContainerSpec.Env
	tasks, err := ss.cli.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", name), filters.Arg("desired-state", "running"))})
	if err != nil {
		return out
	}
	var cids []string
	for _, t := range tasks {
		if t.Status.State != swarm.TaskStateRunning || t.Spec.ContainerSpec == nil || !slices.Equal(t.Spec.ContainerSpec.Env, out.env) ||
			t.Status.ContainerStatus == nil || t.Status.ContainerStatus.ContainerID == "" {
			return out
		}
		cids = append(cids, t.Status.ContainerStatus.ContainerID)
	}
	if len(cids) != benchSvcCount {
		return out
	}
	h, err := probe.healthy()
	if err != nil {
		return out
	}
	for _, id := range cids {
		if !h[id] {
			return out
		}
	}
	out.allOf = true
	return out
}

// setEnv changes the service's Env through the API (what `docker service
// update --env-add` sends).
func (ss *benchSwarmSession) setEnv(name string, env []string) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := benchCtx()
		svc, _, err := ss.cli.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
		if err == nil {
			svc.Spec.TaskTemplate.ContainerSpec.Env = env
			_, err = ss.cli.ServiceUpdate(ctx, svc.ID, svc.Version, svc.Spec, swarm.ServiceUpdateOptions{})
		}
		cancel()
		if err == nil {
			return
		}
		if attempt >= 5 {
			ss.b.t.Fatalf("update %s: %v", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *bench) swarmSvcUpdate(ss *benchSwarmSession, image string, probe *benchSvcProbe) {
	trials := benchEnvInt("BENCH_SVC_TRIALS", 5)
	name := "cube-bench-svc-update"
	replicas := uint64(benchSvcCount)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: image, Env: []string{"BENCH_VERSION=0"},
			Labels: map[string]string{benchLabel: "swarm"},
			Healthcheck: &container.HealthConfig{Test: []string{"CMD", "/echo", "-health"},
				Interval: benchSvcHealthEvery, Timeout: time.Second, StartPeriod: time.Second, Retries: 2}}},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig: &swarm.UpdateConfig{Parallelism: benchSvcParallel, FailureAction: swarm.UpdateFailureActionRollback,
			Monitor: benchSvcMonitor, Order: swarm.UpdateOrderStopFirst},
		RollbackConfig: &swarm.UpdateConfig{Parallelism: benchSvcParallel, FailureAction: swarm.UpdateFailureActionPause,
			Monitor: benchSvcMonitor, Order: swarm.UpdateOrderStopFirst},
		EndpointSpec: &swarm.EndpointSpec{Ports: []swarm.PortConfig{{Protocol: swarm.PortConfigProtocolTCP, TargetPort: 7777, PublishMode: swarm.PortConfigPublishModeHost}}},
	}
	ss.createSpec(spec, fmt.Sprintf("docker service create --detach --no-resolve-image --name %s --replicas %d --publish mode=host,target=7777 --container-label %s=swarm --env BENCH_VERSION=0 "+
		"--health-cmd '[\"/echo\",\"-health\"]' (exec form, through the API) --health-interval 1s --health-timeout 1s --health-retries 2 --health-start-period 1s "+
		"--update-parallelism %d --update-delay 0s --update-order stop-first --update-failure-action rollback --update-monitor %s --update-max-failure-ratio 0 "+
		"--rollback-parallelism %d --rollback-order stop-first %s; each trial: docker service update --env-rm/--env-add (through the API)",
		name, benchSvcCount, benchLabel, benchSvcParallel, benchSvcMonitor, benchSvcParallel, image))
	settle := func(want []string) {
		b.waitSvc(name+" settled", 3*benchWait, func() bool {
			st := ss.svcState(name, probe)
			return st.allOf && slices.Equal(st.env, want) && st.update != swarm.UpdateStateUpdating && st.update != swarm.UpdateStateRollbackStarted
		})
		deadline := time.Now().Add(30 * time.Second)
		for len(ss.containers(name, false)) > benchSvcCount && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	good := []string{"BENCH_VERSION=0"}
	settle(good)
	if b.want("services", "svc-update") {
		s := b.series("svc-update", sysSwarmDefault)
		for i := range trials {
			good = []string{fmt.Sprintf("BENCH_VERSION=%d", i+1)}
			smp := probe.sample()
			t0 := time.Now()
			ss.setEnv(name, good)
			var completed time.Time
			end := b.waitSvc(name+" updated", 3*benchWait, func() bool {
				st := ss.svcState(name, probe)
				if completed.IsZero() && st.update == swarm.UpdateStateCompleted && slices.Equal(st.env, good) {
					completed = time.Now()
				}
				if st.update == swarm.UpdateStateRollbackStarted || st.update == swarm.UpdateStatePaused {
					b.t.Fatalf("%s: a good update went to %s", name, st.update)
				}
				return st.allOf && slices.Equal(st.env, good)
			})
			lo, n := smp.end()
			settle(good)
			if completed.IsZero() {
				b.waitSvc(name+" update completed", benchWait, func() bool {
					return ss.svcState(name, probe).update == swarm.UpdateStateCompleted
				})
				completed = time.Now()
			}
			p := map[string]float64{}
			benchPhase(p, "update-completed", t0, completed, true)
			b.addSvc(s, trials, t0, end, p, lo, n)
		}
	}
	if b.want("services", "svc-rollback") {
		s := b.series("svc-rollback", sysSwarmDefault)
		for i := range trials {
			smp := probe.sample()
			t0 := time.Now()
			ss.setEnv(name, append(slices.Clone(good), "ECHO_EXIT_AT_START=1", fmt.Sprintf("BENCH_BAD=%d", i+1)))
			var started time.Time
			end := b.waitSvc(name+" rolled back", 3*benchWait, func() bool {
				st := ss.svcState(name, probe)
				if started.IsZero() && (st.update == swarm.UpdateStateRollbackStarted || st.update == swarm.UpdateStateRollbackCompleted) {
					started = time.Now()
				}
				return !started.IsZero() && st.allOf && slices.Equal(st.env, good)
			})
			lo, n := smp.end()
			settle(good)
			p := map[string]float64{}
			benchPhase(p, "rollback-started", t0, started, true)
			b.addSvc(s, trials, t0, end, p, lo, n)
		}
	}
	ss.remove(name)
}

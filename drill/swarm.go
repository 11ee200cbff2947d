package drill

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Docker Swarm on the same machines: every machine's own engine joins one
// swarm (the three managers as managers, drained so that tasks run on the
// worker machines only, as Cube's do; the three workers as workers), and
// drills 1-4 and 6 run against a replicated service of the echo image with
// the same measures as Cube's.

// SwarmHeartbeatFast is the dispatcher heartbeat of "swarm-fast". Swarm
// accepts any period ≥ 0 (0 meaning the default 5 s) but gives each node
// period ± 500 ms (swarmkit's heartbeat epsilon) and declares it down after
// 3× that: below 500 ms the period drawn can be negative and a node expires
// at once (nodes flap between Ready and Down), so 500 ms is the smallest
// period that works. SwarmHeartbeatDefault is Swarm's own.
const (
	SwarmHeartbeatFast    = 500 * time.Millisecond
	SwarmHeartbeatDefault = 5 * time.Second
)

// swarmReplicas is the echo service's size, as Cube's drills' three tasks.
const swarmReplicas = 3

// swarmCall bounds one docker CLI call on a machine that may be cut off or
// leaderless, so that polls go on instead of waiting on it.
const swarmCall = 4 * time.Second

// Swarm is Docker Swarm on the machines' own engines.
type Swarm struct {
	MS *Machines
	// Fast is Swarm with its fastest settings: the minimum dispatcher
	// heartbeat and services restarted without delay.
	Fast bool
	// Logf reports progress.
	Logf  func(format string, args ...any)
	image string
	hc    *http.Client
}

// NewSwarm returns Swarm on ms with the given settings.
func NewSwarm(ms *Machines, fast bool) *Swarm {
	return &Swarm{MS: ms, Fast: fast, Logf: ms.Logf, hc: &http.Client{Timeout: time.Second}}
}

// System names the Swarm settings in the results.
func (s *Swarm) System() string {
	if s.Fast {
		return "swarm-fast"
	}
	return "swarm"
}

func (s *Swarm) heartbeat() time.Duration {
	if s.Fast {
		return SwarmHeartbeatFast
	}
	return SwarmHeartbeatDefault
}

// exec runs a command on a machine, bounded by within.
func (s *Swarm) exec(ctx context.Context, within time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	return s.MS.Exec(ctx, name, args...)
}

// SwarmNode is one line of `docker node ls`.
type SwarmNode struct {
	Host, Status, Availability, Manager string
}

// Nodes lists the swarm's nodes as one manager sees them (it fails while the
// swarm has no leader).
func (s *Swarm) Nodes(ctx context.Context, manager string) (map[string]SwarmNode, error) {
	out, err := s.exec(ctx, swarmCall, manager, "docker", "node", "ls", "--format",
		"{{.Hostname}}|{{.Status}}|{{.Availability}}|{{.ManagerStatus}}")
	if err != nil {
		return nil, err
	}
	nodes := map[string]SwarmNode{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(l), "|")
		if len(f) != 4 {
			continue
		}
		n := SwarmNode{f[0], f[1], f[2], f[3]}
		// A node that joined again is listed twice: the Ready one counts.
		if old, ok := nodes[n.Host]; !ok || old.Status != "Ready" {
			nodes[n.Host] = n
		}
	}
	return nodes, nil
}

// Leader names the leader's machine as the first manager not in except
// that answers sees it, "" when none answers or none leads.
func (s *Swarm) Leader(ctx context.Context, except ...string) string {
	for _, m := range s.MS.Spec.Names("manager") {
		if contains(except, m) {
			continue
		}
		nodes, err := s.Nodes(ctx, m)
		if err != nil {
			continue
		}
		for _, n := range nodes {
			if n.Manager == "Leader" {
				return n.Host
			}
		}
	}
	return ""
}

// Ready waits until a manager sees a leader and every machine Ready, the
// managers drained.
func (s *Swarm) Ready(ctx context.Context, within time.Duration) error {
	return poll(ctx, within, 200*time.Millisecond, func() error {
		var errs []error
		for _, m := range s.MS.Spec.Names("manager") {
			err := s.ready(ctx, m)
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
		}
		return errors.Join(errs...)
	})
}

func (s *Swarm) ready(ctx context.Context, manager string) error {
	nodes, err := s.Nodes(ctx, manager)
	if err != nil {
		return err
	}
	leader := false
	for _, m := range s.MS.Spec.Machines {
		n, ok := nodes[m.Name]
		switch {
		case !ok:
			return fmt.Errorf("%s is not in the swarm", m.Name)
		case n.Status != "Ready":
			return fmt.Errorf("%s is %s", m.Name, n.Status)
		case m.Role == "manager" && n.Availability != "Drain":
			return fmt.Errorf("manager %s is not drained", m.Name)
		}
		leader = leader || n.Manager == "Leader"
	}
	if !leader {
		return errors.New("no leader")
	}
	return nil
}

// Init makes the machines one swarm with the settings of s (reusing a swarm
// of all machines that is there, its heartbeat set again when it differs)
// and waits until it is ready.
func (s *Swarm) Init(ctx context.Context) error {
	first := s.MS.Spec.Names("manager")[0]
	id, err := s.MS.Exec(ctx, s.MS.Spec.Names("worker")[0], "docker", "image", "inspect", "--format", "{{.Id}}", "cube-echo:latest")
	if err != nil {
		return fmt.Errorf("the echo image on the machines: %w", err)
	}
	s.image = id
	hb := strconv.FormatInt(int64(s.heartbeat()), 10)
	if s.ready(ctx, first) == nil {
		cur, err := s.MS.Exec(ctx, first, "docker", "info", "--format", "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}")
		if err == nil && cur == hb {
			s.Logf("swarm: reusing the swarm of the machines (heartbeat %s)", s.heartbeat())
			return nil
		}
		if err == nil {
			if _, err := s.MS.Exec(ctx, first, "docker", "swarm", "update", "--dispatcher-heartbeat", s.heartbeat().String()); err == nil {
				ns, _ := strconv.ParseInt(cur, 10, 64)
				s.Logf("swarm: reusing the swarm of the machines, heartbeat %s → %s", time.Duration(ns), s.heartbeat())
				return s.Ready(ctx, 3*time.Minute)
			}
		}
	}
	if err := s.Leave(ctx); err != nil {
		return err
	}
	start := time.Now()
	lead := s.MS.Spec.Addr(first)
	if _, err := s.MS.Exec(ctx, first, "docker", "swarm", "init", "--advertise-addr", lead,
		"--dispatcher-heartbeat", s.heartbeat().String()); err != nil {
		return err
	}
	tokens := map[string]string{}
	for _, role := range []string{"manager", "worker"} {
		t, err := s.MS.Exec(ctx, first, "docker", "swarm", "join-token", "-q", role)
		if err != nil {
			return err
		}
		tokens[role] = t
	}
	join := func(m MachineSpec) error {
		_, err := s.MS.Exec(ctx, m.Name, "docker", "swarm", "join", "--token", tokens[m.Role],
			"--advertise-addr", s.MS.Spec.Addr(m.Name), lead+":2377")
		return err
	}
	// Managers one at a time (each joins raft), workers together.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, m := range s.MS.Spec.Machines {
		if m.Name == first {
			continue
		}
		if m.Role == "manager" {
			if err := join(m); err != nil {
				return err
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := join(m); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, m := range s.MS.Spec.Names("manager") {
		if _, err := s.MS.Exec(ctx, first, "docker", "node", "update", "--availability", "drain", m); err != nil {
			return err
		}
	}
	if err := s.Ready(ctx, 3*time.Minute); err != nil {
		return err
	}
	s.Logf("swarm: %d machines joined in %s (heartbeat %s)", len(s.MS.Spec.Machines), time.Since(start).Round(time.Millisecond), s.heartbeat())
	return nil
}

// Leave makes every running machine leave its swarm (its services' task
// containers go with it).
func (s *Swarm) Leave(ctx context.Context) error {
	return LeaveSwarm(ctx, s.MS)
}

// LeaveSwarm makes every running machine of ms leave its swarm, if any.
func LeaveSwarm(ctx context.Context, ms *Machines) error {
	var wg sync.WaitGroup
	names := ms.Spec.Names("")
	errs := make([]error, len(names))
	for i, m := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !ms.Running(ctx, m) {
				return
			}
			st, err := ms.Exec(ctx, m, "docker", "info", "--format", "{{.Swarm.LocalNodeState}}")
			if err != nil || st == "inactive" {
				errs[i] = err
				return
			}
			_, errs[i] = ms.Exec(ctx, m, "docker", "swarm", "leave", "--force")
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// swTask is one running task container of a service on a machine's engine.
type swTask struct {
	Machine, ID, Port string
	Slot              int
}

var hostPortRe = regexp.MustCompile(`:(\d+)->7777/tcp`)

// tasks lists the running task containers of a service on every running
// machine's own engine.
func (s *Swarm) tasks(ctx context.Context, service string) ([]swTask, error) {
	names := s.MS.Spec.Names("")
	var wg sync.WaitGroup
	outs := make([][]swTask, len(names))
	errs := make([]error, len(names))
	for i, m := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := s.exec(ctx, swarmCall, m, "docker", "ps", "--filter", "label=com.docker.swarm.service.name="+service,
				"--format", `{{.ID}}|{{.Label "com.docker.swarm.task.name"}}|{{.Ports}}`)
			if err != nil {
				if s.MS.Running(ctx, m) {
					errs[i] = fmt.Errorf("engine of %s: %w", m, err)
				}
				return
			}
			for _, l := range strings.Split(out, "\n") {
				f := strings.Split(strings.TrimSpace(l), "|")
				if len(f) != 3 {
					continue
				}
				t := swTask{Machine: m, ID: f[0]}
				// The task name is <service>.<slot>.<task id>.
				parts := strings.Split(strings.TrimPrefix(f[1], service+"."), ".")
				t.Slot, _ = strconv.Atoi(parts[0])
				if p := hostPortRe.FindStringSubmatch(f[2]); p != nil {
					t.Port = p[1]
				}
				outs[i] = append(outs[i], t)
			}
		}()
	}
	wg.Wait()
	var all []swTask
	for _, o := range outs {
		all = append(all, o...)
	}
	return all, errors.Join(errs...)
}

func (s *Swarm) answers(ctx context.Context, t swTask) bool {
	return t.Port != "" && answers(ctx, s.hc, "http://"+s.MS.Spec.Addr(t.Machine)+":"+t.Port+"/health")
}

// serving returns, by slot, a running and answering task of every slot, on
// no machine in avoid and none of the containers in not.
func (s *Swarm) serving(ctx context.Context, service string, not map[string]bool, avoid ...string) (map[int]swTask, error) {
	ts, err := s.tasks(ctx, service)
	if err != nil {
		return nil, err
	}
	out := map[int]swTask{}
	for _, t := range ts {
		if _, ok := out[t.Slot]; ok || contains(avoid, t.Machine) || not[t.ID] {
			continue
		}
		if s.answers(ctx, t) {
			out[t.Slot] = t
		}
	}
	for slot := 1; slot <= swarmReplicas; slot++ {
		if _, ok := out[slot]; !ok {
			return out, fmt.Errorf("slot %d is not running and answering", slot)
		}
	}
	return out, nil
}

// WaitServing waits until every slot of the service runs and answers (see
// serving) and returns when.
func (s *Swarm) WaitServing(ctx context.Context, within time.Duration, service string, not map[string]bool, avoid ...string) (time.Time, map[int]swTask, error) {
	var got map[int]swTask
	err := poll(ctx, within, 20*time.Millisecond, func() error {
		var err error
		got, err = s.serving(ctx, service, not, avoid...)
		return err
	})
	return time.Now(), got, err
}

// write is one `docker service` write: a label on the service, issued on a
// manager; it returns once the manager accepted it.
func (s *Swarm) write(ctx context.Context, manager, service string, n int) error {
	_, err := s.MS.Exec(ctx, manager, "docker", "service", "update", "--detach", "--no-resolve-image",
		"--label-add", fmt.Sprintf("drill.write=%d", n), service)
	return err
}

// SwarmRun is one drill session against Swarm with one set of settings.
type SwarmRun struct {
	Ctx  context.Context
	SW   *Swarm
	Logf func(format string, args ...any)
	// PartitionFor is how long drill 4 cuts the leader off (30 s).
	PartitionFor time.Duration
	// Recover bounds each wait for a recovery.
	Recover time.Duration
	writes  int
}

// swarmDrills are the drills Swarm runs, by number.
var swarmDrills = map[int]func(*SwarmRun, *Result, string){
	1: (*SwarmRun).workerPoweroff,
	2: (*SwarmRun).leaderPoweroff,
	3: (*SwarmRun).leaderAndWorker,
	4: (*SwarmRun).leaderPartition,
	6: (*SwarmRun).powerCycle,
}

// SwarmDrills picks the drills of ds Swarm runs too.
func SwarmDrills(ds []Drill) []Drill {
	var out []Drill
	for _, d := range ds {
		if swarmDrills[d.Num] != nil {
			out = append(out, d)
		}
	}
	return out
}

// Trial runs one trial of d against Swarm on a service of its own and
// checks the invariants.
func (r *SwarmRun) Trial(d Drill, n int) Result {
	res := Result{Drill: d.Num, Name: d.Name, System: r.SW.System(), Trial: n}
	fn := swarmDrills[d.Num]
	if fn == nil {
		res.fail(fmt.Errorf("drill %d has no Swarm version", d.Num))
		return res
	}
	if err := r.heal(); err != nil {
		res.fail(fmt.Errorf("machines not ready before the trial: %w", err))
		return res
	}
	service := fmt.Sprintf("drill%d-%s-t%d", d.Num, r.SW.System(), n)
	if err := r.create(service); err != nil {
		res.fail(err)
		r.remove(service)
		return res
	}
	fn(r, &res, service)
	return res
}

// create creates the echo service and waits until every replica answers.
func (r *SwarmRun) create(service string) error {
	sw := r.SW
	args := []string{"docker", "service", "create", "--detach", "--name", service, "--replicas", strconv.Itoa(swarmReplicas),
		"--no-resolve-image", "--label", "cube.drill=1", "--publish", "mode=host,target=7777"}
	if sw.Fast {
		args = append(args, "--restart-delay", "0s")
	}
	args = append(args, sw.image)
	if err := poll(r.Ctx, r.Recover, time.Second, func() error {
		leader := sw.Leader(r.Ctx)
		if leader == "" {
			return errors.New("no leader")
		}
		_, err := sw.MS.Exec(r.Ctx, leader, args...)
		if err != nil && strings.Contains(err.Error(), "already exists") {
			return nil // an earlier try went through after all
		}
		return err
	}); err != nil {
		return fmt.Errorf("creating service %s: %w", service, err)
	}
	if _, _, err := sw.WaitServing(r.Ctx, r.Recover, service, nil); err != nil {
		return fmt.Errorf("service %s not serving: %w", service, err)
	}
	return nil
}

// remove removes the service and waits until no container of it runs.
func (r *SwarmRun) remove(service string) {
	sw := r.SW
	_ = poll(r.Ctx, r.Recover, time.Second, func() error {
		leader := sw.Leader(r.Ctx)
		if leader == "" {
			return errors.New("no leader")
		}
		_, err := sw.exec(r.Ctx, swarmCall, leader, "docker", "service", "rm", service)
		if err != nil && strings.Contains(err.Error(), "not found") {
			return nil
		}
		return err
	})
	_ = poll(r.Ctx, time.Minute, 500*time.Millisecond, func() error {
		ts, err := sw.tasks(r.Ctx, service)
		if err != nil {
			return err
		}
		if len(ts) > 0 {
			return fmt.Errorf("%d containers of %s still run", len(ts), service)
		}
		return nil
	})
}

// heal powers every machine on and waits until the swarm is ready.
func (r *SwarmRun) heal() error {
	for _, m := range r.SW.MS.Spec.Names("") {
		if !r.SW.MS.Running(r.Ctx, m) {
			if err := r.SW.MS.Start(r.Ctx, m); err != nil {
				return err
			}
		}
	}
	return r.SW.Ready(r.Ctx, r.Recover)
}

// finish heals the machines, checks the invariants over every machine's
// engine once the service converged (or Recover passed) and removes it.
func (r *SwarmRun) finish(res *Result, service string) {
	if err := r.heal(); err != nil {
		res.fail(fmt.Errorf("machines did not come back: %w", err))
	}
	var detail string
	err := poll(r.Ctx, r.Recover, 500*time.Millisecond, func() error {
		ts, err := r.SW.tasks(r.Ctx, service)
		if err != nil {
			return err
		}
		by := map[int][]string{}
		for _, t := range ts {
			by[t.Slot] = append(by[t.Slot], t.Machine)
		}
		res.Lost, res.Duplicates = 0, 0
		var d []string
		for slot := 1; slot <= swarmReplicas; slot++ {
			switch n := len(by[slot]); {
			case n == 0:
				res.Lost++
				d = append(d, fmt.Sprintf("slot %d runs nowhere", slot))
			case n > 1:
				res.Duplicates += n - 1
				d = append(d, fmt.Sprintf("slot %d runs on %v", slot, by[slot]))
			}
		}
		for slot, where := range by {
			if slot < 1 || slot > swarmReplicas {
				res.Duplicates += len(where)
				d = append(d, fmt.Sprintf("slot %d (beyond %d replicas) runs on %v", slot, swarmReplicas, where))
			}
		}
		sort.Strings(d)
		detail = strings.Join(d, "; ")
		if detail != "" {
			return errors.New(detail)
		}
		return nil
	})
	if err != nil && detail == "" {
		res.fail(err)
	}
	if detail != "" {
		res.Note = strings.TrimPrefix(res.Note+"; "+detail, "; ")
	}
	r.remove(service)
}

// race calls try on the managers not in except in turn, a new call every
// raceEvery while earlier ones may still wait (a manager's engine holds a
// call while the swarm has no leader, until there is one), until one
// returns nil (race returns nil) or within passes.
func (r *SwarmRun) race(ctx context.Context, within time.Duration, except []string, try func(ctx context.Context, manager string) error) error {
	var ms []string
	for _, m := range r.SW.MS.Spec.Names("manager") {
		if !contains(except, m) {
			ms = append(ms, m)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	won := make(chan struct{}, 1)
	var mu sync.Mutex
	var last error
	tick := time.NewTicker(raceEvery)
	defer tick.Stop()
	for i := 0; ; i++ {
		m := ms[i%len(ms)]
		go func() {
			cctx, cancel := context.WithTimeout(ctx, swarmCall)
			defer cancel()
			err := try(cctx, m)
			if err == nil {
				select {
				case won <- struct{}{}:
				default:
				}
				return
			}
			mu.Lock()
			last = err
			mu.Unlock()
		}()
		select {
		case <-won:
			return nil
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("after %s: %w", within, errors.Join(ctx.Err(), last))
		case <-tick.C:
		}
	}
}

// raceEvery is how often race issues a new call.
const raceEvery = 250 * time.Millisecond

// watch races cond on the managers not in except from t0 until it holds
// or stop is called, and records the time as the measure key.
func (r *SwarmRun) watch(res *Result, key string, t0 time.Time, except []string, cond func(ctx context.Context, manager string) error) (stop func()) {
	ctx, cancel := context.WithCancel(r.Ctx)
	done := make(chan struct{})
	var at time.Time
	go func() {
		defer close(done)
		if r.race(ctx, r.Recover, except, cond) == nil {
			at = time.Now()
		}
	}()
	return func() {
		cancel()
		<-done
		if !at.IsZero() {
			res.measure(key, at.Sub(t0))
		}
	}
}

// newLeader is a watch condition: the manager names a leader other than
// old.
func (r *SwarmRun) newLeader(old string) func(ctx context.Context, manager string) error {
	return func(ctx context.Context, manager string) error {
		nodes, err := r.SW.Nodes(ctx, manager)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Manager == "Leader" && n.Host != old {
				return nil
			}
		}
		return errors.New("no new leader")
	}
}

// markedDown is a watch condition: the manager lists the worker Down.
func (r *SwarmRun) markedDown(worker string) func(ctx context.Context, manager string) error {
	return func(ctx context.Context, manager string) error {
		nodes, err := r.SW.Nodes(ctx, manager)
		if err != nil {
			return err
		}
		if nodes[worker].Status != "Down" {
			return fmt.Errorf("%s is %s", worker, nodes[worker].Status)
		}
		return nil
	}
}

// busiest is the machine running most of the service's tasks, and their
// containers.
func (r *SwarmRun) busiest(service string) (string, int, error) {
	ts, err := r.SW.tasks(r.Ctx, service)
	if err != nil {
		return "", 0, err
	}
	by := map[string]int{}
	for _, t := range ts {
		by[t.Machine]++
	}
	best := ""
	for m, n := range by {
		if best == "" || n > by[best] || (n == by[best] && m < best) {
			best = m
		}
	}
	if best == "" {
		return "", 0, errors.New("no task runs")
	}
	return best, by[best], nil
}

// kill powers machines off together.
func (r *SwarmRun) kill(names ...string) error {
	return (&Run{Ctx: r.Ctx, MS: r.SW.MS}).kill(names...)
}

// writeOn races writes on the managers not in except until one is
// accepted.
func (r *SwarmRun) writeOn(service string, within time.Duration, except ...string) error {
	r.writes++
	n := r.writes
	return r.race(r.Ctx, within, except, func(ctx context.Context, m string) error {
		return r.SW.write(ctx, m, service, n)
	})
}

func (r *SwarmRun) workerPoweroff(res *Result, service string) {
	victim, n, err := r.busiest(service)
	if err != nil {
		res.fail(err)
		r.finish(res, service)
		return
	}
	t0 := time.Now()
	stop := r.watch(res, "dead", t0, nil, r.markedDown(victim))
	if err := r.kill(victim); err != nil {
		res.fail(err)
	}
	last, _, err := r.SW.WaitServing(r.Ctx, r.Recover, service, nil, victim)
	stop()
	if err != nil {
		res.fail(fmt.Errorf("tasks of %s not serving elsewhere: %w", victim, err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	res.Note = fmt.Sprintf("%s powered off with %d tasks", victim, n)
	r.finish(res, service)
}

func (r *SwarmRun) leaderPoweroff(res *Result, service string) {
	leader := r.SW.Leader(r.Ctx)
	if leader == "" {
		res.fail(errors.New("no leader"))
		r.finish(res, service)
		return
	}
	t0 := time.Now()
	stop := r.watch(res, "elected", t0, []string{leader}, r.newLeader(leader))
	if err := r.kill(leader); err != nil {
		res.fail(err)
	}
	err := r.writeOn(service, r.Recover, leader)
	stop()
	if err != nil {
		res.fail(fmt.Errorf("no write accepted after %s powered off: %w", leader, err))
	} else {
		res.measure("write", time.Since(t0))
	}
	// A task crashes right after: Swarm (its new leader) starts it again.
	cur, err := r.SW.serving(r.Ctx, service, nil)
	if err != nil {
		res.fail(fmt.Errorf("before the crash: %w", err))
	} else {
		victim := cur[1]
		tc := time.Now()
		if req, err := http.NewRequestWithContext(r.Ctx, http.MethodPost,
			"http://"+r.SW.MS.Spec.Addr(victim.Machine)+":"+victim.Port+"/crash", nil); err == nil {
			if resp, err := r.SW.hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		last, _, err := r.SW.WaitServing(r.Ctx, r.Recover, service, map[string]bool{victim.ID: true})
		if err != nil {
			res.fail(fmt.Errorf("crashed task not restarted after the new leader: %w", err))
		} else {
			res.measure("restart", last.Sub(tc))
		}
	}
	res.Note = "leader " + leader + " powered off"
	r.finish(res, service)
}

func (r *SwarmRun) leaderAndWorker(res *Result, service string) {
	leader := r.SW.Leader(r.Ctx)
	victim, n, err := r.busiest(service)
	if err == nil && leader == "" {
		err = errors.New("no leader")
	}
	if err != nil {
		res.fail(err)
		r.finish(res, service)
		return
	}
	t0 := time.Now()
	stopL := r.watch(res, "elected", t0, []string{leader}, r.newLeader(leader))
	stopD := r.watch(res, "dead", t0, []string{leader}, r.markedDown(victim))
	if err := r.kill(leader, victim); err != nil {
		res.fail(err)
	}
	last, _, err := r.SW.WaitServing(r.Ctx, r.Recover, service, nil, victim)
	stopL()
	stopD()
	if err != nil {
		res.fail(fmt.Errorf("tasks of %s not serving elsewhere: %w", victim, err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	res.Note = fmt.Sprintf("leader %s and %s (%d tasks) powered off", leader, victim, n)
	r.finish(res, service)
}

func (r *SwarmRun) leaderPartition(res *Result, service string) {
	leader := r.SW.Leader(r.Ctx)
	if leader == "" {
		res.fail(errors.New("no leader"))
		r.finish(res, service)
		return
	}
	t0 := time.Now()
	stop := r.watch(res, "elected", t0, []string{leader}, r.newLeader(leader))
	if err := r.SW.MS.Disconnect(r.Ctx, leader); err != nil {
		res.fail(err)
	}
	// Writes go on on the majority's side while the old leader is cut off.
	writes := 0
	for i := 0; time.Since(t0) < r.PartitionFor; i++ {
		if err := r.writeOn(service, r.Recover, leader); err != nil {
			res.fail(fmt.Errorf("write %d during the partition: %w", i, err))
			break
		}
		if i == 0 {
			res.measure("write", time.Since(t0))
		}
		writes++
		select {
		case <-r.Ctx.Done():
		case <-time.After(r.PartitionFor / 6):
		}
	}
	stop()
	if err := r.SW.MS.Connect(r.Ctx, leader); err != nil {
		res.fail(err)
	}
	th := time.Now()
	if err := r.SW.Ready(r.Ctx, r.Recover); err != nil {
		res.fail(err)
	} else {
		res.measure("healed", time.Since(th))
	}
	res.Note = fmt.Sprintf("leader %s cut off for %s; %d writes accepted", leader, r.PartitionFor, writes)
	r.finish(res, service)
}

func (r *SwarmRun) powerCycle(res *Result, service string) {
	all := r.SW.MS.Spec.Names("")
	t0 := time.Now()
	if err := r.kill(all...); err != nil {
		res.fail(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, m := range all {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.SW.MS.Start(r.Ctx, m) }()
	}
	wg.Wait()
	res.fail(errors.Join(errs...))
	res.measure("booted", time.Since(t0))
	last, _, err := r.SW.WaitServing(r.Ctx, r.Recover, service, nil)
	if err != nil {
		res.fail(fmt.Errorf("tasks not serving after the power cycle: %w", err))
	} else {
		res.measure("recovered", last.Sub(t0))
	}
	r.finish(res, service)
}

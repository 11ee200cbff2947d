package simrt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/worker"
)

// ExitAtStartEnv is the echo service's switch (cmd/echo) that makes its
// process exit with code 1 as soon as it starts. The simulated runtime
// honours it, so a task written for the real engine fails the same way here.
const ExitAtStartEnv = "ECHO_EXIT_AT_START"

// Config configures a simulated Runtime. The zero value is a runtime whose
// containers start at once and never fail, with every image present.
type Config struct {
	// StartDelay is how long Start takes before the container runs: the
	// engine's create→start time (about 230 ms for the echo image on the
	// benchmark's machine, bench/RESULTS.md). Jitter, if set, adds a
	// uniformly drawn 0..Jitter to each start.
	StartDelay time.Duration
	Jitter     time.Duration
	// FailRate is the fraction (0..1) of starts whose process exits with
	// FailCode FailAfter after it started: a task failing at start-up when
	// FailAfter is below the worker's StartupWindow, a crash later on
	// otherwise.
	FailRate  float64
	FailAfter time.Duration
	// FailCode is the exit code of a failing process; 0 means 1.
	FailCode int
	// Images, if not nil, are the images present (and "pullable"):
	// EnsureImage and Create of any other fail with
	// worker.ErrImageUnavailable. Nil: every image is present.
	Images []string
	// Seed seeds the draws of Jitter and FailRate, so that a run can be
	// repeated; 0 draws a random seed.
	Seed uint64
}

// Validate checks the configuration, naming the field and its bound.
func (c Config) Validate() error {
	switch {
	case c.StartDelay < 0:
		return fmt.Errorf("StartDelay (%s) must not be negative", c.StartDelay)
	case c.Jitter < 0:
		return fmt.Errorf("Jitter (%s) must not be negative", c.Jitter)
	case c.FailRate < 0 || c.FailRate > 1 || math.IsNaN(c.FailRate):
		return fmt.Errorf("FailRate (%g) must be between 0 and 1", c.FailRate)
	case c.FailAfter < 0:
		return fmt.Errorf("FailAfter (%s) must not be negative", c.FailAfter)
	case c.FailCode < 0 || c.FailCode > 255:
		return fmt.Errorf("FailCode (%d) must be between 0 and 255 (0 means 1)", c.FailCode)
	}
	return nil
}

// Errors of the simulated runtime, besides the worker's sentinels.
var (
	// ErrClosed: the runtime was closed; nothing runs any more.
	ErrClosed = errors.New("simulated runtime closed")
)

// watchBuffer is the capacity of a Watch channel, as the Docker runtime's.
const watchBuffer = 16

// logLines is how many lines a simulated container's log holds at most.
const logLines = 100

// Runtime is a container engine in memory: containers with the states,
// names, labels and events of Docker's, and no process behind them. It is
// safe for concurrent use. Close stops its timers and Watch goroutines.
type Runtime struct {
	cfg Config

	mu         sync.Mutex
	rng        *mrand.Rand
	byID       map[string]*box
	byName     map[string]*box
	watchers   map[*watcher]struct{}
	down       bool
	closed     bool
	nextPort   int
	starts     int // Start calls that ran a process, for Stats
	failures   int // processes that ended with a non-zero code on their own
	images     map[string]bool
	watchGroup sync.WaitGroup
	// timers counts the armed exit timers and their running callbacks, so
	// that Close can wait for them.
	timers sync.WaitGroup
}

var _ worker.Runtime = (*Runtime)(nil)

// box is one container. Its fields are guarded by Runtime.mu.
type box struct {
	st  worker.ContainerStatus
	log []string
	// exit ends the running process on its own (FailRate, ExitAtStartEnv);
	// nil while none is due.
	exit *time.Timer
	// run counts the container's starts: a timer of an earlier run that
	// fires late does nothing.
	run int
	// exitAtStart: the spec set ExitAtStartEnv=1.
	exitAtStart bool
}

// New returns a simulated runtime.
func New(cfg Config) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulated runtime config: %w", err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	r := &Runtime{
		cfg:      cfg,
		rng:      mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		byID:     make(map[string]*box),
		byName:   make(map[string]*box),
		watchers: make(map[*watcher]struct{}),
		nextPort: 32768,
	}
	if cfg.Images != nil {
		r.images = make(map[string]bool, len(cfg.Images))
		for _, img := range cfg.Images {
			r.images[img] = true
		}
	}
	return r, nil
}

// Close stops every exit timer and every Watch (their channels close) and
// waits for the Watch goroutines. Every later call fails with ErrClosed.
// Safe to call more than once.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		for _, b := range r.byID {
			r.disarmLocked(b)
		}
		for w := range r.watchers {
			w.stop()
		}
	}
	r.mu.Unlock()
	r.watchGroup.Wait()
	r.timers.Wait()
	return nil
}

// SetDown makes the engine stop answering (every call fails with
// worker.ErrRuntimeUnavailable, as a stopped Docker daemon's would) or
// answer again. Containers keep their state meanwhile; when it answers again
// every Watch gets a worker.Resync event, as the Docker runtime sends after
// its event stream was re-established.
func (r *Runtime) SetDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down == down {
		return
	}
	r.down = down
	if !down {
		for w := range r.watchers {
			w.push(worker.Event{Action: worker.Resync, Time: time.Now()})
		}
	}
}

// Kill ends a running container's process with code, as `docker kill` (137)
// or a crash would: the container exits and a "die" event follows. It is
// the tests' and the simulation's way to crash a task.
func (r *Runtime) Kill(ref string, code int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked("kill container " + ref); err != nil {
		return err
	}
	b, ok := r.findLocked(ref)
	if !ok {
		return fmt.Errorf("kill container %s: %w", ref, worker.ErrContainerNotFound)
	}
	if !b.st.Running {
		return fmt.Errorf("kill container %s: container is not running", ref)
	}
	r.emitLocked(b, "kill", 0)
	r.exitLocked(b, code, false)
	return nil
}

// Stats are counts over the runtime's life.
type Stats struct {
	// Containers exist now; Running of them run.
	Containers, Running int
	// Starts counts the processes started; Failures those that ended on
	// their own with a non-zero code.
	Starts, Failures int
}

// Stats returns the runtime's counts.
func (r *Runtime) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Containers: len(r.byID), Starts: r.starts, Failures: r.failures}
	for _, b := range r.byID {
		if b.st.Running {
			s.Running++
		}
	}
	return s
}

// usableLocked is the error of a call while the runtime is closed or down.
func (r *Runtime) usableLocked(op string) error {
	switch {
	case r.closed:
		return fmt.Errorf("%s: %w: %w", op, worker.ErrRuntimeUnavailable, ErrClosed)
	case r.down:
		return fmt.Errorf("%s: %w: the simulated engine is down", op, worker.ErrRuntimeUnavailable)
	}
	return nil
}

// findLocked finds a container by ID, by name (with or without Docker's
// leading slash) or by a unique prefix of its ID, as the engine does.
func (r *Runtime) findLocked(ref string) (*box, bool) {
	if b, ok := r.byID[ref]; ok {
		return b, true
	}
	if b, ok := r.byName[strings.TrimPrefix(ref, "/")]; ok {
		return b, true
	}
	if len(ref) < 4 {
		return nil, false
	}
	var found *box
	for id, b := range r.byID {
		if strings.HasPrefix(id, ref) {
			if found != nil {
				return nil, false // ambiguous
			}
			found = b
		}
	}
	return found, found != nil
}

// Ping answers unless the runtime is down or closed.
func (r *Runtime) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ping simulated engine: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.usableLocked("ping simulated engine")
}

// EnsureImage succeeds for a present image (Config.Images).
func (r *Runtime) EnsureImage(ctx context.Context, image string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("inspect image %s: %w", image, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked("inspect image " + image); err != nil {
		return err
	}
	if !r.hasImageLocked(image) {
		return fmt.Errorf("%w: image %q is not present locally and could not be pulled: not among the simulated engine's images", worker.ErrImageUnavailable, image)
	}
	return nil
}

func (r *Runtime) hasImageLocked(image string) bool {
	return r.images == nil || r.images[image]
}

// Create records a container in state created.
func (r *Runtime) Create(ctx context.Context, spec worker.Spec) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("create container for %s: %w", spec.Image, err)
	}
	if err := validName(spec.Name); err != nil {
		return "", fmt.Errorf("create container for %s: %w", spec.Image, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked("create container for " + spec.Image); err != nil {
		return "", err
	}
	if !r.hasImageLocked(spec.Image) {
		return "", fmt.Errorf("create container for %s: %w: no such image", spec.Image, worker.ErrImageUnavailable)
	}
	if spec.Name != "" {
		if _, ok := r.byName[spec.Name]; ok {
			return "", fmt.Errorf("create container %s: %w", spec.Name, worker.ErrContainerExists)
		}
	}
	id := newID()
	name := spec.Name
	if name == "" {
		name = "sim_" + id[:12] // Docker makes up a name too
	}
	b := &box{st: worker.ContainerStatus{
		ID:     id,
		Name:   name,
		Image:  spec.Image,
		Status: worker.StatusCreated,
		Labels: cloneLabels(spec.Labels),
	}, exitAtStart: slices.Contains(spec.Env, ExitAtStartEnv+"=1")}
	b.st.HostPorts = r.portsLocked(spec)
	r.byID[id] = b
	r.byName[name] = b
	r.emitLocked(b, "create", 0)
	return id, nil
}

// validName accepts the names Docker accepts: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
func validName(name string) error {
	if name == "" {
		return nil
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name)
		}
	}
	if len(name) < 2 {
		return fmt.Errorf("invalid container name %q: at least two characters", name)
	}
	return nil
}

// portsLocked gives every exposed port a host binding: the pinned one, or
// the next of a counter standing for Docker's random port. Nothing listens
// there: a health check or probe of a simulated task fails.
func (r *Runtime) portsLocked(spec worker.Spec) api.PortMap {
	if len(spec.ExposedPorts) == 0 {
		return nil
	}
	keys := make([]string, 0, len(spec.ExposedPorts))
	for k := range spec.ExposedPorts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(api.PortMap, len(keys))
	for _, k := range keys {
		b := api.PortBinding{HostIp: "0.0.0.0"}
		if v, ok := spec.PortBindings[k]; ok && v != "" {
			if host, port, err := net.SplitHostPort(v); err == nil {
				b = api.PortBinding{HostIp: host, HostPort: port}
			} else {
				b.HostPort = v
			}
		} else {
			b.HostPort = strconv.Itoa(r.nextPort)
			r.nextPort++
			if r.nextPort > 60999 {
				r.nextPort = 32768
			}
		}
		out[k] = []api.PortBinding{b}
	}
	return out
}

// Start runs a created (or exited) container after StartDelay. Starting a
// running container is not an error, as with Docker.
func (r *Runtime) Start(ctx context.Context, ref string) error {
	op := "start container " + ref
	r.mu.Lock()
	if err := r.usableLocked(op); err != nil {
		r.mu.Unlock()
		return err
	}
	b, ok := r.findLocked(ref)
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%s: %w", op, worker.ErrContainerNotFound)
	}
	if b.st.Running {
		r.mu.Unlock()
		return nil
	}
	delay := r.cfg.StartDelay
	if r.cfg.Jitter > 0 {
		delay += time.Duration(r.rng.Int64N(int64(r.cfg.Jitter) + 1))
	}
	r.mu.Unlock()

	// The engine's time to start the process, outside the lock: other
	// containers proceed meanwhile, as on a real engine.
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-t.C:
		}
	} else if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(op); err != nil {
		return err
	}
	if cur, ok := r.byID[b.st.ID]; !ok || cur != b {
		return fmt.Errorf("%s: %w (removed while starting)", op, worker.ErrContainerNotFound)
	}
	if b.st.Running {
		return nil
	}
	r.runLocked(b)
	return nil
}

// runLocked starts b's process and arms its exit, if one is due.
func (r *Runtime) runLocked(b *box) {
	now := time.Now().UTC()
	b.run++
	b.st.Status = worker.StatusRunning
	b.st.Running = true
	b.st.StartedAt = now
	b.st.FinishedAt = time.Time{}
	b.st.ExitCode = 0
	r.starts++
	r.logLocked(b, fmt.Sprintf("%s simulated process of %s started (run %d)", now.Format(time.RFC3339Nano), b.st.Image, b.run))
	r.emitLocked(b, "start", 0)

	code, after, fails := 0, time.Duration(0), false
	if b.exitAtStart {
		code, fails = 1, true
	} else if r.cfg.FailRate > 0 && r.rng.Float64() < r.cfg.FailRate {
		code, after, fails = r.cfg.FailCode, r.cfg.FailAfter, true
		if code == 0 {
			code = 1
		}
	}
	if !fails {
		return
	}
	run := b.run
	r.timers.Add(1)
	var t *time.Timer
	t = time.AfterFunc(after, func() {
		defer r.timers.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		if b.exit != t {
			return // disarmed, or a timer of an earlier run
		}
		b.exit = nil
		if r.closed || b.run != run || !b.st.Running {
			return
		}
		r.exitLocked(b, code, true)
	})
	b.exit = t
}

// disarmLocked stops b's exit timer, if one is armed and has not fired.
func (r *Runtime) disarmLocked(b *box) {
	if b.exit == nil {
		return
	}
	if b.exit.Stop() {
		r.timers.Done() // its callback will never run
	}
	b.exit = nil
}

// exitLocked ends b's process with code; own says it ended by itself (not
// stopped or killed from outside), which Stats counts as a failure when the
// code is not 0.
func (r *Runtime) exitLocked(b *box, code int, own bool) {
	r.disarmLocked(b)
	now := time.Now().UTC()
	b.st.Status = worker.StatusExited
	b.st.Running = false
	b.st.ExitCode = code
	b.st.FinishedAt = now
	if own && code != 0 {
		r.failures++
	}
	r.logLocked(b, fmt.Sprintf("%s simulated process exited with code %d", now.Format(time.RFC3339Nano), code))
	r.emitLocked(b, "die", code)
}

// Stop ends a running container as SIGTERM would: the simulated process
// exits at once with code 0 (as the echo service does). A container that is
// not running is left as it is.
func (r *Runtime) Stop(ctx context.Context, ref string, grace time.Duration) error {
	op := "stop container " + ref
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(op); err != nil {
		return err
	}
	b, ok := r.findLocked(ref)
	if !ok {
		return fmt.Errorf("%s: %w", op, worker.ErrContainerNotFound)
	}
	if !b.st.Running {
		return nil
	}
	r.emitLocked(b, "kill", 0)
	r.exitLocked(b, 0, false)
	r.emitLocked(b, "stop", 0)
	return nil
}

// Remove force-removes a container (killing its process first); a missing
// one is not an error.
func (r *Runtime) Remove(ctx context.Context, ref string) error {
	op := "remove container " + ref
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(op); err != nil {
		return err
	}
	b, ok := r.findLocked(ref)
	if !ok {
		return nil
	}
	if b.st.Running {
		r.emitLocked(b, "kill", 0)
		r.exitLocked(b, 137, false)
	}
	r.disarmLocked(b)
	delete(r.byID, b.st.ID)
	delete(r.byName, b.st.Name)
	r.emitLocked(b, "destroy", 0)
	return nil
}

// Inspect returns the container's status.
func (r *Runtime) Inspect(ctx context.Context, ref string) (worker.ContainerStatus, error) {
	op := "inspect container " + ref
	if err := ctx.Err(); err != nil {
		return worker.ContainerStatus{}, fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(op); err != nil {
		return worker.ContainerStatus{}, err
	}
	b, ok := r.findLocked(ref)
	if !ok {
		return worker.ContainerStatus{}, fmt.Errorf("%s: %w", op, worker.ErrContainerNotFound)
	}
	return r.statusLocked(b), nil
}

// statusLocked copies b's status for a caller, with ports only while it
// runs (as Docker shows them).
func (r *Runtime) statusLocked(b *box) worker.ContainerStatus {
	st := b.st
	st.Labels = cloneLabels(b.st.Labels)
	if !st.Running {
		st.HostPorts = nil
	} else {
		st.HostPorts = clonePorts(b.st.HostPorts)
	}
	return st
}

// List returns every container carrying all the labels, by name.
func (r *Runtime) List(ctx context.Context, labels map[string]string) ([]worker.ContainerStatus, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked("list containers"); err != nil {
		return nil, err
	}
	out := make([]worker.ContainerStatus, 0)
	for _, b := range r.byID {
		if hasLabels(b.st.Labels, labels) {
			out = append(out, r.statusLocked(b))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Logs returns the container's log lines (what the simulation wrote: its
// starts and exits), the last tail of them (0: all).
func (r *Runtime) Logs(ctx context.Context, ref string, opts api.LogOptions) (io.ReadCloser, error) {
	op := "read logs of container " + ref
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(op); err != nil {
		return nil, err
	}
	b, ok := r.findLocked(ref)
	if !ok {
		return nil, fmt.Errorf("%s: %w", op, worker.ErrContainerNotFound)
	}
	lines := b.log
	if opts.Tail > 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	text := joinLines(lines)
	if !opts.Follow || !b.st.Running {
		return io.NopCloser(strings.NewReader(text)), nil
	}
	// Follow: what was written, then each line written next, until the
	// run ends, ctx ends or the reader closes (the pipe's write fails).
	pr, pw := io.Pipe()
	seen, run := len(b.log), b.run
	go func() {
		if _, err := io.WriteString(pw, text); err != nil {
			return
		}
		tick := time.NewTicker(followPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			case <-tick.C:
			}
			r.mu.Lock()
			var next string
			if seen > len(b.log) { // the log was cut to its last logLines
				seen = len(b.log)
			}
			next, seen = joinLines(b.log[seen:]), len(b.log)
			ended := !b.st.Running || b.run != run
			r.mu.Unlock()
			if _, err := io.WriteString(pw, next); err != nil {
				return
			}
			if ended {
				pw.Close()
				return
			}
		}
	}()
	return pr, nil
}

// followPoll is how often a followed log looks for new lines.
const followPoll = 50 * time.Millisecond

func joinLines(lines []string) string {
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	return sb.String()
}

func (r *Runtime) logLocked(b *box, line string) {
	b.log = append(b.log, line)
	if len(b.log) > logLines {
		b.log = append(b.log[:0:0], b.log[len(b.log)-logLines:]...)
	}
}

// Watch streams the events of containers carrying all the labels until ctx
// ends (or the runtime is closed); then the channel is closed. Events are
// queued without bound for a slow reader, so the runtime never waits on one.
func (r *Runtime) Watch(ctx context.Context, labels map[string]string) <-chan worker.Event {
	out := make(chan worker.Event, watchBuffer)
	w := &watcher{labels: cloneLabels(labels), wake: make(chan struct{}, 1), done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		close(out)
		return out
	}
	r.watchers[w] = struct{}{}
	r.watchGroup.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.watchGroup.Done()
		defer close(out)
		defer func() {
			r.mu.Lock()
			delete(r.watchers, w)
			r.mu.Unlock()
		}()
		w.run(ctx, out)
	}()
	return out
}

// emitLocked sends an event about b to every watcher whose labels b carries.
func (r *Runtime) emitLocked(b *box, action string, code int) {
	if len(r.watchers) == 0 {
		return
	}
	// Docker's event attributes are the container's labels plus its image
	// and name (and the exit code of a die).
	attrs := make(map[string]string, len(b.st.Labels)+3)
	for k, v := range b.st.Labels {
		attrs[k] = v
	}
	attrs["image"] = b.st.Image
	attrs["name"] = b.st.Name
	ev := worker.Event{ContainerID: b.st.ID, Action: action, Labels: attrs, Time: time.Now()}
	if action == "die" {
		ev.ExitCode = code
		attrs["exitCode"] = strconv.Itoa(code)
	}
	for w := range r.watchers {
		if hasLabels(b.st.Labels, w.labels) {
			// Each watcher gets its own copy of the attributes.
			e := ev
			e.Labels = cloneLabels(attrs)
			w.push(e)
		}
	}
}

// watcher is one Watch: a queue the runtime appends to under its lock and
// a goroutine that hands the queue to the channel.
type watcher struct {
	labels map[string]string
	qmu    sync.Mutex
	queue  []worker.Event
	wake   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func (w *watcher) push(ev worker.Event) {
	w.qmu.Lock()
	w.queue = append(w.queue, ev)
	w.qmu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) stop() { w.once.Do(func() { close(w.done) }) }

func (w *watcher) run(ctx context.Context, out chan<- worker.Event) {
	for {
		w.qmu.Lock()
		batch := w.queue
		w.queue = nil
		w.qmu.Unlock()
		for _, ev := range batch {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			case <-w.done:
				return
			}
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return
		case <-w.done:
			return
		}
	}
}

// hasLabels reports whether have carries every label of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func clonePorts(p api.PortMap) api.PortMap {
	if p == nil {
		return nil
	}
	out := make(api.PortMap, len(p))
	for k, v := range p {
		out[k] = append([]api.PortBinding(nil), v...)
	}
	return out
}

// newID returns a container ID: 64 hex digits, as Docker's.
func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather)
	return hex.EncodeToString(b)
}

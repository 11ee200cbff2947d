package health

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// Result is a verdict the Checker reports about one check.
type Result struct {
	// TaskID and Generation name the check (and so the placement) judged.
	TaskID     uuid.UUID
	Generation uint64
	// Healthy is the verdict.
	Healthy bool
	// Failures is the number of consecutive failed probes so far: Threshold in
	// an unhealthy verdict, 0 in a healthy one.
	Failures int
	// Reason says, for a person, what the last probe saw: "GET /healthfail
	// returned 500", "connect 127.0.0.1:1234: connection refused",
	// "GET /health timed out after 2s".
	Reason string
	// At is when the last probe ended.
	At time.Time
	// Checked is how long the check had run when it gave this verdict: from
	// its start (the owner started it on first seeing the placement running)
	// to the end of the last probe, on this process's monotonic clock. It
	// tells the owner how long the placement has run as far as it saw, where
	// the task's StartTime, stamped by its worker's wall clock, can be off
	// by that clock's difference from this one.
	Checked time.Duration
}

// Checker runs health checks: one goroutine per check, each on its own timer
// and with its own HTTP client, so that one slow or hung endpoint never
// delays another check. Every probe is bounded by its Spec's Timeout.
//
// A Checker reports verdicts, not probes. After the grace period every probe
// counts: a success resets the failure count, a failure adds one. A check
// calls onResult
//
//   - with Healthy=false once, when its failure count reaches Threshold; it
//     goes on probing but does not repeat the report during that failure
//     streak;
//   - with Healthy=true on a success when it has not reported healthy yet,
//     or when its last report was unhealthy. A few failures below Threshold
//     followed by a success report nothing.
//
// So the reports of one check alternate, and the first healthy one tells the
// owner that the placement "has been healthy".
type Checker struct {
	onResult func(Result)
	log      hclog.Logger

	mu      sync.Mutex
	checks  map[uuid.UUID]*check
	stopped bool
	wg      sync.WaitGroup

	live atomic.Int64 // running check goroutines, for tests
}

// check is one running check.
type check struct {
	spec   Spec // as given to Sync, for comparison
	cancel context.CancelFunc
}

// NewChecker returns a Checker that reports verdicts to onResult. onResult is
// called from the check's own goroutine, never two calls at once for the same
// check, but concurrently for different checks. It must not block long:
// while it runs, that check does not probe, and Stop waits for it. In
// particular it must not wait on the goroutine that calls Sync or Stop (hand
// the Result over with a buffered channel or a non-blocking send).
//
// Reports are asynchronous: a check removed or replaced by Sync may still
// deliver one Result that was decided just before; compare TaskID and
// Generation with the current placement before acting on it.
func NewChecker(onResult func(Result), logger hclog.Logger) *Checker {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if onResult == nil {
		onResult = func(Result) {}
	}
	return &Checker{
		onResult: onResult,
		log:      logger.Named("health"),
		checks:   make(map[uuid.UUID]*check),
	}
}

// Sync makes the running checks exactly the given set: it starts new ones,
// stops those no longer given, and replaces one whose Spec changed (same
// TaskID, different Generation, Addr, timing, ...), which starts over with a
// fresh failure count and grace. It does not wait for stopped checks to end
// (Stop does), so it is safe to call from the goroutine that consumes
// results. It is cheap when nothing changed, so call it on every
// control-loop pass. When two specs share a TaskID the higher Generation
// wins. After Stop, Sync does nothing.
func (c *Checker) Sync(specs []Spec) {
	want := make(map[uuid.UUID]Spec, len(specs))
	for _, s := range specs {
		if old, dup := want[s.TaskID]; dup && old.Generation >= s.Generation {
			continue
		}
		want[s.TaskID] = s
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	for id, ch := range c.checks {
		if s, ok := want[id]; ok && ch.spec.same(s) {
			continue
		}
		ch.cancel()
		delete(c.checks, id)
		c.log.Debug("check stopped", "task_id", id, "generation", ch.spec.Generation)
	}
	for id, s := range want {
		if _, ok := c.checks[id]; !ok {
			c.startLocked(s)
		}
	}
}

// Stop stops every check and waits for their goroutines to end, including a
// running onResult call. It is idempotent.
func (c *Checker) Stop() {
	c.mu.Lock()
	c.stopped = true
	for id, ch := range c.checks {
		ch.cancel()
		delete(c.checks, id)
	}
	c.mu.Unlock()
	// Waiting outside the lock: a check goroutine never takes it, but the
	// caller's onResult might call Sync, which would.
	c.wg.Wait()
}

// startLocked starts the check of s. c.mu must be held.
func (c *Checker) startLocked(s Spec) {
	ctx, cancel := context.WithCancel(context.Background())
	c.checks[s.TaskID] = &check{spec: s, cancel: cancel}
	run := normalize(s)
	log := c.log.With("task_id", s.TaskID, "generation", s.Generation, "kind", s.Kind, "addr", s.Addr)
	if run.Kind != KindHTTP && run.Kind != KindTCP {
		// Kept in the map (without a goroutine) so that the error is logged
		// once, not on every Sync.
		log.Error("unknown check kind; check not started")
		return
	}
	log.Debug("check started", "interval", run.Interval, "timeout", run.Timeout, "grace", run.Grace, "threshold", run.Threshold)
	c.wg.Add(1)
	c.live.Add(1)
	go c.run(ctx, run, log)
}

// normalize replaces timing values that would make a check spin or never
// decide (a Spec built by hand rather than by SpecFor) with defaults.
func normalize(s Spec) Spec {
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout <= 0 {
		s.Timeout = min(DefaultTimeout, s.Interval)
	}
	if s.Grace < 0 {
		s.Grace = 0
	}
	if s.Threshold <= 0 {
		s.Threshold = DefaultThreshold
	}
	return s
}

// run is one check's goroutine: probe at StartedAt+Grace, then every
// Interval (measured from the start of the previous probe), until ctx ends.
func (c *Checker) run(ctx context.Context, s Spec, log hclog.Logger) {
	defer c.wg.Done()
	defer c.live.Add(-1)
	p := newProber(s)
	defer p.close()

	tr := tracker{threshold: s.Threshold}
	started := time.Now()
	timer := time.NewTimer(firstProbeDelay(s, started))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		ok, reason := p.probe(ctx)
		if ctx.Err() != nil {
			// Stopped or replaced while probing: the outcome is about a
			// check nobody wants any more.
			return
		}
		if !ok {
			log.Debug("probe failed", "reason", reason)
		}
		if res, report := tr.observe(ok, reason, time.Now()); report {
			res.TaskID, res.Generation, res.Checked = s.TaskID, s.Generation, time.Since(started)
			if res.Healthy {
				log.Info("task healthy", "reason", reason)
			} else {
				log.Warn("task unhealthy", "failures", res.Failures, "reason", reason)
			}
			c.onResult(res)
		}
		timer.Reset(max(0, s.Interval-time.Since(start)))
	}
}

// verdict is the last verdict a check reported.
type verdict int

const (
	verdictNone verdict = iota
	verdictHealthy
	verdictUnhealthy
)

// tracker turns probe outcomes into verdicts (see Checker).
type tracker struct {
	threshold int
	failures  int
	last      verdict
}

// observe records one probe outcome and returns the Result to report, if any.
func (t *tracker) observe(ok bool, reason string, at time.Time) (Result, bool) {
	if ok {
		t.failures = 0
		if t.last == verdictHealthy {
			return Result{}, false
		}
		t.last = verdictHealthy
		return Result{Healthy: true, Reason: reason, At: at}, true
	}
	t.failures++
	if t.failures != t.threshold {
		// Below the threshold, or past it in a streak already reported.
		return Result{}, false
	}
	t.last = verdictUnhealthy
	return Result{Healthy: false, Failures: t.failures, Reason: reason, At: at}, true
}

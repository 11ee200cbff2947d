package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// recorder collects the results a Checker reports.
type recorder struct {
	mu      sync.Mutex
	results []Result
	ch      chan Result
	hook    func(Result) // runs inside onResult, before recording
}

func newRecorder() *recorder { return &recorder{ch: make(chan Result, 1024)} }

func (r *recorder) onResult(res Result) {
	if r.hook != nil {
		r.hook(res)
	}
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
	select {
	case r.ch <- res:
	default:
	}
}

func (r *recorder) all() []Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Result(nil), r.results...)
}

func (r *recorder) of(id uuid.UUID) []Result {
	var out []Result
	for _, res := range r.all() {
		if res.TaskID == id {
			out = append(out, res)
		}
	}
	return out
}

// next waits for the next result of task id, failing the test after timeout.
func (r *recorder) next(t *testing.T, id uuid.UUID, timeout time.Duration) Result {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case res := <-r.ch:
			if res.TaskID == id {
				return res
			}
		case <-deadline.C:
			t.Fatalf("no result for task %s within %s; results so far: %+v", id, timeout, r.all())
			return Result{}
		}
	}
}

// newTestChecker returns a Checker stopped at the end of the test.
func newTestChecker(t *testing.T) (*Checker, *recorder) {
	t.Helper()
	log := testkit.LoggerAt(t, "test", hclog.Debug)
	rec := newRecorder()
	c := NewChecker(rec.onResult, log)
	t.Cleanup(c.Stop)
	return c, rec
}

// server is an HTTP endpoint that counts the probes it answers.
type server struct {
	*httptest.Server
	probes atomic.Int64
}

// newServer starts a server whose handler gets the 1-based probe number.
func newServer(t *testing.T, status func(n int64) int) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.probes.Add(1)
		w.WriteHeader(status(n))
		_, _ = w.Write([]byte("OK\n"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) addr() string { return strings.TrimPrefix(s.URL, "http://") }

func always(code int) func(int64) int { return func(int64) int { return code } }

func httpSpec(addr, path string) Spec {
	return Spec{
		TaskID: uuid.New(), Generation: 1, Kind: KindHTTP, Addr: addr, Path: path,
		Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Threshold: 3,
		StartedAt: time.Now().Add(-time.Hour),
	}
}

func TestChecker_HealthyNeverUnhealthy(t *testing.T) {
	srv := newServer(t, always(http.StatusOK))
	c, rec := newTestChecker(t)
	s := httpSpec(srv.addr(), "/health")
	s.Timeout = time.Second // a loaded -race run must not turn slowness into failures
	c.Sync([]Spec{s})

	res := rec.next(t, s.TaskID, 2*time.Second)
	if !res.Healthy || res.Failures != 0 || res.Generation != 1 || res.Reason != "GET /health returned 200" {
		t.Errorf("first result = %+v; want Healthy, 0 failures, generation 1, reason \"GET /health returned 200\"", res)
	}
	testkit.WaitFor(t, 5*time.Second, "25 probes", func() bool { return srv.probes.Load() >= 25 })
	if got := rec.of(s.TaskID); len(got) != 1 {
		t.Errorf("after %d probes of a healthy endpoint: results %+v; want exactly the one healthy result", srv.probes.Load(), got)
	}
}

func TestChecker_UnhealthyAfterThreshold(t *testing.T) {
	srv := newServer(t, always(http.StatusInternalServerError))
	c, rec := newTestChecker(t)
	var probesAtVerdict atomic.Int64
	rec.hook = func(Result) { probesAtVerdict.Store(srv.probes.Load()) }
	s := httpSpec(srv.addr(), "/healthfail")
	s.Timeout = time.Second
	c.Sync([]Spec{s})

	res := rec.next(t, s.TaskID, 2*time.Second)
	if res.Healthy || res.Failures != 3 {
		t.Fatalf("result = %+v; want unhealthy with 3 failures", res)
	}
	// onResult runs on the check's goroutine between two probes, so the
	// server's count at that moment is exactly the number of probes judged.
	if n := probesAtVerdict.Load(); n != 3 {
		t.Errorf("server saw %d probes when the unhealthy verdict came; want exactly Threshold = 3", n)
	}
	if res.Reason != "GET /healthfail returned 500" {
		t.Errorf("Reason = %q; want \"GET /healthfail returned 500\"", res.Reason)
	}
	if res.At.IsZero() {
		t.Errorf("At is zero")
	}
	testkit.WaitFor(t, 5*time.Second, "12 probes", func() bool { return srv.probes.Load() >= 12 })
	if got := rec.of(s.TaskID); len(got) != 1 {
		t.Errorf("results %+v; want the unhealthy verdict once per failure streak", got)
	}
}

func TestChecker_Recovery(t *testing.T) {
	// Probes 1-3 fail, 4-6 succeed, 7-9 fail, then success for good.
	srv := newServer(t, func(n int64) int {
		if (n >= 1 && n <= 3) || (n >= 7 && n <= 9) {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	c, rec := newTestChecker(t)
	s := httpSpec(srv.addr(), "/health")
	s.Timeout = time.Second
	c.Sync([]Spec{s})

	want := []struct {
		healthy  bool
		failures int
	}{{false, 3}, {true, 0}, {false, 3}, {true, 0}}
	for i, w := range want {
		res := rec.next(t, s.TaskID, 2*time.Second)
		if res.Healthy != w.healthy || res.Failures != w.failures {
			t.Fatalf("result %d = %+v; want Healthy=%v Failures=%d", i, res, w.healthy, w.failures)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "15 probes", func() bool { return srv.probes.Load() >= 15 })
	if got := rec.of(s.TaskID); len(got) != len(want) {
		t.Errorf("results %+v; want exactly %d", got, len(want))
	}
}

func TestChecker_BelowThresholdReportsNothingNew(t *testing.T) {
	// Probe 1 succeeds, 2-3 fail (below the threshold of 3), then success.
	srv := newServer(t, func(n int64) int {
		if n == 2 || n == 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	c, rec := newTestChecker(t)
	s := httpSpec(srv.addr(), "/health")
	s.Timeout = time.Second
	c.Sync([]Spec{s})
	testkit.WaitFor(t, 5*time.Second, "10 probes", func() bool { return srv.probes.Load() >= 10 })
	got := rec.of(s.TaskID)
	if len(got) != 1 || !got[0].Healthy {
		t.Errorf("results %+v; want only the first healthy verdict", got)
	}
}

// A verdict says how long its check has run, on this process's clock,
// whatever the task's StartedAt (its worker's wall clock) says: a start an
// hour ago (the grace is over) or an hour ahead (the whole grace is waited).
func TestChecker_VerdictSaysHowLongItChecked(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		srv := newServer(t, always(http.StatusInternalServerError))
		c, rec := newTestChecker(t)
		s := httpSpec(srv.addr(), "/healthfail")
		s.Timeout, s.Grace = time.Second, 200*time.Millisecond
		least := 2 * s.Interval // three probes, an interval apart
		if ahead {
			s.StartedAt = time.Now().Add(time.Hour)
			least += s.Grace
		}
		begin := time.Now()
		c.Sync([]Spec{s})
		res := rec.next(t, s.TaskID, 5*time.Second)
		waited := time.Since(begin)
		if res.Healthy || res.Checked < least || res.Checked > waited {
			t.Errorf("StartedAt %s: verdict %+v after %s; want unhealthy, Checked in [%s, %s]", s.StartedAt, res, waited, least, waited)
		}
	}
}

func TestChecker_Grace(t *testing.T) {
	const grace = 300 * time.Millisecond
	started := time.Now()
	graceEnd := started.Add(grace)
	var early atomic.Int64
	// Fails whenever asked during the grace period, succeeds after it.
	srv := newServer(t, func(int64) int {
		if time.Now().Before(graceEnd) {
			early.Add(1)
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	c, rec := newTestChecker(t)
	s := httpSpec(srv.addr(), "/health")
	s.Timeout, s.Threshold, s.Grace, s.StartedAt = time.Second, 1, grace, started
	c.Sync([]Spec{s})

	res := rec.next(t, s.TaskID, 3*time.Second)
	if !res.Healthy {
		t.Fatalf("first result = %+v; want healthy (failures during the grace period must not count)", res)
	}
	if res.At.Before(graceEnd) {
		t.Errorf("first verdict at %s, before the grace period ended at %s", res.At, graceEnd)
	}
	testkit.WaitFor(t, 5*time.Second, "10 probes", func() bool { return srv.probes.Load() >= 10 })
	for _, r := range rec.of(s.TaskID) {
		if !r.Healthy {
			t.Errorf("unhealthy result %+v for a server that failed only during grace (%d probes in grace)", r, early.Load())
		}
	}
}

func TestChecker_GraceTiming(t *testing.T) {
	const grace = 5 * time.Second
	tests := []struct {
		name      string
		startedAt time.Time
		grace     time.Duration
		within    time.Duration // the first verdict comes within this
	}{
		// Started long ago: the grace is over, the first probe runs at once.
		{name: "started in the past", startedAt: time.Now().Add(-time.Minute), grace: grace, within: 2 * time.Second},
		// A worker clock far ahead must not postpone the check beyond Grace.
		{name: "started in the future", startedAt: time.Now().Add(time.Hour), grace: 200 * time.Millisecond, within: 2 * time.Second},
		// Unknown start: the grace counts from the check's start.
		{name: "zero start", startedAt: time.Time{}, grace: 200 * time.Millisecond, within: 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, always(http.StatusOK))
			c, rec := newTestChecker(t)
			s := httpSpec(srv.addr(), "/health")
			s.Timeout, s.Grace, s.StartedAt = time.Second, tc.grace, tc.startedAt
			begin := time.Now()
			c.Sync([]Spec{s})
			res := rec.next(t, s.TaskID, tc.within)
			if !res.Healthy {
				t.Errorf("result = %+v; want healthy", res)
			}
			if tc.grace < time.Second && time.Since(begin) < tc.grace {
				t.Errorf("first verdict after %s; want no probe before the grace of %s", time.Since(begin), tc.grace)
			}
		})
	}
	if d := firstProbeDelay(Spec{Grace: time.Second, StartedAt: time.Now().Add(-400 * time.Millisecond)}, time.Now()); d > 600*time.Millisecond || d < 500*time.Millisecond {
		t.Errorf("firstProbeDelay for a start 400ms ago with 1s grace = %s; want about 600ms", d)
	}
}

func TestChecker_HungEndpointDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	var hungProbes atomic.Int64
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hungProbes.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) }) // runs before hung.Close
	good := newServer(t, always(http.StatusOK))
	bad := newServer(t, always(http.StatusInternalServerError))
	c, rec := newTestChecker(t)

	const hungTimeout = 800 * time.Millisecond
	hs := httpSpec(strings.TrimPrefix(hung.URL, "http://"), "/health")
	hs.Interval, hs.Timeout, hs.Threshold = hungTimeout, hungTimeout, 1
	gs := httpSpec(good.addr(), "/health")
	bs := httpSpec(bad.addr(), "/healthfail")
	gs.Timeout, bs.Timeout = 500*time.Millisecond, 500*time.Millisecond

	// Start the hung check first, and give its probe time to be in flight.
	start := time.Now()
	c.Sync([]Spec{hs})
	testkit.WaitFor(t, 2*time.Second, "the hung probe to be in flight", func() bool { return hungProbes.Load() >= 1 })
	c.Sync([]Spec{hs, gs, bs})

	g := rec.next(t, gs.TaskID, hungTimeout/2)
	if !g.Healthy {
		t.Errorf("good check: %+v; want healthy", g)
	}
	b := rec.next(t, bs.TaskID, hungTimeout/2)
	if b.Healthy || !strings.Contains(b.Reason, "returned 500") {
		t.Errorf("bad check: %+v; want unhealthy, returned 500", b)
	}
	if len(rec.of(hs.TaskID)) != 0 {
		t.Errorf("the hung check reported before its timeout: %+v", rec.of(hs.TaskID))
	}

	h := rec.next(t, hs.TaskID, 5*hungTimeout)
	if h.Healthy || h.Reason != "GET /health timed out after 800ms" {
		t.Errorf("hung check: %+v; want unhealthy, reason \"GET /health timed out after 800ms\"", h)
	}
	if d := h.At.Sub(start); d < hungTimeout {
		t.Errorf("hung check decided after %s; want no earlier than its timeout %s", d, hungTimeout)
	}
}

func TestChecker_TCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })

	closedAddr := testkit.FreeAddr(t)

	c, rec := newTestChecker(t)
	up := httpSpec(l.Addr().String(), "")
	up.Kind, up.Timeout = KindTCP, time.Second
	down := httpSpec(closedAddr, "")
	down.Kind, down.Timeout = KindTCP, time.Second
	c.Sync([]Spec{up, down})

	res := rec.next(t, up.TaskID, 2*time.Second)
	if !res.Healthy || res.Reason != "connected to "+up.Addr {
		t.Errorf("accepting listener: %+v; want healthy, reason \"connected to %s\"", res, up.Addr)
	}
	res = rec.next(t, down.TaskID, 2*time.Second)
	want := "connect " + closedAddr + ": connection refused"
	if res.Healthy || res.Failures != 3 || res.Reason != want {
		t.Errorf("closed port: %+v; want unhealthy after 3 failures, reason %q", res, want)
	}
	testkit.WaitFor(t, 5*time.Second, "10 accepted probes", func() bool { return accepted.Load() >= 10 })
	if got := rec.of(up.TaskID); len(got) != 1 {
		t.Errorf("accepting listener: results %+v; want one healthy", got)
	}
}

func TestChecker_HTTPConnectionRefused(t *testing.T) {
	addr := testkit.FreeAddr(t)
	c, rec := newTestChecker(t)
	s := httpSpec(addr, "/health")
	s.Timeout, s.Threshold = time.Second, 1
	c.Sync([]Spec{s})
	res := rec.next(t, s.TaskID, 2*time.Second)
	want := "GET /health: connect " + addr + ": connection refused"
	if res.Healthy || res.Reason != want {
		t.Errorf("result %+v; want unhealthy, reason %q", res, want)
	}
}

func TestChecker_SyncReplaceRemoveStop(t *testing.T) {
	a := newServer(t, always(http.StatusOK))
	b := newServer(t, always(http.StatusOK))
	c, rec := newTestChecker(t)

	s1 := httpSpec(a.addr(), "/health")
	s1.Timeout = time.Second
	c.Sync([]Spec{s1})
	rec.next(t, s1.TaskID, 2*time.Second)
	testkit.WaitFor(t, 2*time.Second, "probes to the first address", func() bool { return a.probes.Load() >= 3 })

	// Unchanged specs, passed again, keep the running check (no new verdict,
	// no restart of the grace or counters).
	same := s1
	same.StartedAt = s1.StartedAt.UTC()
	for i := 0; i < 100; i++ {
		c.Sync([]Spec{same})
	}
	if n := c.live.Load(); n != 1 {
		t.Fatalf("%d check goroutines after re-syncing one spec; want 1", n)
	}

	// A new generation on another address replaces the check.
	s2 := s1
	s2.Generation, s2.Addr = 2, b.addr()
	c.Sync([]Spec{s2})
	testkit.WaitFor(t, 2*time.Second, "the old check's goroutine to end", func() bool { return c.live.Load() == 1 })
	res := rec.next(t, s2.TaskID, 2*time.Second)
	if res.Generation != 2 || !res.Healthy {
		t.Errorf("after replacing: %+v; want a healthy verdict of generation 2", res)
	}
	oldProbes := a.probes.Load()
	testkit.WaitFor(t, 2*time.Second, "probes to the new address", func() bool { return b.probes.Load() >= 5 })
	if n := a.probes.Load(); n != oldProbes {
		t.Errorf("the old address got %d more probes after its check was replaced", n-oldProbes)
	}

	// Removing the check stops it.
	c.Sync(nil)
	testkit.WaitFor(t, 2*time.Second, "the removed check's goroutine to end", func() bool { return c.live.Load() == 0 })
	stopped := b.probes.Load()
	s3 := httpSpec(a.addr(), "/health") // another task keeps running, as a clock
	s3.Timeout = time.Second
	c.Sync([]Spec{s3})
	before := a.probes.Load()
	testkit.WaitFor(t, 2*time.Second, "probes of another check", func() bool { return a.probes.Load() >= before+5 })
	if n := b.probes.Load(); n != stopped {
		t.Errorf("the removed check probed %d more times", n-stopped)
	}

	// Stop waits for every goroutine; afterwards nothing probes or reports.
	c.Sync([]Spec{s3, s2})
	testkit.WaitFor(t, 2*time.Second, "two checks", func() bool { return c.live.Load() == 2 })
	c.Stop()
	if n := c.live.Load(); n != 0 {
		t.Fatalf("%d check goroutines still running after Stop returned", n)
	}
	nResults, na, nb := len(rec.all()), a.probes.Load(), b.probes.Load()
	c.Sync([]Spec{s1}) // no effect after Stop
	if n := c.live.Load(); n != 0 {
		t.Errorf("Sync after Stop started %d checks", n)
	}
	c.Stop() // idempotent
	// A fresh checker on a third server is the clock for "a while later".
	clock := newServer(t, always(http.StatusOK))
	c2, _ := newTestChecker(t)
	cs := httpSpec(clock.addr(), "/health")
	cs.Timeout = time.Second
	c2.Sync([]Spec{cs})
	testkit.WaitFor(t, 2*time.Second, "five clock probes", func() bool { return clock.probes.Load() >= 5 })
	if len(rec.all()) != nResults || a.probes.Load() != na || b.probes.Load() != nb {
		t.Errorf("after Stop: results %d→%d, probes a %d→%d, b %d→%d; want no change",
			nResults, len(rec.all()), na, a.probes.Load(), nb, b.probes.Load())
	}
}

func TestChecker_SyncDuplicateTaskHighestGenerationWins(t *testing.T) {
	a := newServer(t, always(http.StatusOK))
	b := newServer(t, always(http.StatusOK))
	c, rec := newTestChecker(t)
	old := httpSpec(a.addr(), "/health")
	old.Timeout = time.Second
	cur := old
	cur.Generation, cur.Addr = 5, b.addr()
	c.Sync([]Spec{cur, old})
	res := rec.next(t, cur.TaskID, 2*time.Second)
	if res.Generation != 5 {
		t.Errorf("result %+v; want generation 5", res)
	}
	if n := c.live.Load(); n != 1 || a.probes.Load() != 0 {
		t.Errorf("%d checks, %d probes of the older generation; want 1 check, 0 probes", n, a.probes.Load())
	}
}

func TestChecker_StopInterruptsHungProbe(t *testing.T) {
	release := make(chan struct{})
	var probes atomic.Int64
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })
	c, rec := newTestChecker(t)
	s := httpSpec(strings.TrimPrefix(hung.URL, "http://"), "/health")
	s.Interval, s.Timeout = time.Minute, time.Minute
	c.Sync([]Spec{s})
	testkit.WaitFor(t, 2*time.Second, "the probe to be in flight", func() bool { return probes.Load() == 1 })

	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return while a probe hung (its Timeout is a minute)")
	}
	if got := rec.all(); len(got) != 0 {
		t.Errorf("a stopped check reported %+v", got)
	}
}

func TestChecker_StopWaitsForOnResult(t *testing.T) {
	srv := newServer(t, always(http.StatusOK))
	entered := make(chan struct{})
	release := make(chan struct{})
	var returned atomic.Bool
	c := NewChecker(func(Result) {
		close(entered)
		<-release
		returned.Store(true)
	}, testkit.LoggerAt(t, "test", hclog.Debug))
	s := httpSpec(srv.addr(), "/health")
	s.Timeout = time.Second
	c.Sync([]Spec{s})
	<-entered

	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
		t.Fatal("Stop returned while onResult was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after onResult did")
	}
	if !returned.Load() {
		t.Error("Stop returned before onResult")
	}
}

func TestChecker_OnResultMayCallSync(t *testing.T) {
	srv := newServer(t, always(http.StatusOK))
	var c *Checker
	got := make(chan Result, 4)
	c = NewChecker(func(r Result) {
		c.Sync(nil) // the owner drops the check from inside the callback
		got <- r
	}, testkit.LoggerAt(t, "test", hclog.Debug))
	t.Cleanup(c.Stop)
	s := httpSpec(srv.addr(), "/health")
	s.Timeout = time.Second
	c.Sync([]Spec{s})
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("no result")
	}
	testkit.WaitFor(t, 2*time.Second, "the check to end", func() bool { return c.live.Load() == 0 })
}

func TestChecker_NilLoggerAndUnknownKind(t *testing.T) {
	c := NewChecker(nil, nil)
	defer c.Stop()
	c.Sync([]Spec{{TaskID: uuid.New(), Kind: "icmp", Addr: "127.0.0.1:1"}})
	if n := c.live.Load(); n != 0 {
		t.Errorf("%d goroutines for an unknown kind; want 0", n)
	}
}

func TestTracker(t *testing.T) {
	type step struct {
		ok      bool
		report  bool
		healthy bool
		fails   int
	}
	tests := []struct {
		name      string
		threshold int
		steps     []step
	}{
		{name: "healthy once", threshold: 3, steps: []step{
			{ok: true, report: true, healthy: true}, {ok: true}, {ok: true}}},
		{name: "unhealthy at threshold, once", threshold: 3, steps: []step{
			{}, {}, {report: true, fails: 3}, {}, {}}},
		{name: "threshold one", threshold: 1, steps: []step{
			{report: true, fails: 1}, {}, {ok: true, report: true, healthy: true}, {report: true, fails: 1}}},
		{name: "blip below threshold", threshold: 3, steps: []step{
			{ok: true, report: true, healthy: true}, {}, {}, {ok: true}, {}, {}, {report: true, fails: 3},
			{ok: true, report: true, healthy: true}}},
		{name: "healthy after early failures", threshold: 3, steps: []step{
			{}, {}, {ok: true, report: true, healthy: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := tracker{threshold: tc.threshold}
			for i, st := range tc.steps {
				res, report := tr.observe(st.ok, "r", time.Now())
				if report != st.report || (report && (res.Healthy != st.healthy || res.Failures != st.fails)) {
					t.Fatalf("step %d (ok=%v): report=%v result=%+v; want report=%v healthy=%v failures=%d",
						i, st.ok, report, res, st.report, st.healthy, st.fails)
				}
			}
		})
	}
}

func TestProbe(t *testing.T) {
	ok200 := newServer(t, always(http.StatusOK))
	fail := newServer(t, always(http.StatusInternalServerError))
	closed := testkit.FreeAddr(t)
	tests := []struct {
		name    string
		spec    Spec
		healthy bool
		reason  string
	}{
		{"http ok", Spec{Kind: KindHTTP, Addr: ok200.addr(), Path: "/health", Timeout: time.Second}, true, "GET /health returned 200"},
		{"http 500", Spec{Kind: KindHTTP, Addr: fail.addr(), Path: "/healthfail", Timeout: time.Second}, false, "GET /healthfail returned 500"},
		{"tcp ok", Spec{Kind: KindTCP, Addr: ok200.addr()}, true, "connected to " + ok200.addr()},
		{"tcp refused", Spec{Kind: KindTCP, Addr: closed, Timeout: time.Second}, false, "connect " + closed + ": connection refused"},
		{"unknown kind", Spec{Kind: "icmp", Addr: closed}, false, `unknown check kind "icmp"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			healthy, reason := Probe(context.Background(), tc.spec)
			if healthy != tc.healthy || reason != tc.reason {
				t.Errorf("Probe(%+v) = %v, %q; want %v, %q", tc.spec, healthy, reason, tc.healthy, tc.reason)
			}
		})
	}
}

// blackhole returns the address of a listener whose accept queue is full, so
// that the kernel drops further SYNs: a connect there hangs, as it does to a
// machine that is powered off.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue (nobody accepts) until a connect no longer completes.
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s still accepts connections after 16; cannot make a black hole", addr)
	return ""
}

// TestProbe_ConnectTimeout: with ConnectTimeout below Timeout, a connect
// that gets no answer fails after ConnectTimeout and says so; without it the
// probe waits for its whole Timeout.
func TestProbe_ConnectTimeout(t *testing.T) {
	hole := blackhole(t)
	for _, kind := range []string{KindHTTP, KindTCP} {
		spec := Spec{Kind: kind, Addr: hole, Path: "/health", Timeout: 3 * time.Second, ConnectTimeout: 200 * time.Millisecond}
		healthy, reason := Probe(context.Background(), spec)
		if healthy || !strings.HasSuffix(reason, "connect timed out after 200ms") {
			t.Errorf("%s probe of a black hole with ConnectTimeout 200ms = %v, %q; want unhealthy, \"…connect timed out after 200ms\"", kind, healthy, reason)
		}
	}
	spec := Spec{Kind: KindTCP, Addr: hole, Timeout: 300 * time.Millisecond}
	if healthy, reason := Probe(context.Background(), spec); healthy || reason != "connect "+hole+" timed out after 300ms" {
		t.Errorf("probe without ConnectTimeout = %v, %q; want the whole timeout", healthy, reason)
	}
}

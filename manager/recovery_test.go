package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/health"
	"github.com/google/uuid"
)

func TestWantsRestart(t *testing.T) {
	cases := []struct {
		policy string
		state  api.State
		want   bool
		why    string
	}{
		{"", api.Failed, true, ""},
		{"on-failure", api.Failed, true, ""},
		{"on-failure", api.Completed, false, ""},
		{"", api.Completed, false, ""},
		{"no", api.Failed, false, `restart policy is "no"`},
		{"no", api.Completed, false, ""},
		{"always", api.Completed, true, ""},
		{"unless-stopped", api.Completed, true, ""},
		{"always", api.Failed, true, ""},
	}
	for _, tc := range cases {
		got, why := wantsRestart(api.Task{RestartPolicy: tc.policy, State: tc.state, Reason: "exited with code 1"})
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("policy %q state %s: got %v %q, want %v %q", tc.policy, tc.state, got, why, tc.want, tc.why)
		}
	}
	// A task still to run whose placement was stopped on request: a stop the
	// cluster did not ask for, run again under every policy.
	for _, p := range []string{"", "on-failure", "no", "always", "unless-stopped"} {
		stopped := api.Task{RestartPolicy: p, State: api.Completed, DesiredState: api.Running, Reason: api.ReasonStoppedOnRequest}
		if got, why := wantsRestart(stopped); !got {
			t.Errorf("policy %q, stopped on request while to run: not restarted (%q)", p, why)
		}
	}
}

func TestBackoffGrowsToTheCap(t *testing.T) {
	cfg := DefaultConfig()
	l := &loop{m: &Manager{cfg: cfg}}
	if d := l.backoff(1); d != 0 {
		t.Fatalf("first failure after a healthy run waits %s, want 0", d)
	}
	prevMax := time.Duration(0)
	for streak := 2; streak <= 20; streak++ {
		d := l.backoff(streak)
		// With jitter the wait is in [base·2^(streak-2)/2, base·2^(streak-2)], capped.
		want := cfg.RestartBase
		for i := 2; i < streak && want < cfg.RestartCap; i++ {
			want *= 2
		}
		want = min(want, cfg.RestartCap)
		if d < want/2 || d > want {
			t.Fatalf("streak %d: wait %s, want in [%s, %s]", streak, d, want/2, want)
		}
		if want < prevMax {
			t.Fatalf("streak %d: bound %s shrank from %s", streak, want, prevMax)
		}
		prevMax = want
	}
	if prevMax != cfg.RestartCap {
		t.Fatalf("bound after many failures %s, want the cap %s", prevMax, cfg.RestartCap)
	}
}

func TestNoteFailure_HealthyRunResetsTheStreak(t *testing.T) {
	cfg := DefaultConfig()
	l := &loop{m: &Manager{cfg: cfg}, restarts: map[uuid.UUID]*restartState{}}
	task := api.Task{ID: uuid.New(), Generation: 1}
	if rs := l.noteFailure(task, time.Second, "x"); rs.streak != 1 {
		t.Fatalf("streak %d after the first failure", rs.streak)
	}
	if rs := l.noteFailure(task, time.Second, "x"); rs.streak != 1 {
		t.Fatalf("the same generation counted twice: streak %d", rs.streak)
	}
	task.Generation = 2
	if rs := l.noteFailure(task, time.Second, "x"); rs.streak != 2 {
		t.Fatalf("streak %d after a quick second failure, want 2", rs.streak)
	}
	task.Generation = 3
	if rs := l.noteFailure(task, cfg.HealthyRun, "x"); rs.streak != 1 {
		t.Fatalf("streak %d after a healthy run, want 1", rs.streak)
	}
	if maxRestarts(api.Task{}) != DefaultMaxRestarts || maxRestarts(api.Task{MaxRestarts: -1}) != -1 {
		t.Fatal("maxRestarts defaults")
	}
}

func TestLostWorker(t *testing.T) {
	nodes := []api.Node{
		{Name: "alive", State: api.NodeAlive, RuntimeAvailable: true},
		{Name: "suspect", State: api.NodeSuspect, RuntimeAvailable: true},
		{Name: "dead", State: api.NodeDead, RuntimeAvailable: true},
		{Name: "left", State: api.NodeLeft, RuntimeAvailable: true},
		{Name: "nodocker", State: api.NodeAlive},
	}
	for name, want := range map[string]bool{"alive": false, "suspect": false, "dead": true, "left": true, "nodocker": true, "unknown": true} {
		var n api.Node
		known := false
		for _, x := range nodes {
			if x.Name == name {
				n, known = x, true
			}
		}
		if got, why := lostWorker(name, n, known); got != want || (got && why == "") {
			t.Errorf("lostWorker(%s) = %v %q, want %v", name, got, why, want)
		}
	}
}

// An unhealthy verdict's run is measured on the leader's own clock (how
// long its health check ran, health.Result.Checked), not from the task's
// StartTime, which the worker stamps with its wall clock: with the leader's
// clock stepped forward (or the worker's behind) a quick failure looked an
// hour long and skipped the back-off of a crash loop; with the leader's
// clock stepped back a long healthy run looked negative and kept it.
func TestUnhealthy_RunMeasuredOnTheLeadersClock(t *testing.T) {
	cases := []struct {
		name    string
		start   time.Duration // the task's StartTime, from now
		checked time.Duration
		restart bool
		streak  int
	}{
		{"a quick failure keeps the back-off though StartTime is an hour ago", -time.Hour, 500 * time.Millisecond, false, 3},
		{"a long healthy run restarts at once though StartTime is an hour ahead", time.Hour, time.Minute, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.worker("w1")
			rec := h.placed("t1", "w1", 1, api.Running, nil)
			rec.StartTime = time.Now().UTC().Add(tc.start)
			h.seed(fsm.ReportTask{Task: rec})
			if got := h.task("t1").StartTime; !got.Equal(rec.StartTime) {
				t.Fatalf("StartTime %s, want %s", got, rec.StartTime)
			}
			// Two failures in a row before this one.
			h.l.restarts[h.id("t1")] = &restartState{streak: 2}
			h.reset()
			h.l.unhealthy(h.ctx, health.Result{TaskID: h.id("t1"), Generation: 1, Failures: 3, Reason: "GET /health returned 500", Checked: tc.checked})
			h.settle()
			var want []string
			if tc.restart {
				want = []string{"restart t1 on w1 gen 2 counted"}
			}
			if got := h.commands(); !same(got, want) {
				t.Errorf("commands %q, want %q", got, want)
			}
			if rs := h.l.restarts[h.id("t1")]; rs == nil || rs.streak != tc.streak {
				t.Errorf("restart state %+v, want streak %d", rs, tc.streak)
			}
		})
	}
}

// The probes of a lost worker's tasks share one list of its records: made
// once for all that start together, under the loop's context, so that one
// probe giving up does not fail the others; a probe that starts later than
// fresh lists again.
func TestWorkerLists_OneListForTheProbesThatStartTogether(t *testing.T) {
	var w workerLists
	id := uuid.New()
	var calls atomic.Int32
	release := make(chan struct{})
	list := func(ctx context.Context) ([]api.Task, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return []api.Task{{ID: id, Generation: 3, State: api.Running}}, nil
	}
	ctx := context.Background()
	const probes = 50
	var wg sync.WaitGroup
	errs := make(chan error, probes)
	for range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := w.get(ctx, ctx, "w1:api", time.Hour, list)
			if err == nil && recs[id].Generation != 3 {
				err = fmt.Errorf("records %v, want the task at generation 3", recs)
			}
			errs <- err
		}()
	}
	for calls.Load() == 0 { // the list is under way
		time.Sleep(time.Millisecond)
	}
	// A probe whose own op ends while the list is under way gives up alone.
	octx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := w.get(ctx, octx, "w1:api", time.Hour, list)
		gaveUp <- err
	}()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("a probe whose context ended: %v, want context.Canceled", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d lists for %d probes started together, want 1", n, probes+1)
	}
	// Past fresh, the next probe asks again.
	if _, err := w.get(ctx, ctx, "w1:api", 0, list); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d lists after a stale one, want 2", n)
	}
}

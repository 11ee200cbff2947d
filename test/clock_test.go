package test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// clockDeadline bounds each wait of the clock test: generous, a shared
// machine running race-enabled binaries; the test logs how long each took.
const clockDeadline = 2 * time.Minute

// A manager's wall clock steps by minutes, both ways (issue 13), on the
// clock-jump build (clock.go): the leader's 10 minutes back, then a
// follower's 10 minutes ahead (20 minutes between the two), then both back
// to the host's, as NTP would correct them. After each step every manager
// takes a write, a task submitted through the stepped manager runs, and
// when it crashes it is restarted; the cluster ends converged.
func TestClock_ManagerClockJumpsBothWays(t *testing.T) {
	start := time.Now()
	var c *ProcCluster
	// Registered first, so it runs after ProcCluster.Close (see newRecRT).
	t.Cleanup(func() {
		if c != nil {
			sweepContainers(t, c.Prefix)
		}
	})
	c = NewProcClusterWith(t, 3, 2, ProcOptions{ClockJump: true})
	t.Logf("cluster of 3 managers and 2 workers on the clock-jump build ready in %s", recSince(start))
	r := &recRT{t: t, c: c, cl: c.Client()}

	step := func(p *Proc, d time.Duration) {
		t.Helper()
		if err := c.SetClockOffset(p, d); err != nil {
			t.Fatal(err)
		}
	}
	back := c.LeaderProc()
	step(back, -10*time.Minute)
	r.clockCheck(fmt.Sprintf("the clock of %s (the leader) 10 minutes back", back.Name), back)

	var ahead *Proc
	leader := c.LeaderProc()
	for _, m := range c.Managers {
		if m != leader && m != back {
			ahead = m
		}
	}
	step(ahead, 10*time.Minute)
	r.clockCheck(fmt.Sprintf("the clock of %s (a follower; %s leads) 10 minutes ahead, %s's still 10 minutes back", ahead.Name, leader.Name, back.Name), ahead)

	step(back, 0)
	step(ahead, 0)
	r.clockCheck("every clock back to the host's", c.Managers[0])
	r.converged()
}

// clockCheck checks the cluster after a clock step (what): every manager
// takes a write (a token created through it alone), a task submitted
// through manager via runs, crashes and is restarted, and is stopped.
func (r *recRT) clockCheck(what string, via *Proc) {
	r.t.Helper()
	t, c := r.t, r.c
	t.Logf("--- %s", what)
	for _, m := range c.Managers {
		begin := time.Now()
		cl := c.ClientOf(api.ClientOptions{Timeout: 10 * time.Second, RetryFor: 5 * time.Second}, m)
		var tok api.Token
		testkit.Eventually(t, clockDeadline, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var err error
			tok, err = cl.CreateToken(ctx, api.TokenRequest{Name: "clock-" + m.Name, Role: api.RoleRead})
			if err != nil {
				return fmt.Errorf("create a token through %s: %w", m.Name, err)
			}
			return nil
		})
		t.Logf("a write through %s acknowledged in %s (token %s)", m.Name, recSince(begin), tok.AccessorID)
	}

	through := &recRT{t: t, c: c, cl: c.ClientOf(api.ClientOptions{Timeout: 10 * time.Second, RetryFor: 20 * time.Second}, via)}
	begin := time.Now()
	id := uuid.New()
	task := echoTask("clock")
	task.ID = id
	testkit.Eventually(t, clockDeadline, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _, err := through.cl.SubmitTask(ctx, api.TaskEvent{ID: uuid.New(), State: api.Running, Timestamp: time.Now().UTC(), Task: task})
		return err // a resubmission of the same ID is idempotent
	})
	before, _ := through.waitTask(id, clockDeadline, recIsRunning)
	t.Logf("a task submitted through %s runs (on %s, generation %d) after %s", via.Name, before.Worker, before.Generation, recSince(begin))
	recAfterHealthyRun(before)
	at := recCrash(t, before)
	after, _ := through.waitTask(id, clockDeadline, func(x api.Task) error {
		if x.Generation <= before.Generation {
			return fmt.Errorf("still generation %d (%s): %s", x.Generation, x.State, x.Reason)
		}
		return recIsRunning(x)
	})
	t.Logf("after its crash it runs again (generation %d → %d, restarts %d, on %s) in %s",
		before.Generation, after.Generation, after.RestartCount, after.Worker, recSince(at))
	if after.RestartCount != before.RestartCount+1 {
		t.Errorf("restart count %d after the crash, want %d", after.RestartCount, before.RestartCount+1)
	}
	testkit.Eventually(t, clockDeadline, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := r.cl.StopTask(ctx, id)
		if errors.Is(err, api.ErrConflict) {
			return nil // an earlier attempt stopped it; the answer was lost
		}
		return err
	})
	r.waitTask(id, clockDeadline, func(x api.Task) error {
		if !x.State.Terminal() {
			return fmt.Errorf("stopped, but %s", x.State)
		}
		return nil
	})
}

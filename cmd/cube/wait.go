package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// This file holds what the commands that wait share (cube run --wait, cube
// node drain --wait): the exit statuses that tell a script how a wait
// ended, and the poll loop that rides out leader elections and manager
// restarts on the way.

// The exit statuses of cube. Every failure is 1 unless one of these says
// more; cube run --help and cube node drain --help document them.
const (
	exitFailure  = 1 // the command failed: bad flags or file, the cluster unreachable, an error answer
	exitRefused  = 2 // the task was refused: invalid, over the cluster's quota, or the ID of a task that ended
	exitEnded    = 3 // the task ended (failed, given up on, stopped) before it ran (healthy)
	exitTimedOut = 4 // what --wait waits for did not happen within --timeout
)

// exitError is an error with the exit status cube ends with (main).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the status cube exits with after err: its exitError's, else 1.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// defaultWait is how long --wait waits when --timeout is not given: room
// for an image pull, a health check's grace period and a few restarts (an
// update's HealthyDeadline is as long).
const defaultWait = 5 * time.Minute

// pollInterval is how often a wait reads the cluster: a person sees each
// change at once, and a manager serves four small reads a second easily.
const pollInterval = 250 * time.Millisecond

// pollCallTimeout bounds one read of a wait, its retries included: a
// leader election takes well under it, and the wait goes on after it.
const pollCallTimeout = 10 * time.Second

// waitTimeout is how long --wait waits: --timeout when given, else
// defaultWait (the 20 s default of --timeout bounds one call, which is too
// short for a task to be pulled, started and checked).
func (f *clientFlags) waitTimeout(cmd *cobra.Command) time.Duration {
	if fl := cmd.Flags().Lookup("timeout"); fl != nil && fl.Changed {
		return f.timeout
	}
	return defaultWait
}

// errWaitTimedOut is returned by pollUntil when its context's deadline
// passed; the caller says what it was waiting for.
var errWaitTimedOut = errors.New("timed out")

// pollUntil calls step every pollInterval until it reports done, returns
// an error that waiting cannot cure (see transient), or ctx ends: at its
// deadline it returns errWaitTimedOut with the last error seen, if any;
// cancelled (Ctrl-C), ctx's error. Each step is bounded by pollCallTimeout.
func pollUntil(ctx context.Context, step func(ctx context.Context) (done bool, err error)) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		sctx, cancel := context.WithTimeout(ctx, pollCallTimeout)
		done, err := step(sctx)
		cancel()
		switch {
		case err == nil && done:
			return nil
		case err != nil && !transient(err) && ctx.Err() == nil:
			return err
		case err != nil:
			last = err
		}
		select {
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ctx.Err()
			}
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", errWaitTimedOut, last)
			}
			return errWaitTimedOut
		case <-tick.C:
		}
	}
}

// transient reports whether a read's error may go away by waiting: any
// but an answer that says the request itself is wrong (4xx but 429), such
// as a task that does not exist or credentials that are refused.
func transient(err error) bool {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.StatusCode >= 500 || se.StatusCode == http.StatusTooManyRequests
	}
	return true
}

// historyPrinter prints a task's History as a wait sees it grow: each
// entry once, one line each, and an entry again when its reason changed (a
// Pending task's note: why it waits).
type historyPrinter struct {
	w    io.Writer
	last *api.TaskTransition
}

// print prints what h holds beyond what was printed.
func (p *historyPrinter) print(h []api.TaskTransition) {
	start := 0
	if p.last != nil {
		// The newest entry printed, found again (older ones drop off the
		// front as the History grows); if it is gone, everything is new.
		for i := len(h) - 1; i >= 0; i-- {
			if sameTransition(h[i], *p.last) {
				start = i + 1
				if h[i].Reason != p.last.Reason {
					start = i
				}
				break
			}
		}
	}
	for _, e := range h[start:] {
		fmt.Fprintln(p.w, progressLine(e))
	}
	if len(h) > 0 {
		last := h[len(h)-1]
		p.last = &last
	}
}

// sameTransition reports whether a and b are one entry, its reason aside.
func sameTransition(a, b api.TaskTransition) bool {
	a.Reason, b.Reason = "", ""
	return a.Time.Equal(b.Time) && a.State == b.State && a.DesiredState == b.DesiredState && a.Worker == b.Worker &&
		a.Generation == b.Generation && a.RestartCount == b.RestartCount && a.Healthy == b.Healthy && a.ExitCode == b.ExitCode
}

// progressLine is one entry of a History as a wait prints it:
// "15:04:05  Running, healthy on w1: passed its health check".
func progressLine(e api.TaskTransition) string {
	at := "--:--:--"
	if !e.Time.IsZero() {
		at = e.Time.Local().Format("15:04:05")
	}
	s := at + "  " + transitionState(e)
	if e.Worker != "" {
		s += " on " + e.Worker
	}
	if e.RestartCount > 0 {
		s += fmt.Sprintf(" (restart %d)", e.RestartCount)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

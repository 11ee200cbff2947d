package testkit

import (
	"errors"
	"testing"
	"time"
)

// Eventually calls cond until it returns nil and returns how long that took.
// If within passes first, it fails t with cond's last error:
// "after <within>: <err>".
//
// cond runs on the caller's goroutine, so it may itself call t.Fatal to give
// up early (say, when the process it waits for has exited).
func Eventually(t testing.TB, within time.Duration, cond func() error) time.Duration {
	t.Helper()
	took, err := poll(within, cond)
	if err != nil {
		t.Fatalf("after %s: %v", within, err)
	}
	return took
}

// WaitFor is Eventually for a condition that has no error to tell: on
// timeout it fails t with "timed out after <within> waiting for <what>".
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	took, err := poll(within, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
	return took
}

var errNotYet = errors.New("not yet")

// maxPause bounds the pause between two calls of a condition. The first
// pauses are shorter (1ms, doubling), so a condition that holds almost at
// once is seen almost at once; a long wait does not hammer what cond asks
// (often a server over HTTP) more than 40 times a second.
const maxPause = 25 * time.Millisecond

// poll calls cond until it returns nil or within has passed, and returns how
// long it polled and cond's last error (nil if it held).
func poll(within time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	pause := time.Millisecond
	for {
		err := cond()
		if err == nil || time.Since(start) > within {
			return time.Since(start), err
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPause)
	}
}

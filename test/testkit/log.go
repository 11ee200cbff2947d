package testkit

import (
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Logger returns an hclog logger at Info level, named name, that writes each
// line to t.Log until the test ends; see LoggerAt.
func Logger(t testing.TB, name string) hclog.Logger {
	t.Helper()
	return LoggerAt(t, name, hclog.Info)
}

// LoggerAt returns an hclog logger at level, named name ("" for none), that
// writes each line to t.Log until the test ends and drops it after.
//
// Servers, pools and other goroutines often log after the test function has
// returned, and t.Log then panics (or, for a subtest, lands in the parent's
// output). The logger goes quiet in a t.Cleanup instead, so a late line is
// dropped, without a race. Cleanups run last-registered first: call LoggerAt
// before registering the cleanups that stop what logs, so their shutdown
// lines still reach the test's log.
func LoggerAt(t testing.TB, name string, level hclog.Level) hclog.Logger {
	t.Helper()
	w := &writer{t: t}
	t.Cleanup(w.silence)
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: w})
}

// writer hands each write to t.Log as one line until silence is called.
type writer struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

// Write logs p as one t.Log line, unless the test has ended. The lock is
// held across t.Log so that silence, once it returns, has no write in flight.
func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// silence drops every later write.
func (w *writer) silence() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

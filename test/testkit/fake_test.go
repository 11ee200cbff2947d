package testkit

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// fakeTB is a testing.TB that records what a helper reports instead of
// passing it to the test that runs it, so a test can check that a helper
// fails, and how. Like the real ones, Fatal and Fatalf end the calling
// goroutine: call the helper inside run. end plays the test's end: it runs
// the cleanups, last registered first, and from then on a Log is late, which
// the real testing package answers with a panic.
type fakeTB struct {
	testing.TB // the real test, for whatever fakeTB does not override

	mu       sync.Mutex
	logs     []string
	late     []string // logged after end
	fatal    string   // the first Fatal or Error message
	failed   bool
	ended    bool
	cleanups []func()
}

func newFakeTB(t *testing.T) *fakeTB { return &fakeTB{TB: t} }

func (f *fakeTB) Helper() {}

func (f *fakeTB) Log(args ...any) { f.log(fmt.Sprint(args...)) }

func (f *fakeTB) Logf(format string, args ...any) { f.log(fmt.Sprintf(format, args...)) }

func (f *fakeTB) log(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		f.late = append(f.late, s)
		return
	}
	f.logs = append(f.logs, s)
}

func (f *fakeTB) Error(args ...any)                 { f.fail(fmt.Sprint(args...)) }
func (f *fakeTB) Errorf(format string, args ...any) { f.fail(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Fail()                             { f.fail("") }
func (f *fakeTB) Fatal(args ...any)                 { f.fail(fmt.Sprint(args...)); runtime.Goexit() }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (f *fakeTB) FailNow() { f.fail(""); runtime.Goexit() }

func (f *fakeTB) fail(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		f.fatal = msg
	}
	f.failed = true
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// end runs the cleanups, last registered first, and marks the test ended.
func (f *fakeTB) end() {
	f.mu.Lock()
	fns := slices.Clone(f.cleanups)
	f.cleanups = nil
	f.mu.Unlock()
	for _, fn := range slices.Backward(fns) {
		fn()
	}
	f.mu.Lock()
	f.ended = true
	f.mu.Unlock()
}

// run calls fn on a goroutine of its own and waits for it, as the testing
// package runs a test: a Fatal in fn ends that goroutine only. It reports
// whether fn returned (rather than being ended by a Fatal).
func (f *fakeTB) run(fn func()) (returned bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
		returned = true
	}()
	<-done
	return returned
}

// report returns what was logged, logged late and failed with.
func (f *fakeTB) report() (logs, late []string, fatal string, failed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.logs), slices.Clone(f.late), f.fatal, f.failed
}

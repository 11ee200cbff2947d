package testkit

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestLoggerAt_WritesLinesUntilTheTestEnds(t *testing.T) {
	f := newFakeTB(t)
	log := LoggerAt(f, "node", hclog.Debug)
	log.Debug("one", "k", 1)
	log.Trace("below the level")
	log.Info("two")
	logs, _, _, _ := f.report()
	if len(logs) != 2 {
		t.Fatalf("logged %q; want the debug and the info line", logs)
	}
	if !strings.Contains(logs[0], "[DEBUG] node: one: k=1") || strings.HasSuffix(logs[0], "\n") {
		t.Errorf("first line %q; want the debug line, named, without its newline", logs[0])
	}

	f.end()
	log.Error("late") // must not reach t.Log, which would panic
	logs, late, _, failed := f.report()
	if len(late) != 0 || len(logs) != 2 || failed {
		t.Errorf("after the end: logs %q, late %q, failed %v; want the late line dropped", logs, late, failed)
	}
}

func TestLogger_IsAtInfo(t *testing.T) {
	f := newFakeTB(t)
	log := Logger(f, "")
	log.Debug("hidden")
	log.Info("shown")
	logs, _, _, _ := f.report()
	if len(logs) != 1 || !strings.Contains(logs[0], "[INFO]  shown") {
		t.Errorf("logged %q; want the info line only", logs)
	}
}

// Goroutines that log while the test ends, and after: no line may reach
// t.Log once the test has ended, and -race must find nothing.
func TestLogger_LateWritesFromGoroutinesAreDropped(t *testing.T) {
	f := newFakeTB(t)
	log := Logger(f, "busy")
	var stop atomic.Bool
	var wrote atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				log.Info("tick")
				wrote.Add(1)
			}
		})
	}
	for wrote.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	f.end()
	after := wrote.Load()
	for wrote.Load() < after+100 {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	logs, late, _, _ := f.report()
	if len(late) != 0 {
		t.Errorf("%d lines reached t.Log after the test ended; want none", len(late))
	}
	if len(logs) < 100 {
		t.Errorf("%d lines logged before the end; want at least 100", len(logs))
	}
}

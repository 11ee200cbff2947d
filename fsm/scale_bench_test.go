package fsm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
)

// fileSink is a raft.SnapshotSink writing to a file, as raft's file
// snapshot store does (without its fsync and rename).
type fileSink struct{ *os.File }

func (fileSink) ID() string      { return "bench" }
func (s fileSink) Cancel() error { return s.Close() }

var _ raft.SnapshotSink = fileSink{}

// runningState returns an FSM holding n tasks, each submitted, placed on
// one of 100 workers and reported Running (a History of three entries),
// as a manager holds them.
func runningState(tb testing.TB, n int) *FSM {
	tb.Helper()
	f := New()
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	for i := range 100 {
		f.ApplyCommand(UpsertWorker{Node: api.Node{Name: fmt.Sprintf("w%03d", i), API: fmt.Sprintf("127.0.1.%d:5555", i),
			State: api.NodeAlive, RuntimeAvailable: true, Cpu: 2, Memory: 4 << 30, Disk: 40 << 30}})
	}
	for i := range n {
		t := api.Task{ID: uuid.New(), Name: fmt.Sprintf("web-%d", i), Image: "cube-echo:latest", Memory: 64 << 20,
			ExposedPorts: map[string]struct{}{"7777/tcp": {}}, HealthCheck: "/health", SubmitTime: now}
		if res := f.ApplyCommand(SubmitTask{Task: t, Time: now}); res.Err != nil {
			tb.Fatal(res.Err)
		}
		w := fmt.Sprintf("w%03d", i%100)
		res := f.ApplyCommand(AssignTask{ID: t.ID, Worker: w, Generation: 1, Time: now})
		if res.Err != nil {
			tb.Fatal(res.Err)
		}
		r := res.Task
		r.State, r.ContainerID, r.StartTime = api.Running, fmt.Sprintf("%064d", i), now
		if res := f.ApplyCommand(ReportTask{Task: r, Time: now}); res.Err != nil {
			tb.Fatal(res.Err)
		}
	}
	return f
}

// BenchmarkSnapshot measures, for a state of N Running tasks: the heap it
// takes per task, the snapshot's size, the time to take it (under the
// FSM's lock: what holds up Apply), to write it (Persist, in the
// background) and to restore it (what a fresh follower does on install).
//
//	go test -run '^$' -bench Snapshot -benchtime 3x ./fsm
func BenchmarkSnapshot(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			f := runningState(b, n)
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
			path := filepath.Join(b.TempDir(), "snap")
			var take, persist, restore time.Duration
			var size int64
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				s, err := f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				take += time.Since(start)
				out, err := os.Create(path)
				if err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				if err := s.Persist(fileSink{out}); err != nil {
					b.Fatal(err)
				}
				persist += time.Since(start)
				in, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				st, _ := in.Stat()
				size = st.Size()
				start = time.Now()
				if err := New().Restore(io.NopCloser(in)); err != nil {
					b.Fatal(err)
				}
				restore += time.Since(start)
			}
			per := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(b.N) }
			b.ReportMetric(heap, "heap-B/task")
			b.ReportMetric(float64(size)/float64(n), "snap-B/task")
			b.ReportMetric(per(take), "take-ms")
			b.ReportMetric(per(persist), "persist-ms")
			b.ReportMetric(per(restore), "restore-ms")
		})
	}
}

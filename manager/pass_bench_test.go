package manager

import (
	"fmt"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/hashicorp/go-hclog"
)

// BenchmarkLeaderPass measures one steady pass of the leader's loop (every
// task Running on a live worker, nothing to decide) against the tasks that
// run and the ended tasks kept until garbage collection, on the in-memory
// harness: the pass's own cost, without raft, HTTP or the machine's other
// load. Blocked tasks are Pending and fit no worker (1 PiB of memory), as
// in the submit measure of make scale. The goal is a pass independent of the ended tasks
// (bench/scale/SCALE.md reports these figures).
//
//	go test -run '^$' -bench LeaderPass -benchtime 20x -benchmem ./manager
func BenchmarkLeaderPass(b *testing.B) {
	for _, c := range []struct{ live, ended, blocked int }{
		{1_000, 0, 0}, {1_000, 10_000, 0}, {1_000, 100_000, 0}, {10_000, 0, 0}, {100_000, 0, 0}, {1_000, 0, 10_000},
	} {
		b.Run(fmt.Sprintf("live=%d/ended=%d/blocked=%d", c.live, c.ended, c.blocked), func(b *testing.B) {
			h := newHarness(b, func(cfg *Config) { cfg.Logger = hclog.NewNullLogger() })
			const workers = 100
			for i := range workers {
				h.worker(fmt.Sprintf("w%03d", i))
			}
			for i := range c.live {
				h.placed(fmt.Sprintf("live%d", i), fmt.Sprintf("w%03d", i%workers), 1, api.Running, nil)
			}
			for i := range c.ended {
				name, w := fmt.Sprintf("ended%d", i), fmt.Sprintf("w%03d", i%workers)
				t := h.placed(name, w, 1, api.Running, nil)
				h.seed(fsm.StopTask{ID: t.ID, Reason: "stopped on request"})
				h.observe(name, w, 1, api.Completed)
			}
			for i := range c.blocked { // Pending, fitting no worker
				h.submit(fmt.Sprintf("blocked%d", i), func(t *api.Task) { t.Memory = 1 << 50 })
			}
			h.pass() // the first pass records what it found
			b.ResetTimer()
			for b.Loop() {
				h.l.plan.fullEnd = time.Time{} // a full pass
				h.l.reconcile(h.ctx)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.live+c.blocked), "ns/task")
		})
	}
}

// BenchmarkLeaderPassOverChanges measures a pass over changes (passes.go)
// with 100,000 live tasks stored: `changed` of them reported again since
// the last pass, the rest untouched. Its cost follows the changes, where a
// full pass costs the 100,000 (BenchmarkLeaderPass).
//
//	go test -run '^$' -bench LeaderPassOverChanges -benchtime 200x -benchmem ./manager
func BenchmarkLeaderPassOverChanges(b *testing.B) {
	for _, changed := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("live=100000/changed=%d", changed), func(b *testing.B) {
			h := newHarness(b, func(cfg *Config) { cfg.Logger = hclog.NewNullLogger(); cfg.Tick = time.Hour })
			const workers, live = 100, 100_000
			for i := range workers {
				h.worker(fmt.Sprintf("w%03d", i))
			}
			ids := make([]api.Task, 0, changed)
			for i := range live {
				t := h.placed(fmt.Sprintf("live%d", i), fmt.Sprintf("w%03d", i%workers), 1, api.Running, nil)
				if i < changed {
					ids = append(ids, t)
				}
			}
			h.pass()
			h.changesPass()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				for i := range ids { // a new report of each: a change, nothing to decide
					ids[i].ContainerID += "+"
					if res := h.f.ApplyCommand(fsm.ReportTask{Task: ids[i], Time: time.Now()}); !res.Changed {
						b.Fatalf("report changed nothing: %v", res.Err)
					}
				}
				b.StartTimer()
				if h.l.reconcile(h.ctx) {
					b.Fatal("a full pass")
				}
			}
		})
	}
}

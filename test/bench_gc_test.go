//go:build bench

package test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
)

// The leader's pass with many ended tasks in the state (issue 13). Before,
// every pass copied and sorted every task ever submitted (0.33 s at 100,000
// ended tasks on this machine, on a 100 ms tick, and the pass that places a
// new task is one of them); now the FSM indexes the live tasks and the pass
// reads only those. Measured from outside on the real binaries: the time
// from a submission to the change that places the task (Scheduled, on a
// worker) as GET /events shows it, first on a fresh cluster, then on the
// same cluster after BENCH_GC_ENDED (100,000) tasks were submitted and
// stopped. Finished tasks stay in the state: the garbage-collection
// threshold (4 h) is far away.
//
// Alone: BENCH_ONLY=pass-0,pass-100k BENCH_SWARM=0 BENCH_INSECURE=0 make bench
// (BENCH_TRIALS sets the trials of each row; BENCH_GC_ENDED the fill).

func init() {
	benchMeasures = append(benchMeasures,
		benchMeasure{Key: "pass-0", Name: "leader's pass: task submitted → placed on a worker (Scheduled, seen on GET /events), no ended task in the state",
			Short: "submit → placed, 0 ended tasks", Anchor: "—", Goal: "—"},
		benchMeasure{Key: "pass-100k", Name: "the same with 100,000 ended tasks in the state (the pass reads only the live ones)",
			Short: "submit → placed, 100k ended tasks", Anchor: "before issue 13: +0.33 s per pass at 100k ended tasks",
			Goal: "as with none"},
	)
}

// cubeGC measures pass-0, fills the state with ended tasks, and measures
// pass-100k on the same cluster.
func (b *bench) cubeGC() {
	if !b.want("pass-0", "pass-100k") {
		return
	}
	c := b.newCluster()
	cl := benchClient(c, c.Managers, 10*time.Second, 30*time.Second)
	b.cubePlaced(c, cl, "pass-0")
	ended := benchEnvInt("BENCH_GC_ENDED", 100_000)
	b.fillEnded(cl, ended)
	b.settleSnapshots(c, time.Now())
	s := b.cubePlaced(c, cl, "pass-100k")
	s.Notes = append(s.Notes, fmt.Sprintf("%d ended tasks in the state", ended))
	b.copyLogs(c, "gc-"+b.sys)
	c.Close()
}

// settleSnapshots waits (up to 3 minutes) until every manager has written
// a raft snapshot after from: the fill leaves each a snapshot of the whole
// state to write, CPU the trials would otherwise share with it. The trials
// measure the pass, not the snapshot after a burst of 200,000 writes.
func (b *bench) settleSnapshots(c *ProcCluster, from time.Time) {
	deadline := time.Now().Add(3 * time.Minute)
	for _, m := range c.Managers {
		for {
			if _, ok := benchLogLine([]*Proc{m}, from, "snapshot complete"); ok {
				break
			}
			if time.Now().After(deadline) {
				fmt.Printf("bench: %s wrote no snapshot within 3 min of the fill; measuring anyway\n", m.Name)
				break
			}
			time.Sleep(time.Second)
		}
	}
	fmt.Printf("bench: snapshots after the fill written, %.0f s after it\n", time.Since(from).Seconds())
}

// cubePlaced runs b.n trials of one echo task submitted → placed, each task
// stopped once placed, and returns the series.
func (b *bench) cubePlaced(c *ProcCluster, cl *api.Client, key string) *benchSeries {
	s := b.series(key, b.sys)
	w := b.streamTasks(c, c.Managers[0], benchPlaced)
	defer w.close()
	var ids []uuid.UUID
	for i := 0; i < b.n; i++ {
		task := api.Task{ID: uuid.New(), Name: fmt.Sprintf("bench-%s-%d", key, i), Image: "cube-echo:latest", Cpu: 0.01}
		ids = append(ids, task.ID)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t0 := time.Now()
		_, _, err := cl.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: task})
		submitted := time.Now()
		cancel()
		if err != nil {
			b.t.Fatalf("%s trial %d: submit: %v", key, i+1, err)
		}
		at, ok := w.wait(task.ID, benchWait)
		if !ok {
			b.t.Fatalf("%s trial %d: task %s not placed within %s", key, i+1, task.ID, benchWait)
		}
		b.add(s, b.n, t0, at, map[string]float64{"committed": benchMs(submitted.Sub(t0))}, "")
		time.Sleep(100 * time.Millisecond) // a tick apart: each trial meets a pass of its own
	}
	b.stopAll(c, cl, ids)
	return s
}

// fillEnded submits n tasks that fit on no worker (cpu 1000) and stops each
// at once, from 64 clients: n ended (Completed) tasks, none ever placed.
func (b *bench) fillEnded(cl *api.Client, n int) {
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				id := uuid.New()
				_, _, err := cl.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: id, Name: "bench-ended", Image: "cube-echo:latest", Cpu: 1000}})
				if err == nil {
					_, err = cl.StopTask(ctx, id)
				}
				cancel()
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Second):
				fmt.Printf("bench fill: %d of %d tasks submitted and stopped, %.0f s\n", min(next.Load(), int64(n)), n, time.Since(start).Seconds())
			}
		}
	}()
	wg.Wait()
	close(done)
	if f := failed.Load(); f > int64(n)/100 {
		b.t.Fatalf("fill: %d of %d submissions or stops failed", f, n)
	}
	fmt.Printf("bench fill: %d ended tasks in %.0f s (%d failed)\n", n, time.Since(start).Seconds(), failed.Load())
}

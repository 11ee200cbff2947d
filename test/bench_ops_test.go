//go:build bench

package test

// The operations rows of the benchmark (issue 13): how long a backup and a
// restore of a large state take on a cluster of real binaries (3 managers,
// 3 workers, security on). Alone: BENCH_ONLY=ops BENCH_SWARM=0
// BENCH_INSECURE=0 BENCH_DIR=/tmp/cube-bench-ops (so the repository's
// RESULTS.md is not replaced by these rows only); BENCH_OPS_TASKS (100000)
// and BENCH_OPS_TRIALS (10) tune it.
//
// The state holds BENCH_OPS_TASKS ended tasks (submitted, then stopped
// before placement) beside the cluster's own workers and tokens: ended
// tasks are what a state grows by for months, and they give the leader's
// loop nothing to place, so each trial measures the operation, not a
// placement storm after it.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
)

func init() {
	n := benchEnvInt("BENCH_OPS_TASKS", 100000)
	benchMeasures = append(benchMeasures,
		benchMeasure{Key: "snapshot-save", Name: fmt.Sprintf("snapshot save at %dk tasks (`cube operator snapshot save`: barrier, raft snapshot, the file to the client)", n/1000),
			Short: fmt.Sprintf("snapshot save, %dk tasks", n/1000), Anchor: "—", Goal: "—"},
		benchMeasure{Key: "snapshot-restore", Name: fmt.Sprintf("snapshot restore at %dk tasks (`cube operator snapshot restore`: checked, installed on the leader, sent to both followers)", n/1000),
			Short: fmt.Sprintf("snapshot restore, %dk tasks", n/1000), Anchor: "—", Goal: "—"})
}

// cubeOps measures the snapshot rows on a cluster of its own.
func (b *bench) cubeOps() {
	if !b.want("ops", "snapshot-save", "snapshot-restore") {
		return
	}
	n := benchEnvInt("BENCH_OPS_TASKS", 100000)
	trials := benchEnvInt("BENCH_OPS_TRIALS", 10)
	c := b.newCluster()
	defer c.Close()
	cl := benchClient(c, c.Managers, 5*time.Minute, 30*time.Second)
	ctx := context.Background()

	// The state to restore: the cluster's own (workers, tokens) plus n
	// ended tasks, built in this process through the FSM's commands.
	own, err := cl.SaveSnapshot(ctx)
	if err != nil {
		b.t.Fatalf("ops: save the cluster's state: %v", err)
	}
	file, err := benchOpsFile(own, n)
	if err != nil {
		b.t.Fatalf("ops: build a state of %d tasks: %v", n, err)
	}
	fmt.Printf("bench ops: a snapshot file of %d tasks, %.1f MiB\n", n, float64(len(file))/(1<<20))

	restore, save := b.series("snapshot-restore", b.sys), b.series("snapshot-save", b.sys)
	for range trials {
		t0 := time.Now()
		info, err := cl.RestoreSnapshot(ctx, file)
		end := time.Now()
		if err != nil || info.Tasks != n {
			b.t.Fatalf("ops: restore: %+v, %v", info, err)
		}
		b.add(restore, trials, t0, end, nil, fmt.Sprintf("%.1f MiB", float64(len(file))/(1<<20)))
	}
	for i := range trials {
		// One write first, so that raft has something new to snapshot and
		// each trial takes a snapshot rather than reading the last one.
		if _, err := cl.CreateToken(ctx, api.TokenRequest{Name: fmt.Sprintf("bench-ops-%d", i), Role: api.RoleRead}); err != nil {
			b.t.Fatalf("ops: create a token: %v", err)
		}
		t0 := time.Now()
		got, err := cl.SaveSnapshot(ctx)
		end := time.Now()
		if err != nil {
			b.t.Fatalf("ops: save: %v", err)
		}
		info, _, err := fsm.DecodeSnapshotFile(bytes.NewReader(got))
		if err != nil || info.Tasks != n {
			b.t.Fatalf("ops: the saved snapshot: %+v, %v; want %d tasks", info, err, n)
		}
		b.add(save, trials, t0, end, nil, fmt.Sprintf("%.1f MiB", float64(len(got))/(1<<20)))
	}
	b.copyLogs(c, "ops-"+b.sys)
}

// benchOpsFile returns a snapshot file of own's state plus n ended tasks.
func benchOpsFile(own []byte, n int) ([]byte, error) {
	_, state, err := fsm.DecodeSnapshotFile(bytes.NewReader(own))
	if err != nil {
		return nil, err
	}
	f := fsm.New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(state))); err != nil {
		return nil, err
	}
	t0 := time.Now().UTC()
	for i := range n {
		task := api.Task{ID: uuid.New(), Name: fmt.Sprintf("bench-ops-%d", i), Image: "cube-echo:latest",
			ExposedPorts: api.PortSet{"7777/tcp": {}}, HealthCheck: "/health", Memory: 32 << 20, Cpu: 0.1,
			Env: []string{"GREETING=hello", "MODE=bench"}}
		if res := f.ApplyCommand(fsm.SubmitTask{Task: task, Time: t0}); res.Err != nil {
			return nil, res.Err
		}
		if res := f.ApplyCommand(fsm.StopTask{ID: task.ID, Time: t0.Add(time.Second), Reason: "stopped on request"}); res.Err != nil {
			return nil, res.Err
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		return nil, err
	}
	var sink benchSink
	if err := snap.Persist(&sink); err != nil {
		return nil, err
	}
	file, _, err := fsm.EncodeSnapshotFile(sink.Bytes(), 1, 1, time.Now())
	return file, err
}

// benchSink collects a persisted FSM snapshot in memory.
type benchSink struct{ bytes.Buffer }

func (s *benchSink) ID() string    { return "bench" }
func (s *benchSink) Cancel() error { return nil }
func (s *benchSink) Close() error  { return nil }

var _ raft.SnapshotSink = (*benchSink)(nil)

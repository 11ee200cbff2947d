package manager

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/hashicorp/go-hclog"
)

// snapshotRaft is what backup and restore need from raft; *cluster.Raft
// implements it.
type snapshotRaft interface {
	SaveSnapshot(ctx context.Context) (cluster.SnapshotMeta, []byte, error)
	RestoreSnapshot(ctx context.Context, state []byte) error
}

// snapshots serves the snapshot routes (api.SnapshotService): it turns
// raft's snapshots into snapshot files and back.
type snapshots struct {
	raft snapshotRaft
	mgr  *Manager
	log  hclog.Logger
}

var _ api.SnapshotService = (*snapshots)(nil)

// SaveSnapshot returns the leader's snapshot of the state as a snapshot file.
func (s *snapshots) SaveSnapshot(ctx context.Context) ([]byte, error) {
	start := time.Now()
	meta, state, err := s.raft.SaveSnapshot(ctx)
	if err != nil {
		return nil, s.mgr.clusterError("save snapshot", err)
	}
	file, info, err := fsm.EncodeSnapshotFile(state, meta.Index, meta.Term, time.Now())
	if err != nil {
		return nil, err
	}
	s.log.Info("snapshot saved", "index", info.Index, "term", info.Term, "bytes", len(file),
		"tasks", info.Tasks, "workers", info.Workers, "tokens", info.Tokens, "took", time.Since(start))
	return file, nil
}

// RestoreSnapshot checks file whole, then replaces the cluster's state with
// its state through raft (every manager installs it). A damaged or too new
// file is refused (400) before raft is touched: raft cannot undo a restore
// that the FSM then fails to read.
//
// A restored state may name workers this cluster has never seen (a backup
// of another cluster, or of machines since replaced). Gossip never reports
// on a node it does not know, so the leader would wait for ever on tasks
// placed there; such workers are recorded dead at once, and their tasks are
// probed and placed again like those of any lost worker.
func (s *snapshots) RestoreSnapshot(ctx context.Context, file []byte) (api.SnapshotInfo, error) {
	start := time.Now()
	info, state, err := fsm.DecodeSnapshotFile(bytes.NewReader(file))
	if err != nil {
		return info, &api.ValidationError{Msg: err.Error()}
	}
	if err := s.raft.RestoreSnapshot(ctx, state); err != nil {
		return info, s.mgr.clusterError("restore snapshot", err)
	}
	s.log.Warn("snapshot restored: the replicated state was replaced", "index", info.Index, "term", info.Term,
		"tasks", info.Tasks, "workers", info.Workers, "tokens", info.Tokens, "created", info.Created, "took", time.Since(start))
	if err := s.mgr.forgetUnknownWorkers(ctx); err != nil {
		// The state is restored; the leader loop's own checks go on.
		s.log.Warn("record workers unknown to gossip after a restore", "error", err)
	}
	return info, nil
}

// forgetUnknownWorkers records dead every worker the state holds as alive or
// suspect that this manager's gossip pool has never seen.
func (m *Manager) forgetUnknownWorkers(ctx context.Context) error {
	seen := make(map[string]bool)
	for _, mem := range m.gossip.Members() {
		if mem.Meta.Role == cluster.RoleWorker {
			seen[mem.Name] = true
		}
	}
	var errs []error
	for _, n := range m.fsm.Nodes() {
		if seen[n.Name] || n.State == api.NodeDead || n.State == api.NodeLeft {
			continue
		}
		n.AllocatedCpu, n.AllocatedMemory, n.AllocatedDisk, n.TaskCount, n.ServiceTasks = 0, 0, 0, 0, nil
		n.State, n.Since = api.NodeDead, time.Now().UTC()
		if _, err := m.apply(ctx, fsm.UpsertWorker{Node: n}); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Warn("worker of the restored state is unknown to this cluster; recorded dead", "worker", n.Name)
	}
	return errors.Join(errs...)
}

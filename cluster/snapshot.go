package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// restoreEnqueueTimeout bounds the hand-over of a restore to raft when the
// caller's context has no deadline.
const restoreEnqueueTimeout = time.Minute

// Snapshot asks raft to take a snapshot now and waits for it, so that the log
// can be compacted and a server that joins later is sent the snapshot instead
// of the whole log. Raft also snapshots on its own (SnapshotInterval,
// SnapshotThreshold); operators and tests use this to force one.
func (r *Raft) Snapshot() error {
	if err := r.checkOpen(); err != nil {
		return err
	}
	return r.raft.Snapshot().Error()
}

// SnapshotMeta describes a snapshot of the replicated state.
type SnapshotMeta struct {
	// Index and Term are those of the last log entry the state includes.
	Index uint64
	Term  uint64
}

// SaveSnapshot returns the replicated state as of now, as the FSM persists
// it (raft's snapshot payload), and the index and term it reflects. Leader
// only (ErrNotLeader elsewhere): a barrier first makes sure the FSM has
// applied every entry committed before the call, so the snapshot holds
// every write acknowledged before it (a follower's could be behind). It is
// raft's own snapshot (taken now, or the latest if nothing was applied
// since), so it costs what raft's periodic snapshots cost and compacts the
// log as they do.
func (r *Raft) SaveSnapshot(ctx context.Context) (SnapshotMeta, []byte, error) {
	if err := r.checkLeader(); err != nil {
		return SnapshotMeta{}, nil, err
	}
	if err := r.fence(ctx, "snapshot barrier"); err != nil {
		return SnapshotMeta{}, nil, err
	}
	f := r.raft.Snapshot()
	var (
		meta *raft.SnapshotMeta
		rc   io.ReadCloser
		err  error
	)
	switch werr := r.wait(ctx, f); {
	case errors.Is(werr, raft.ErrNothingNewToSnapshot):
		meta, rc, err = r.openLatestSnapshot()
	case werr != nil:
		return SnapshotMeta{}, nil, r.futureErr("snapshot", werr)
	default:
		meta, rc, err = f.Open()
	}
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("open snapshot: %w", err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("read snapshot %s: %w", meta.ID, err)
	}
	return SnapshotMeta{Index: meta.Index, Term: meta.Term}, buf.Bytes(), nil
}

// openLatestSnapshot opens the newest snapshot of the store: raft took no new
// one because the FSM applied nothing since, so the newest is current.
func (r *Raft) openLatestSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	list, err := r.snaps.List()
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		return nil, nil, errors.New("raft took no snapshot and the store holds none")
	}
	return r.snaps.Open(list[0].ID)
}

// RestoreSnapshot replaces the replicated state of the whole cluster with
// state (an FSM snapshot payload, as SaveSnapshot returns it), through
// raft's user restore: the leader installs it as a snapshot at an index
// past its log and every follower is sent it. Leader only. raft panics if
// the FSM then fails to restore it, so the caller must have checked that
// the FSM reads state (a scratch FSM's Restore) before calling.
func (r *Raft) RestoreSnapshot(ctx context.Context, state []byte) error {
	if err := r.checkLeader(); err != nil {
		return err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(state))}
	done := make(chan error, 1)
	r.waitMu.Lock()
	if r.noWaiters {
		r.waitMu.Unlock()
		return ErrShutdown
	}
	r.waiters.Add(1)
	r.waitMu.Unlock()
	// raft's Restore blocks until the state is installed and a no-op entry
	// after it is committed; it has no future to wait on under ctx. Its
	// timeout bounds only the hand-over to raft's loop, which may be busy
	// (a snapshot of a large state in progress): an operator's restore
	// waits for it as long as ctx allows, not ApplyTimeout.
	enqueue := restoreEnqueueTimeout
	if d, ok := ctx.Deadline(); ok {
		enqueue = max(time.Until(d), time.Millisecond)
	}
	go func() {
		defer r.waiters.Done()
		done <- r.raft.Restore(meta, bytes.NewReader(state), enqueue)
	}()
	select {
	case err := <-done:
		if err != nil {
			return r.futureErr("restore snapshot", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restore snapshot: %w: %w", ErrUnknownOutcome, ctx.Err())
	case <-r.stopCh:
		return fmt.Errorf("restore snapshot: %w: %w", ErrUnknownOutcome, ErrShutdown)
	}
}

package cluster

import (
	"time"
)

// StateSizer is implemented by an FSM that can tell how large its state
// is, in items of about one log entry each (fsm.FSM: the tasks stored).
// With it, a snapshot is taken after at least as many new log entries as
// the state holds items (and at least RaftConfig.SnapshotThreshold): a
// snapshot costs time in proportion to the state (1.7 s to write 100,000
// tasks), so a fixed threshold of 1,024 entries (the fast profile) made
// every manager write its whole state every few seconds under load, for a
// few kilobytes of log each time (bench/scale/SCALE.md). Proportional,
// each entry pays a constant share of the snapshots, and a restart
// replays at most about one state's worth of entries past the last
// snapshot.
type StateSizer interface {
	StateSize() int
}

// snapshotThresholdCheck is how often the threshold follows the state.
const snapshotThresholdCheck = 2 * time.Second

// snapshotThreshold is the threshold for a state of size items.
func snapshotThreshold(base uint64, size int) uint64 {
	return max(base, uint64(max(size, 0)))
}

// followStateSize keeps raft's SnapshotThreshold at snapshotThreshold of
// the FSM's size, until Shutdown.
func (r *Raft) followStateSize(s StateSizer) {
	defer r.wg.Done()
	t := time.NewTicker(snapshotThresholdCheck)
	defer t.Stop()
	for {
		r.adjustSnapshotThreshold(s)
		select {
		case <-r.stopCh:
			return
		case <-t.C:
		}
	}
}

// adjustSnapshotThreshold sets raft's SnapshotThreshold for the state's
// current size, if it changed by more than a tenth (ReloadConfig takes
// raft's config lock; no need to follow every task).
func (r *Raft) adjustSnapshotThreshold(s StateSizer) {
	want := snapshotThreshold(r.cfg.SnapshotThreshold, s.StateSize())
	rc := r.raft.ReloadableConfig()
	have := rc.SnapshotThreshold
	if diff := max(want, have) - min(want, have); diff == 0 || (diff < have/10 && want != r.cfg.SnapshotThreshold) {
		return
	}
	rc.SnapshotThreshold = want
	if err := r.raft.ReloadConfig(rc); err != nil {
		r.log.Warn("could not set the snapshot threshold", "threshold", want, "error", err)
		return
	}
	r.log.Debug("snapshot threshold follows the state's size", "entries", want)
}

// SnapshotThreshold is raft's current snapshot threshold, in log entries.
func (r *Raft) SnapshotThreshold() uint64 { return r.raft.ReloadableConfig().SnapshotThreshold }

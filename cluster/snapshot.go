package cluster

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

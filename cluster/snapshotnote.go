package cluster

import (
	"io"

	"github.com/hashicorp/raft"
)

// SnapshotNoter is implemented by an FSM that wants to know the raft index
// of a snapshot before it restores it: raft's FSM.Restore gets only the
// bytes, and a state carries no index of its own (a backup restored into a
// cluster lands at a new one). fsm.FSM is one: its change feed vouches for
// the changes after that index only (GET /events?after=).
type SnapshotNoter interface {
	RestoringSnapshot(index uint64)
}

// notingSnapshots is raft's snapshot store, telling the FSM the index of
// every snapshot opened. raft opens a snapshot right before each restore:
// at start-up, when it installs the leader's, and when an operator
// restores a backup. A backup being read (SaveSnapshot) is noted too, which
// is harmless: the FSM keeps the highest index noted before a restore, and
// a backup's index is at most what this FSM had applied, below that of any
// snapshot it restores later.
type notingSnapshots struct {
	raft.SnapshotStore
	note func(index uint64)
}

// Open opens the snapshot and notes its index.
func (s notingSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err == nil {
		s.note(meta.Index)
	}
	return meta, rc, err
}

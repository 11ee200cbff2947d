package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

// SaveSnapshot on the leader holds every applied entry (also when raft has
// nothing new to snapshot), is refused on a follower, and RestoreSnapshot
// puts that state back on every server, after which writes go on.
func TestRaft_SaveRestoreSnapshot(t *testing.T) {
	c := newTestCluster(t, 3, steadyTimings)
	saved := items("a", 0, 20)
	c.apply(saved...)
	ctx := context.Background()

	var meta SnapshotMeta
	var state []byte
	c.onLeader("save", func(l *testNode) error {
		for _, f := range c.followers(l) {
			if _, _, err := f.r.SaveSnapshot(ctx); !errors.Is(err, ErrNotLeader) {
				t.Errorf("SaveSnapshot on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
			}
		}
		var err error
		meta, state, err = l.r.SaveSnapshot(ctx)
		return err
	})
	var got []string
	if err := json.Unmarshal(state, &got); err != nil || !slices.Equal(got, saved) {
		t.Fatalf("saved state = %q (%v), want %q", state, err, saved)
	}
	if meta.Index == 0 || meta.Term == 0 {
		t.Errorf("meta = %+v, want an index and term", meta)
	}
	// Nothing applied since: raft has nothing new to snapshot, and the
	// latest snapshot is returned.
	c.onLeader("save again", func(l *testNode) error {
		m2, s2, err := l.r.SaveSnapshot(ctx)
		if err == nil && (!slices.Equal(s2, state) || m2.Index < meta.Index) {
			t.Errorf("second save = %+v %q, want the same state at index >= %d", m2, s2, meta.Index)
		}
		return err
	})

	c.apply(items("b", 0, 5)...)
	var before uint64 // the index of the last entry applied before the restore
	c.onLeader("restore", func(l *testNode) error {
		before = l.r.AppliedIndex()
		for _, f := range c.followers(l) {
			if err := f.r.RestoreSnapshot(ctx, state); !errors.Is(err, ErrNotLeader) {
				t.Errorf("RestoreSnapshot on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
			}
		}
		return l.r.RestoreSnapshot(ctx, state)
	})
	c.waitItems(saved, c.running()...)
	// Every server's FSM was told the index of the snapshot it restored
	// (SnapshotNoter): the same one, past the log of before.
	var restoredAt uint64
	for _, n := range c.running() {
		at := n.fsm.RestoredAt()
		if len(at) == 0 || at[len(at)-1] <= before || restoredAt != 0 && at[len(at)-1] != restoredAt {
			t.Fatalf("%s restored at noted indexes %v; want the restore's index, past %d, the same everywhere", n.cfg.ID, at, before)
		}
		restoredAt = at[len(at)-1]
	}
	c.apply("after")
	c.waitItems(append(slices.Clone(saved), "after"), c.running()...)

	// A server restarted after the restore comes back with the restored state.
	n := c.followers(c.leader(10 * time.Second))[0]
	c.stop(n)
	c.start(n)
	c.waitItems(append(slices.Clone(saved), "after"), n)
	if at := n.fsm.RestoredAt(); len(at) != 1 || at[0] < restoredAt {
		t.Fatalf("%s restarted and restored at noted indexes %v; want its latest snapshot's, at least %d", n.cfg.ID, at, restoredAt)
	}
}

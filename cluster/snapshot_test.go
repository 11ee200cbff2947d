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
	c.onLeader("restore", func(l *testNode) error {
		for _, f := range c.followers(l) {
			if err := f.r.RestoreSnapshot(ctx, state); !errors.Is(err, ErrNotLeader) {
				t.Errorf("RestoreSnapshot on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
			}
		}
		return l.r.RestoreSnapshot(ctx, state)
	})
	c.waitItems(saved, c.running()...)
	c.apply("after")
	c.waitItems(append(slices.Clone(saved), "after"), c.running()...)

	// A server restarted after the restore comes back with the restored state.
	n := c.followers(c.leader(10 * time.Second))[0]
	c.stop(n)
	c.start(n)
	c.waitItems(append(slices.Clone(saved), "after"), n)
}

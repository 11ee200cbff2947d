package cluster

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
)

// sizedFSM is a listFSM that says how large its state is.
type sizedFSM struct {
	*listFSM
	size atomic.Int64
}

func (f *sizedFSM) StateSize() int { return int(f.size.Load()) }

func TestSnapshotThreshold_AtLeastTheStateSize(t *testing.T) {
	for _, c := range []struct {
		base uint64
		size int
		want uint64
	}{{1024, 0, 1024}, {1024, 1000, 1024}, {1024, 100_000, 100_000}, {8192, -1, 8192}} {
		if got := snapshotThreshold(c.base, c.size); got != c.want {
			t.Errorf("snapshotThreshold(%d, %d) = %d, want %d", c.base, c.size, got, c.want)
		}
	}
}

// A real raft server whose FSM is a StateSizer: its snapshot threshold
// follows the state up past the configured one and back down to it, and
// ignores changes of less than a tenth.
func TestRaft_SnapshotThresholdFollowsTheStateSize(t *testing.T) {
	cfg := FastRaftConfig()
	cfg.ID, cfg.BindAddr, cfg.DataDir = "m1", testkit.FreeAddr(t), filepath.Join(t.TempDir(), "m1")
	cfg.Peers = []Peer{{ID: "m1", Addr: cfg.BindAddr}}
	cfg.Logger = testkit.Logger(t, "m1")
	fsm := &sizedFSM{listFSM: &listFSM{}}
	r, err := NewRaft(cfg, fsm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	base := cfg.SnapshotThreshold
	if got := r.SnapshotThreshold(); got != base {
		t.Fatalf("threshold %d at start, want the configured %d", got, base)
	}
	wait := func(want uint64) {
		t.Helper()
		testkit.Eventually(t, 10*time.Second, func() error {
			if got := r.SnapshotThreshold(); got != want {
				return fmt.Errorf("threshold %d with a state of %d, want %d", got, fsm.size.Load(), want)
			}
			return nil
		})
	}
	fsm.size.Store(int64(base) * 50)
	wait(base * 50)
	fsm.size.Store(int64(base)*50 + int64(base)) // 2 %: not worth a reload
	time.Sleep(2 * snapshotThresholdCheck)
	if got := r.SnapshotThreshold(); got != base*50 {
		t.Errorf("threshold %d after a change of 2 %%, want it left at %d", got, base*50)
	}
	fsm.size.Store(10)
	wait(base)
}

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listFSM is a tiny FSM for tests: an append-only list of strings.
type listFSM struct {
	mu       sync.Mutex
	items    []string
	restores int
	// noted is the index RestoringSnapshot gave since the last Restore;
	// restoredAt the noted index of each Restore (0: none).
	noted      uint64
	restoredAt []uint64
}

var (
	_ raft.FSM      = (*listFSM)(nil)
	_ SnapshotNoter = (*listFSM)(nil)
)

// RestoringSnapshot records the index of the snapshot raft opens.
func (f *listFSM) RestoringSnapshot(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noted = index
}

// RestoredAt returns the index noted before each Restore.
func (f *listFSM) RestoredAt() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.restoredAt)
}

// Apply appends the command and returns the new length.
func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = append(f.items, string(l.Data))
	return len(f.items)
}

// Snapshot copies the list.
func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.items)), nil
}

// Restore replaces the list.
func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var items []string
	if err := json.NewDecoder(rc).Decode(&items); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = items
	f.restores++
	f.restoredAt = append(f.restoredAt, f.noted)
	f.noted = 0
	return nil
}

// Items returns a copy of the list.
func (f *listFSM) Items() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.items)
}

// Restores returns how many times Restore ran.
func (f *listFSM) Restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// listSnapshot is a listFSM snapshot.
type listSnapshot []string

// Persist writes the list as JSON.
func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release does nothing.
func (s listSnapshot) Release() {}

// testNode is one raft server of a test cluster.
type testNode struct {
	cfg RaftConfig
	fsm *listFSM
	r   *Raft // nil while stopped
}

// testCluster is a set of raft servers on 127.0.0.1 with data in
// t.TempDir(), shut down at the end of the test.
type testCluster struct {
	t      *testing.T
	log    hclog.Logger
	nodes  []*testNode
	mutate func(*RaftConfig)
}

// newTestCluster starts n servers bootstrapped with the same Peers list.
// mutate, if not nil, adjusts each config.
func newTestCluster(t *testing.T, n int, mutate func(*RaftConfig)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, log: testkit.Logger(t, "test"), mutate: mutate}
	t.Cleanup(c.shutdownAll)
	var peers []Peer
	for i := range n {
		peers = append(peers, Peer{ID: fmt.Sprintf("m%d", i+1), Addr: testkit.FreeAddr(t)})
	}
	for _, p := range peers {
		cfg := c.config(p.ID, p.Addr)
		cfg.Peers = peers
		c.nodes = append(c.nodes, &testNode{cfg: cfg})
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	return c
}

// config returns a FastRaftConfig for server id at addr.
func (c *testCluster) config(id, addr string) RaftConfig {
	cfg := FastRaftConfig()
	cfg.ID = id
	cfg.BindAddr = addr
	cfg.DataDir = filepath.Join(c.t.TempDir(), id)
	cfg.Logger = c.log.Named(id)
	if c.mutate != nil {
		c.mutate(&cfg)
	}
	return cfg
}

// start (re)starts n with its config and a fresh FSM.
func (c *testCluster) start(n *testNode) {
	c.t.Helper()
	n.fsm = &listFSM{}
	r, err := NewRaft(n.cfg, n.fsm)
	if err != nil {
		c.t.Fatalf("start %s: %v", n.cfg.ID, err)
	}
	n.r = r
	n.cfg.BindAddr = r.Addr() // a joiner bound to port 0 restarts on the same port
}

// stop shuts n down.
func (c *testCluster) stop(n *testNode) {
	c.t.Helper()
	if err := n.r.Shutdown(); err != nil {
		c.t.Errorf("shut down %s: %v", n.cfg.ID, err)
	}
	n.r = nil
}

// shutdownAll stops every running server.
func (c *testCluster) shutdownAll() {
	for _, n := range c.nodes {
		if n.r != nil {
			c.stop(n)
		}
	}
}

// add starts a server that is not bootstrapped (empty Peers), bound to a
// port of its choosing, to be joined.
func (c *testCluster) add(id string) *testNode {
	c.t.Helper()
	n := &testNode{cfg: c.config(id, "127.0.0.1:0")}
	c.nodes = append(c.nodes, n)
	c.start(n)
	return n
}

// running returns the running servers.
func (c *testCluster) running() []*testNode {
	var out []*testNode
	for _, n := range c.nodes {
		if n.r != nil {
			out = append(out, n)
		}
	}
	return out
}

// leader waits until exactly one running server is leader and returns it.
func (c *testCluster) leader(timeout time.Duration) *testNode {
	c.t.Helper()
	var l *testNode
	testkit.WaitFor(c.t, timeout, "exactly one leader", func() bool {
		l = nil
		count := 0
		for _, n := range c.running() {
			if n.r.IsLeader() {
				l = n
				count++
			}
		}
		return count == 1
	})
	return l
}

// followers returns the running servers other than l.
func (c *testCluster) followers(l *testNode) []*testNode {
	var out []*testNode
	for _, n := range c.running() {
		if n != l {
			out = append(out, n)
		}
	}
	return out
}

// apply applies each command on the current leader, moving to a new
// leader if leadership changes (ErrNotLeader means nothing was written).
func (c *testCluster) apply(cmds ...string) {
	c.t.Helper()
	for _, cmd := range cmds {
		c.onLeader("apply "+cmd, func(l *testNode) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := l.r.Apply(ctx, []byte(cmd))
			return err
		})
	}
}

// onLeader runs fn on the current leader, again on the next leader while
// it returns ErrNotLeader, and fails the test on any other error.
// Leadership can move on a loaded machine; tests of the outcome should not
// fail for that.
func (c *testCluster) onLeader(what string, fn func(l *testNode) error) {
	c.t.Helper()
	c.retryOnLeader(what, fn, false)
}

// onLeaderIdempotent is onLeader for an operation that may be done twice
// (a membership change, a barrier): it is also tried again when leadership
// was lost before the outcome was known (ErrUnknownOutcome).
func (c *testCluster) onLeaderIdempotent(what string, fn func(l *testNode) error) {
	c.t.Helper()
	c.retryOnLeader(what, fn, true)
}

func (c *testCluster) retryOnLeader(what string, fn func(l *testNode) error, idempotent bool) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l := c.leader(10 * time.Second)
		err := fn(l)
		if err == nil {
			return
		}
		again := errors.Is(err, ErrNotLeader) || (idempotent && errors.Is(err, ErrUnknownOutcome))
		if !again || time.Now().After(deadline) {
			c.t.Fatalf("%s on leader %s: %v", what, l.cfg.ID, err)
		}
	}
}

// snapshotAll forces a snapshot on every running server, so whichever
// leads has compacted its log. raft refuses to snapshot until the FSM has
// applied an entry past the latest configuration change, which a
// configuration change alone never is: a Barrier provides one, and each
// server is retried until it has applied it.
func (c *testCluster) snapshotAll() {
	c.t.Helper()
	c.onLeaderIdempotent("barrier", func(l *testNode) error { return l.r.Barrier(context.Background()) })
	for _, n := range c.running() {
		var err error
		testkit.WaitFor(c.t, 10*time.Second, "a snapshot on "+n.cfg.ID, func() bool {
			err = n.r.Snapshot()
			return err == nil
		})
	}
}

// waitItems waits until every node in ns has exactly want in its FSM.
func (c *testCluster) waitItems(want []string, ns ...*testNode) {
	c.t.Helper()
	for _, n := range ns {
		testkit.WaitFor(c.t, 10*time.Second, fmt.Sprintf("%s to hold %d items", n.cfg.ID, len(want)), func() bool {
			return slices.Equal(n.fsm.Items(), want)
		})
	}
}

// waitLeaderChange waits for a true on n's LeaderChanges, skipping falses.
func waitLeaderChange(t *testing.T, n *testNode, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case v := <-n.r.LeaderChanges():
			if v {
				return
			}
		case <-deadline:
			t.Fatalf("%s: no true on LeaderChanges within %s", n.cfg.ID, timeout)
		}
	}
}

func items(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestRaft_ThreeNodes(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader(10 * time.Second)
	waitLeaderChange(t, l, 5*time.Second)
	ctx := context.Background()

	for i, cmd := range []string{"a", "b", "c"} {
		resp, err := l.r.Apply(ctx, []byte(cmd))
		if err != nil {
			t.Fatalf("Apply(%q) on leader: %v", cmd, err)
		}
		if resp != i+1 {
			t.Errorf("Apply(%q) response = %v, want %d", cmd, resp, i+1)
		}
	}
	c.waitItems([]string{"a", "b", "c"}, c.nodes...)

	for _, f := range c.followers(l) {
		if _, err := f.r.Apply(ctx, []byte("x")); !errors.Is(err, ErrNotLeader) {
			t.Errorf("Apply on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
		}
		if err := f.r.ConsistentRead(ctx); !errors.Is(err, ErrNotLeader) {
			t.Errorf("ConsistentRead on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
		}
		if err := f.r.Barrier(ctx); !errors.Is(err, ErrNotLeader) {
			t.Errorf("Barrier on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
		}
		if got := f.r.State(); got != "follower" {
			t.Errorf("%s State() = %q, want follower", f.cfg.ID, got)
		}
		testkit.WaitFor(t, 5*time.Second, f.cfg.ID+" to know the leader", func() bool {
			id, addr := f.r.Leader()
			return id == l.cfg.ID && addr == l.r.Addr()
		})
	}
	if err := l.r.ConsistentRead(ctx); err != nil {
		t.Errorf("ConsistentRead on leader: %v", err)
	}
	if got := l.r.State(); got != "leader" {
		t.Errorf("leader State() = %q", got)
	}
	if l.r.Term() == 0 || l.r.LastIndex() < 4 || l.r.AppliedIndex() < 4 {
		t.Errorf("leader Term %d LastIndex %d AppliedIndex %d, want > 0, >= 4, >= 4", l.r.Term(), l.r.LastIndex(), l.r.AppliedIndex())
	}

	servers, err := l.r.Servers(ctx)
	if err != nil {
		t.Fatalf("Servers: %v", err)
	}
	var want []Server
	for _, n := range c.nodes {
		want = append(want, Server{ID: n.cfg.ID, Addr: n.r.Addr(), Voter: true, Leader: n == l})
	}
	if !slices.Equal(servers, want) {
		t.Errorf("Servers() = %+v, want %+v", servers, want)
	}

	// Cut the leader off from its quorum: a write in flight has an unknown
	// outcome or is refused, and the leader steps down within its lease.
	for _, f := range c.followers(l) {
		c.stop(f)
	}
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = l.r.Apply(ctx2, []byte("lost"))
	if !errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrNotLeader) {
		t.Errorf("Apply without quorum: err = %v, want ErrUnknownOutcome or ErrNotLeader", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the isolated leader to step down", func() bool { return !l.r.IsLeader() })
}

func TestRaft_FailoverAndRestart(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	want := items("e", 0, 10)
	c.apply(want...)
	var l *testNode

	const tries = 5
	var elect, write []time.Duration
	for try := range tries {
		l = c.leader(10 * time.Second)
		c.waitItems(want, c.nodes...)
		killed := l
		start := time.Now()
		c.stop(killed)

		nl := c.leader(10 * time.Second)
		elect = append(elect, time.Since(start))
		cmd := fmt.Sprintf("after-kill-%d", try)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := nl.r.Apply(ctx, []byte(cmd))
			cancel()
			if err == nil {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("no write accepted 10s after killing the leader: %v", err)
			}
			nl = c.leader(10 * time.Second)
		}
		write = append(write, time.Since(start))
		want = append(want, cmd)
		t.Logf("try %d: killed %s; %s leads after %s, writes accepted after %s",
			try, killed.cfg.ID, nl.cfg.ID, elect[len(elect)-1].Round(time.Millisecond), write[len(write)-1].Round(time.Millisecond))

		waitLeaderChange(t, nl, 5*time.Second)
		c.waitItems(want, c.running()...)

		// The killed server comes back on its data dir and address, does
		// not bootstrap again, and catches up.
		c.start(killed)
		if killed.r.bootstrapped {
			t.Fatalf("%s bootstrapped again on restart", killed.cfg.ID)
		}
		c.waitItems(want, killed)
	}
	em, ex := durationStats(elect)
	wm, wx := durationStats(write)
	t.Logf("FastRaftConfig failover over %d tries: new leader median %s max %s; writes accepted median %s max %s",
		tries, em.Round(time.Millisecond), ex.Round(time.Millisecond), wm.Round(time.Millisecond), wx.Round(time.Millisecond))
}

func TestRaft_JoinRemoveSnapshot(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *RaftConfig) {
		cfg.TrailingLogs = 2
		cfg.SnapshotThreshold = 1 << 30 // snapshots only when forced
		cfg.SnapshotInterval = time.Hour
	})
	want := items("j", 0, 5)
	c.apply(want...)
	ctx := context.Background()

	n4 := c.add("m4")
	l := c.leader(10 * time.Second)
	for _, f := range c.followers(l) {
		if f == n4 || f.r.IsLeader() {
			continue
		}
		if err := f.r.Join(ctx, n4.cfg.ID, n4.r.Addr(), c.live()); !errors.Is(err, ErrNotLeader) {
			t.Errorf("Join on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
		}
		if err := f.r.Remove(ctx, n4.cfg.ID, c.live()); !errors.Is(err, ErrNotLeader) {
			t.Errorf("Remove on follower %s: err = %v, want ErrNotLeader", f.cfg.ID, err)
		}
	}
	c.onLeaderIdempotent("join m4", func(l *testNode) error { return l.r.Join(ctx, n4.cfg.ID, n4.r.Addr(), c.live()) })
	c.waitItems(want, n4)
	c.onLeader("join m4 again", func(l *testNode) error {
		last := l.r.LastIndex()
		if err := l.r.Join(ctx, n4.cfg.ID, n4.r.Addr(), c.live()); err != nil {
			return err
		}
		if got := l.r.LastIndex(); got != last {
			t.Errorf("second Join wrote to the log: LastIndex %d -> %d", last, got)
		}
		return nil
	})
	c.assertSuffrage(map[string]bool{"m1": true, "m2": true, "m3": true, "m4": false})
	c.onLeaderIdempotent("promote m4", func(l *testNode) error { return l.r.Promote(ctx, n4.cfg.ID, n4.r.Addr()) })
	c.assertServers("m1", "m2", "m3", "m4")

	// Snapshot, then write more than TrailingLogs and snapshot again: the
	// log no longer starts at 1, so a server joined now must install the
	// snapshot.
	c.snapshotAll()
	more := items("s", 0, 10)
	c.apply(more...)
	want = append(want, more...)
	c.waitItems(want, c.running()...)
	c.snapshotAll()

	n5 := c.add("m5")
	c.onLeaderIdempotent("join m5", func(l *testNode) error { return l.r.Join(ctx, n5.cfg.ID, n5.r.Addr(), c.live()) })
	c.waitItems(want, n5)
	if n5.fsm.Restores() == 0 {
		t.Errorf("m5 caught up without restoring a snapshot")
	}
	c.onLeaderIdempotent("promote m5", func(l *testNode) error { return l.r.Promote(ctx, n5.cfg.ID, n5.r.Addr()) })
	c.assertServers("m1", "m2", "m3", "m4", "m5")

	c.onLeader("remove m5", func(l *testNode) error { return l.r.Remove(ctx, "m5", c.live()) })
	c.assertServers("m1", "m2", "m3", "m4")
	c.onLeader("remove m5 again", func(l *testNode) error { return l.r.Remove(ctx, "m5", c.live()) })
	c.stop(n5)

	// A server that comes back on another address replaces its old entry
	// (the entry at the old address is not live: nothing answers there).
	c.stop(n4)
	n4.cfg.BindAddr = "127.0.0.1:0"
	c.start(n4)
	c.onLeaderIdempotent("re-join m4 at a new address", func(l *testNode) error { return l.r.Join(ctx, n4.cfg.ID, n4.r.Addr(), c.live()) })
	c.onLeader("check m4's address", func(l *testNode) error {
		servers, err := l.r.Servers(ctx)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(servers, func(s Server) bool { return s.ID == "m4" }); i < 0 || servers[i].Addr != n4.r.Addr() {
			t.Errorf("after re-join Servers() = %+v, want m4 at %s", servers, n4.r.Addr())
		}
		return nil
	})
	c.apply("after-rejoin")
	want = append(want, "after-rejoin")
	c.waitItems(want, c.running()...)
}

// live is the Liveness of the running servers at their addresses, standing
// in for gossip in these raft-only tests.
func (c *testCluster) live() Liveness {
	return func(id, addr string) MemberState {
		for _, n := range c.running() {
			if n.cfg.ID == id && n.r.Addr() == addr {
				return StateAlive
			}
		}
		return ""
	}
}

// assertSuffrage checks the leader's configuration holds exactly the
// servers of want, each a voter or not as want says.
func (c *testCluster) assertSuffrage(want map[string]bool) {
	c.t.Helper()
	c.onLeader("check suffrage", func(l *testNode) error {
		servers, err := l.r.Servers(context.Background())
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, s := range servers {
			got[s.ID] = s.Voter
		}
		if !maps.Equal(got, want) {
			c.t.Errorf("voters by ID: %v, want %v", got, want)
		}
		return nil
	})
}

// assertServers checks the leader's configuration lists exactly ids,
// all voters, with the leader flagged.
func (c *testCluster) assertServers(ids ...string) {
	c.t.Helper()
	c.onLeader("check servers", func(l *testNode) error {
		servers, err := l.r.Servers(context.Background())
		if err != nil {
			return err
		}
		var got []string
		for _, s := range servers {
			got = append(got, s.ID)
			if !s.Voter {
				c.t.Errorf("server %s is not a voter", s.ID)
			}
			if s.Leader != (s.ID == l.cfg.ID) {
				c.t.Errorf("server %s Leader = %v, leader is %s", s.ID, s.Leader, l.cfg.ID)
			}
		}
		if !slices.Equal(got, ids) {
			c.t.Errorf("Servers() IDs = %v, want %v", got, ids)
		}
		return nil
	})
}

func TestRaft_FullRestart(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	want := items("r", 0, 5)
	c.apply(want...)
	c.waitItems(want, c.nodes...)
	c.snapshotAll()
	more := items("t", 0, 5)
	c.apply(more...)
	want = append(want, more...)
	c.waitItems(want, c.nodes...)

	c.shutdownAll()
	for _, n := range c.nodes {
		c.start(n)
		if n.r.bootstrapped {
			t.Errorf("%s bootstrapped again on restart", n.cfg.ID)
		}
	}
	c.leader(10 * time.Second)
	c.waitItems(want, c.nodes...)
	c.apply("after-restart")
	c.waitItems(append(want, "after-restart"), c.nodes...)
}

func TestRaft_ShutdownAndLockedDataDir(t *testing.T) {
	log := testkit.Logger(t, "test")
	cfg := FastRaftConfig()
	cfg.ID = "solo"
	cfg.BindAddr = testkit.FreeAddr(t)
	cfg.Peers = []Peer{{ID: "solo", Addr: cfg.BindAddr}}
	cfg.DataDir = t.TempDir()
	cfg.Logger = log
	r, err := NewRaft(cfg, &listFSM{})
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the single server to lead", r.IsLeader)

	second := cfg
	second.BindAddr = testkit.FreeAddr(t)
	second.Peers = nil
	second.OpenTimeout = 200 * time.Millisecond
	start := time.Now()
	r2, err := NewRaft(second, &listFSM{})
	took := time.Since(start)
	if err == nil {
		r2.Shutdown()
		t.Fatalf("second NewRaft on an open data dir succeeded")
	}
	if !errors.Is(err, ErrDataDirLocked) || !strings.Contains(err.Error(), "raft.db") {
		t.Errorf("second NewRaft: err = %v, want ErrDataDirLocked naming raft.db", err)
	}
	if took > 2*time.Second {
		t.Errorf("second NewRaft took %s to fail, want about OpenTimeout (%s)", took, second.OpenTimeout)
	}
	t.Logf("second NewRaft failed after %s: %v", took.Round(time.Millisecond), err)

	if err := r.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := r.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := r.Apply(context.Background(), []byte("x")); !errors.Is(err, ErrShutdown) {
		t.Errorf("Apply after Shutdown: err = %v, want ErrShutdown", err)
	}

	// The lock is released: the same data dir opens again, with its state.
	r3, err := NewRaft(cfg, &listFSM{})
	if err != nil {
		t.Fatalf("NewRaft after Shutdown: %v", err)
	}
	defer r3.Shutdown()
	if r3.bootstrapped {
		t.Errorf("restart bootstrapped again")
	}
	testkit.WaitFor(t, 5*time.Second, "the restarted server to lead", r3.IsLeader)
}

func TestCollapseLeadership(t *testing.T) {
	tests := []struct {
		name    string
		pending []bool
		want    []bool
	}{
		{"empty", nil, nil},
		{"one", []bool{true}, []bool{true}},
		{"lost", []bool{true, false}, []bool{true, false}},
		{"regained", []bool{true, false, true}, []bool{true}},
		{"lost again", []bool{false, true, false}, []bool{false}},
		{"long run", []bool{true, false, true, false, true}, []bool{true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []bool
			for _, v := range tt.pending {
				got = collapseLeadership(append(got, v))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("collapse %v = %v, want %v", tt.pending, got, tt.want)
			}
		})
	}
}

func TestRaftConfig_Validate(t *testing.T) {
	valid := func() RaftConfig {
		c := FastRaftConfig()
		c.ID = "m1"
		c.BindAddr = "127.0.0.1:7000"
		c.DataDir = "/tmp/x"
		c.Peers = []Peer{{"m1", "127.0.0.1:7000"}, {"m2", "127.0.0.1:7001"}}
		return c
	}
	tests := []struct {
		name   string
		mutate func(*RaftConfig)
		want   string // substring of the error; "" means valid
	}{
		{"fast", func(*RaftConfig) {}, ""},
		{"default", func(c *RaftConfig) {
			d := DefaultRaftConfig()
			d.ID, d.BindAddr, d.DataDir = c.ID, c.BindAddr, c.DataDir
			*c = d
		}, ""},
		{"joiner on port 0", func(c *RaftConfig) { c.Peers, c.BindAddr = nil, "127.0.0.1:0" }, ""},
		{"no ID", func(c *RaftConfig) { c.ID = "" }, "ID cannot be empty"},
		{"host name", func(c *RaftConfig) { c.BindAddr = "localhost:7000" }, `BindAddr "localhost:7000" must be a concrete IP:port`},
		{"no port", func(c *RaftConfig) { c.BindAddr = "127.0.0.1" }, "BindAddr"},
		{"port 0 with peers", func(c *RaftConfig) { c.BindAddr = "127.0.0.1:0" }, "needs a fixed port when Peers is set"},
		{"wildcard", func(c *RaftConfig) { c.BindAddr = "0.0.0.0:7000" }, "AdvertiseAddr is required when BindAddr (0.0.0.0:7000) is a wildcard"},
		{"bad advertise", func(c *RaftConfig) { c.AdvertiseAddr = "0.0.0.0:7000" }, "AdvertiseAddr \"0.0.0.0:7000\" must be a concrete IP"},
		{"no data dir", func(c *RaftConfig) { c.DataDir = "" }, "DataDir cannot be empty"},
		{"self missing", func(c *RaftConfig) { c.Peers = c.Peers[1:] }, `Peers must include this server (ID "m1")`},
		{"self elsewhere", func(c *RaftConfig) { c.Peers[0].Addr = "127.0.0.1:7002" }, "must equal this server's advertised address"},
		{"duplicate ID", func(c *RaftConfig) { c.Peers[1].ID = "m1" }, `Peers[1].ID "m1" is listed twice`},
		{"duplicate addr", func(c *RaftConfig) { c.Peers[1].Addr = "127.0.0.1:7000" }, `Peers[1].Addr "127.0.0.1:7000" is listed twice`},
		{"low heartbeat", func(c *RaftConfig) { c.HeartbeatTimeout = time.Millisecond }, "HeartbeatTimeout (1ms) must be at least 5ms"},
		{"election below heartbeat", func(c *RaftConfig) { c.ElectionTimeout = c.HeartbeatTimeout / 2 },
			fmt.Sprintf("ElectionTimeout (%s) must be equal or greater than HeartbeatTimeout (%s)", FastRaftConfig().HeartbeatTimeout/2, FastRaftConfig().HeartbeatTimeout)},
		{"lease above heartbeat", func(c *RaftConfig) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
			fmt.Sprintf("LeaderLeaseTimeout (%s) cannot be larger than HeartbeatTimeout (%s)", 2*FastRaftConfig().HeartbeatTimeout, FastRaftConfig().HeartbeatTimeout)},
		{"low commit", func(c *RaftConfig) { c.CommitTimeout = 0 }, "CommitTimeout (0s) must be at least 1ms"},
		{"no snapshot threshold", func(c *RaftConfig) { c.SnapshotThreshold = 0 }, "SnapshotThreshold must be positive"},
		{"open forever", func(c *RaftConfig) { c.OpenTimeout = 0 }, "OpenTimeout (0s) must be positive"},
		{"no apply timeout", func(c *RaftConfig) { c.ApplyTimeout = 0 }, "ApplyTimeout (0s) must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			checkValidate(t, c.Validate(), tt.want)
		})
	}
}

// TestRaft_LeaderContact: a leader is in touch (0) and its followers hear
// from it every heartbeat; a leader whose followers are gone steps down
// and counts from then, as a server that no leader ever contacted counts
// from its start. The manager ends its event streams on it (issue 16).
func TestRaft_LeaderContact(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader(10 * time.Second)
	testkit.WaitFor(t, 10*time.Second, "the leader in touch (0) and its followers within a second", func() bool {
		if !l.r.IsLeader() || l.r.LeaderContact() != 0 {
			return false
		}
		for _, f := range c.followers(l) {
			if f.r.LeaderContact() >= time.Second {
				return false
			}
		}
		return true
	})
	before := time.Now()
	lone := c.add("never-joined") // not bootstrapped, never joined: no leader ever calls
	if got, most := lone.r.LeaderContact(), time.Since(before); got > most {
		t.Fatalf("a server started %s ago says it has been out of touch for %s: it must count from its start", most, got)
	}
	for _, f := range c.followers(l) {
		if f != lone {
			c.stop(f)
		}
	}
	for _, n := range []*testNode{l, lone} {
		var got time.Duration
		testkit.WaitFor(t, 30*time.Second, n.cfg.ID+" out of touch for more than 2 s", func() bool {
			got = n.r.LeaderContact()
			return !n.r.IsLeader() && got > 2*time.Second
		})
		t.Logf("%s: out of touch with a leader for %s", n.cfg.ID, got.Round(time.Millisecond))
	}
}

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/hashicorp/raft"
)

// withRecovery gives every server of a test cluster a RecoveryFSM, and
// steady timings.
func withRecovery(cfg *RaftConfig) {
	steadyTimings(cfg)
	cfg.RecoveryFSM = func() raft.FSM { return &listFSM{} }
}

// steadyTimings uses the production profile's raft timeouts: on a machine
// other test runs load, the fast profile's 200 ms loses leadership now and
// then, and a write caught in that is an unknown outcome these tests cannot
// retry (the list would hold it twice). What they test does not depend on
// timing.
func steadyTimings(cfg *RaftConfig) {
	d := DefaultRaftConfig()
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout
}

// The lost majority: two of three servers gone for good (data and all),
// the survivor recovered with a peers.json listing itself alone leads with
// every entry, takes writes, lets a new server join, and applies the file
// once (a restart after the join keeps the new server).
func TestRaft_RecoverFromPeersFile(t *testing.T) {
	c := newTestCluster(t, 3, withRecovery)
	want := items("r", 0, 10)
	c.apply(want...)
	c.waitItems(want, c.running()...)
	ctx := context.Background()

	m1 := c.nodes[0]
	for _, n := range c.nodes[1:] {
		c.stop(n)
		if err := os.RemoveAll(n.cfg.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	peers := []Peer{{ID: "m1", Addr: m1.r.Addr()}}
	if _, err := WritePeersFile(m1.cfg.DataDir, peers); !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("WritePeersFile on a running server's dir: err = %v, want ErrDataDirLocked", err)
	}
	c.stop(m1)
	path, err := WritePeersFile(m1.cfg.DataDir, peers)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("peers.json: %v, mode %v; want 0600", err, fi.Mode())
	}

	c.start(m1)
	if l := c.leader(10 * time.Second); l != m1 {
		t.Fatalf("leader after recovery = %s, want m1", l.cfg.ID)
	}
	c.waitItems(want, m1)
	c.assertServers("m1")
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("peers.json still there after recovery (stat: %v)", err)
	}
	if _, err := os.Stat(path + appliedSuffix); err != nil {
		t.Errorf("peers.json.applied missing: %v", err)
	}
	c.apply("after-recovery")
	want = append(want, "after-recovery")

	n4 := c.add("m4")
	c.onLeaderIdempotent("join m4", func(l *testNode) error { return l.r.Join(ctx, n4.cfg.ID, n4.r.Addr(), c.live()) })
	c.waitItems(want, n4)
	c.onLeaderIdempotent("promote m4", func(l *testNode) error { return l.r.Promote(ctx, n4.cfg.ID, n4.r.Addr()) })
	c.assertServers("m1", "m4")

	// The file applied once: a restart keeps m4 in the configuration.
	c.stop(m1)
	c.start(m1)
	c.leader(10 * time.Second)
	c.assertServers("m1", "m4")
	c.apply("after-restart")
	want = append(want, "after-restart")
	c.waitItems(want, m1, n4)
}

// A peers.json that cannot be applied stops the start, says why, and is
// left where it is for the operator to fix.
func TestRaft_RecoverFromPeersFile_Refusals(t *testing.T) {
	c := newTestCluster(t, 1, withRecovery)
	c.apply("x")
	n := c.nodes[0]
	addr := n.r.Addr()
	c.stop(n)
	path := filepath.Join(n.cfg.DataDir, PeersFileName)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"not JSON", "m1=" + addr, "want a JSON list"},
		{"self missing", `[{"id":"m2","address":"127.0.0.1:1"}]`, "is not listed"},
		{"self elsewhere", `[{"id":"m1","address":"127.0.0.1:1"}]`, "is listed at 127.0.0.1:1 but advertises"},
		{"self non-voter", `[{"id":"m1","address":"` + addr + `","non_voter":true}]`, "need at least one voter"},
		{"self non-voter beside a voter", `[{"id":"m1","address":"` + addr + `","non_voter":true},{"id":"m2","address":"127.0.0.1:1"}]`, "must be a voter"},
		{"twice", `[{"id":"m1","address":"` + addr + `"},{"id":"m2","address":"` + addr + `"}]`, "duplicate address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := NewRaft(n.cfg, &listFSM{})
			if err == nil {
				r.Shutdown()
			}
			testkit.WantErr(t, "NewRaft", err, tc.want)
			if _, err := os.Stat(path); err != nil {
				t.Errorf("the refused peers.json was moved: %v", err)
			}
		})
	}
	// Without a RecoveryFSM a peers.json is refused too.
	cfg := n.cfg
	cfg.RecoveryFSM = nil
	if err := os.WriteFile(path, []byte(`[{"id":"m1","address":"`+addr+`"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := NewRaft(cfg, &listFSM{})
	if err == nil {
		r.Shutdown()
	}
	testkit.WantErr(t, "NewRaft without RecoveryFSM", err, "no RecoveryFSM")
	// Removed, the server starts as it was.
	os.Remove(path)
	c.start(n)
	c.leader(10 * time.Second)
	c.waitItems([]string{"x"}, n)
}

func TestWritePeersFile_Checks(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct {
		name  string
		dir   string
		peers []Peer
		want  string
	}{
		{"no peers", empty, nil, "lists no server"},
		{"no ID", empty, []Peer{{Addr: "127.0.0.1:1"}}, "has no ID"},
		{"host name", empty, []Peer{{ID: "m1", Addr: "localhost:1"}}, "is not IP:PORT"},
		{"no port", empty, []Peer{{ID: "m1", Addr: "127.0.0.1"}}, "is not IP:PORT"},
		{"duplicate ID", empty, []Peer{{ID: "m1", Addr: "127.0.0.1:1"}, {ID: "m1", Addr: "127.0.0.1:2"}}, "listed twice"},
		{"no raft state", empty, []Peer{{ID: "m1", Addr: "127.0.0.1:1"}}, "is " + empty + " a manager's raft directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WritePeersFile(tc.dir, tc.peers)
			testkit.WantErr(t, "WritePeersFile", err, tc.want)
			if _, serr := os.Stat(filepath.Join(tc.dir, PeersFileName)); serr == nil {
				t.Errorf("peers.json written despite the error")
			}
		})
	}
}

// The file WritePeersFile writes is raft's own format.
func TestWritePeersFile_RaftFormat(t *testing.T) {
	c := newTestCluster(t, 1, steadyTimings)
	n := c.nodes[0]
	c.stop(n)
	peers := []Peer{{ID: "m1", Addr: "127.0.0.1:7001"}, {ID: "m4", Addr: "127.0.0.1:7004"}}
	path, err := WritePeersFile(n.cfg.DataDir, peers)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []Peer
	for _, s := range conf.Servers {
		if s.Suffrage != raft.Voter {
			t.Errorf("server %s is not a voter", s.ID)
		}
		got = append(got, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	if !slices.Equal(got, peers) {
		t.Errorf("ReadConfigJSON = %+v, want %+v", got, peers)
	}
	b, _ := os.ReadFile(path)
	var raw []map[string]any
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 2 || raw[0]["id"] != "m1" {
		t.Errorf("peers.json = %s (%v)", b, err)
	}
}

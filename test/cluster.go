// Package test holds Cube's cluster helpers and its end-to-end tests: an
// in-process cluster of real managers (real raft over TCP, real bolt files,
// real memberlist, the real HTTP API) for the consensus tests, and tests that
// drive the real binaries against the real Docker engine.
package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/manager"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
)

// Cluster is an in-process cluster of managers, modelled on hashicorp/raft's
// MakeCluster and rqlite's system tests. Everything is torn down by
// t.Cleanup. Security is on, as in a real cluster: mutual TLS on the API and
// raft, gossip encryption and the operator token as bootstrap token, from
// the cluster's own identity (Sec).
type Cluster struct {
	t     *testing.T
	mu    sync.Mutex
	nodes map[string]*Manager
	order []string
	peers []cluster.Peer
	seeds []string
	// Sec is the cluster's identity: every manager's certificate, the
	// operator's client certificate and token.
	Sec *Identity
}

// Manager is one in-process manager.
type Manager struct {
	ID         string
	Dir        string
	HTTPAddr   string
	RaftAddr   string
	GossipAddr string

	// Server is the running node, built by the constructor cmd/cube uses;
	// the fields after it are its parts.
	Server  *manager.Server
	FSM     *fsm.FSM
	Raft    *cluster.Raft
	Pool    *cluster.Pool
	Manager *manager.Manager
	running bool
}

// NewCluster starts n managers that bootstrap together, and waits for a leader.
func NewCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, nodes: make(map[string]*Manager), Sec: NewIdentity(t, t.TempDir())}
	var ms []*Manager
	for i := 1; i <= n; i++ {
		m := &Manager{
			ID:         fmt.Sprintf("m%d", i),
			Dir:        t.TempDir(),
			HTTPAddr:   testkit.FreeAddr(t),
			RaftAddr:   testkit.FreeAddr(t),
			GossipAddr: testkit.FreeAddr(t),
		}
		c.peers = append(c.peers, cluster.Peer{ID: m.ID, Addr: m.RaftAddr})
		c.seeds = append(c.seeds, m.GossipAddr)
		ms = append(ms, m)
	}
	t.Cleanup(c.Close)
	for _, m := range ms {
		c.nodes[m.ID] = m
		c.order = append(c.order, m.ID)
		c.start(m, c.peers)
	}
	c.Leader()
	c.waitToken()
	return c
}

// waitToken waits until every running manager accepts the operator token
// (see waitToken).
func (c *Cluster) waitToken() {
	c.t.Helper()
	var addrs []string
	for _, m := range c.Running() {
		addrs = append(addrs, m.HTTPAddr)
	}
	waitToken(c.t, c.Sec, addrs)
}

func (c *Cluster) start(m *Manager, peers []cluster.Peer) {
	t := c.t
	t.Helper()
	cfg := manager.FastServerConfig()
	cfg.ID, cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr, cfg.DataDir = m.ID, m.HTTPAddr, m.RaftAddr, m.GossipAddr, m.Dir
	cfg.Peers, cfg.Seeds, cfg.Logger = peers, c.seeds, testkit.Logger(t, m.ID)
	host, _, _ := net.SplitHostPort(m.HTTPAddr)
	cfg.TLS = c.Sec.Node(security.RoleManager, m.ID, host)
	cfg.GossipKeys = []string{c.Sec.GossipKey}
	cfg.BootstrapTokenHash = security.HashToken(c.Sec.Token)
	// Keep almost no log behind a snapshot, so that a manager joining after
	// one can only catch up through InstallSnapshot.
	cfg.Raft.TrailingLogs = 2
	s, err := manager.NewServer(cfg)
	if err != nil {
		t.Fatalf("start manager %s: %v", m.ID, err)
	}
	m.Server, m.FSM, m.Raft, m.Pool, m.Manager = s, s.FSM(), s.Raft(), s.Pool(), s.Manager()
	m.running = true
}

// Kill stops a manager abruptly: no leadership transfer, no gossip leave.
func (c *Cluster) Kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	m := c.nodes[id]
	c.mu.Unlock()
	if m == nil || !m.running {
		c.t.Fatalf("kill %s: not running", id)
	}
	c.stop(m)
}

func (c *Cluster) stop(m *Manager) {
	if err := m.Server.Halt(); err != nil {
		c.t.Errorf("halt %s: %v", m.ID, err)
	}
	m.running = false
}

// Restart starts a killed manager again on its data dir and addresses.
func (c *Cluster) Restart(id string) {
	c.t.Helper()
	m := c.nodes[id]
	if m.running {
		c.t.Fatalf("restart %s: still running", id)
	}
	c.start(m, c.peers)
}

// Add starts a new manager with no peers, as `cube manager` without
// --peers: its joiner asks the managers gossip knows to add it, and Add waits
// until the leader's configuration holds it as a voter.
func (c *Cluster) Add(id string) *Manager {
	c.t.Helper()
	m := &Manager{ID: id, Dir: c.t.TempDir(), HTTPAddr: testkit.FreeAddr(c.t), RaftAddr: testkit.FreeAddr(c.t), GossipAddr: testkit.FreeAddr(c.t)}
	c.mu.Lock()
	c.nodes[id] = m
	c.order = append(c.order, id)
	c.mu.Unlock()
	c.start(m, nil)
	testkit.Eventually(c.t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		servers, err := c.Leader().Raft.Servers(ctx)
		if err != nil {
			return err
		}
		for _, s := range servers {
			if s.ID == id && s.Addr == m.RaftAddr && s.Voter {
				return nil
			}
		}
		return fmt.Errorf("%s not yet a voter: %+v", id, servers)
	})
	c.peers = append(c.peers, cluster.Peer{ID: id, Addr: m.RaftAddr})
	return m
}

// Node returns a manager by ID.
func (c *Cluster) Node(id string) *Manager { return c.nodes[id] }

// Running returns the running managers, in the order they were created.
func (c *Cluster) Running() []*Manager {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Manager
	for _, id := range c.order {
		if m := c.nodes[id]; m.running {
			out = append(out, m)
		}
	}
	return out
}

// Leader waits (generously) until exactly one running manager leads and
// returns it.
func (c *Cluster) Leader() *Manager {
	c.t.Helper()
	var leader *Manager
	testkit.Eventually(c.t, 20*time.Second, func() error {
		leader = nil
		for _, m := range c.Running() {
			if m.Raft.IsLeader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.ID, m.ID)
				}
				leader = m
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader among %d running managers", len(c.Running()))
		}
		return nil
	})
	return leader
}

// Followers returns the running managers that do not lead.
func (c *Cluster) Followers() []*Manager {
	var out []*Manager
	for _, m := range c.Running() {
		if !m.Raft.IsLeader() {
			out = append(out, m)
		}
	}
	return out
}

// Client returns an API client of the given managers (all running ones if
// none), with the operator's credentials.
func (c *Cluster) Client(ms ...*Manager) *api.Client {
	c.t.Helper()
	if len(ms) == 0 {
		ms = c.Running()
	}
	var addrs []string
	for _, m := range ms {
		addrs = append(addrs, m.HTTPAddr)
	}
	cl, err := api.NewClient(addrs, c.Sec.ClientOptions(api.ClientOptions{RetryFor: 20 * time.Second}))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// HTTPClient returns a client for raw requests to the managers' API (see
// URL), over TLS with the operator token.
func (c *Cluster) HTTPClient() *http.Client { return c.Sec.HTTPClient() }

// URL returns the https URL of path on manager m's API.
func (m *Manager) URL(path string) string { return "https://" + m.HTTPAddr + path }

// Close stops every running manager.
func (c *Cluster) Close() {
	for _, m := range c.Running() {
		c.stop(m)
	}
}

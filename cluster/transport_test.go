package cluster

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/hashicorp/raft"
)

// testCA is a certificate authority in a temporary directory.
type testCA struct {
	t            *testing.T
	dir, ca, key string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	dir := t.TempDir()
	ca, key, err := security.CreateCA(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, dir: dir, ca: ca, key: key}
}

// bundle signs a certificate of role for name (valid for 127.0.0.1) and
// loads it.
func (c *testCA) bundle(role security.Role, name string) *security.Bundle {
	c.t.Helper()
	cert, key, err := security.CreateCert(c.ca, c.key, c.dir, security.CertRequest{Role: role, Name: name, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := security.Load(security.Files{CA: c.ca, Cert: cert, Key: key})
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// tlsCluster starts n raft servers, each with a manager certificate of ca
// named as its ID.
func tlsCluster(t *testing.T, ca *testCA, n int) *testCluster {
	t.Helper()
	var mu sync.Mutex
	bundles := map[string]*security.Bundle{}
	return newTestCluster(t, n, func(c *RaftConfig) {
		mu.Lock()
		defer mu.Unlock()
		if bundles[c.ID] == nil {
			bundles[c.ID] = ca.bundle(security.RoleManager, c.ID)
		}
		c.TLS = bundles[c.ID]
	})
}

// A cluster whose raft runs over mutual TLS elects, replicates, fails over
// and takes a restarted server back, as over plain TCP.
func TestRaft_TLS_ElectsReplicatesAndFailsOver(t *testing.T) {
	c := tlsCluster(t, newTestCA(t), 3)
	c.apply("a", "b", "c")
	c.waitItems([]string{"a", "b", "c"}, c.nodes...)

	old := c.leader(10 * time.Second)
	c.stop(old)
	c.apply("d")
	c.waitItems([]string{"a", "b", "c", "d"}, c.running()...)

	c.start(old)
	c.apply("e")
	c.waitItems([]string{"a", "b", "c", "d", "e"}, c.nodes...)
}

// strangerTransport is a raft transport on 127.0.0.1 whose connections use
// bundle (nil: plain TCP), standing for a peer that is not one of the
// cluster's managers.
func strangerTransport(t *testing.T, bundle *security.Bundle) *raft.NetworkTransport {
	t.Helper()
	log := testkit.Logger(t, "stranger")
	l, err := newStreamLayer("127.0.0.1:0", nil, "", bundle, log)
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: l, MaxPool: 1, Timeout: transportTimeout, Logger: log})
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// A raft peer without a manager certificate of the cluster's CA (a worker's
// certificate, a manager certificate of another CA, no TLS at all) cannot
// talk to the servers: a RequestVote or AppendEntries at a far higher term,
// which would depose the leader if it got through, fails at once, and the
// cluster keeps its term and its log.
func TestRaft_TLS_RefusesPeersWithoutAManagerCertificate(t *testing.T) {
	ca := newTestCA(t)
	c := tlsCluster(t, ca, 3)
	c.apply("a")
	c.waitItems([]string{"a"}, c.nodes...)
	l := c.leader(10 * time.Second)
	term := l.r.Term()

	strangers := []struct {
		name   string
		bundle *security.Bundle
	}{
		{"worker certificate", ca.bundle(security.RoleWorker, "w1")},
		{"client certificate", ca.bundle(security.RoleClient, "ops")},
		{"manager certificate of another CA", newTestCA(t).bundle(security.RoleManager, "m9")},
		{"no TLS", nil},
	}
	for _, s := range strangers {
		t.Run(s.name, func(t *testing.T) {
			tr := strangerTransport(t, s.bundle)
			header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("m9"), Addr: []byte(tr.LocalAddr())}
			for _, n := range c.nodes {
				target := raft.ServerAddress(n.r.Addr())
				start := time.Now()
				var vote raft.RequestVoteResponse
				err := tr.RequestVote(raft.ServerID(n.cfg.ID), target, &raft.RequestVoteRequest{
					RPCHeader: header, Term: term + 100, LastLogIndex: 1 << 40, LastLogTerm: term + 100,
				}, &vote)
				if err == nil {
					t.Fatalf("RequestVote to %s succeeded (granted %v)", n.cfg.ID, vote.Granted)
				}
				// Refused by the handshake, not by a timeout.
				if took := time.Since(start); took > transportTimeout/2 {
					t.Errorf("RequestVote to %s failed after %s, want at once: %v", n.cfg.ID, took, err)
				}
				var app raft.AppendEntriesResponse
				if err := tr.AppendEntries(raft.ServerID(n.cfg.ID), target, &raft.AppendEntriesRequest{
					RPCHeader: header, Term: term + 100, PrevLogEntry: 0, LeaderCommitIndex: 1 << 40,
					Entries: []*raft.Log{{Index: 1 << 40, Term: term + 100, Type: raft.LogCommand, Data: []byte("forged")}},
				}, &app); err == nil {
					t.Fatalf("AppendEntries to %s succeeded (success %v)", n.cfg.ID, app.Success)
				}
			}
		})
	}

	// No server took the forged term (a load-induced election moves it by
	// one or two, not by a hundred), none holds the forged entry, and the
	// cluster still commits.
	c.apply("b")
	c.waitItems([]string{"a", "b"}, c.nodes...)
	for _, n := range c.nodes {
		if got := n.r.Term(); got >= term+100 {
			t.Errorf("%s is at term %d, the strangers' forged term (was %d)", n.cfg.ID, got, term)
		}
	}
	if now := c.leader(10 * time.Second); now != l {
		t.Logf("leadership moved from %s to %s meanwhile (load?)", l.cfg.ID, now.cfg.ID)
	}
}

// echoConsumer answers every RPC of tr with success until the test ends.
func echoConsumer(t *testing.T, tr *raft.NetworkTransport) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case rpc := <-tr.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// A stranger that connects to the TLS raft port and says nothing is cut off
// after the handshake bound, and meanwhile a manager is served: the
// handshake runs in the connection's own goroutine, not in the accept loop.
// A manager does not talk to a peer that presents no manager certificate
// either.
func TestStreamLayer_TLS_HandshakeBoundAndServerIdentity(t *testing.T) {
	ca := newTestCA(t)
	log := testkit.Logger(t, "layer")
	server, err := newStreamLayer("127.0.0.1:0", nil, "", ca.bundle(security.RoleManager, "m1"), log)
	if err != nil {
		t.Fatal(err)
	}
	server.handshake = 300 * time.Millisecond
	st := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: server, MaxPool: 1, Timeout: transportTimeout, Logger: log})
	t.Cleanup(func() { _ = st.Close() })
	echoConsumer(t, st)

	silent, err := net.Dial("tcp", string(st.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()

	// A manager is served while the silent connection is pending.
	m2 := strangerTransport(t, ca.bundle(security.RoleManager, "m2"))
	var resp raft.AppendEntriesResponse
	if err := m2.AppendEntries("m1", st.LocalAddr(), &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("m2"), Addr: []byte(m2.LocalAddr())}, Term: 1}, &resp); err != nil || !resp.Success {
		t.Fatalf("manager AppendEntries = %+v, %v; want success", resp, err)
	}

	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent stranger read data")
	} else if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("silent stranger still connected after 5s (handshake bound %s)", server.handshake)
	}
	t.Logf("silent stranger cut off after %s", time.Since(start).Round(time.Millisecond))

	// A peer serving a worker certificate at a raft address is not dialed
	// through: the manager checks the peer's role too.
	impostor, err := newStreamLayer("127.0.0.1:0", nil, "", ca.bundle(security.RoleWorker, "w1"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	go func() {
		for {
			c, err := impostor.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	if c, err := server.Dial(raft.ServerAddress(impostor.Addr().String()), 2*time.Second); err == nil {
		c.Close()
		t.Fatal("a manager dialed a peer with a worker certificate")
	}
}

// Validate refuses a raft TLS bundle that is not a manager's.
func TestRaftConfig_Validate_TLSRole(t *testing.T) {
	ca := newTestCA(t)
	cfg := FastRaftConfig()
	cfg.ID, cfg.BindAddr, cfg.DataDir = "m1", "127.0.0.1:0", filepath.Join(t.TempDir(), "m1")
	cfg.TLS = ca.bundle(security.RoleWorker, "m1")
	checkValidate(t, cfg.Validate(), "raft needs a manager certificate")
	cfg.TLS = ca.bundle(security.RoleManager, "m1")
	checkValidate(t, cfg.Validate(), "")
}

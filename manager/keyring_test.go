package manager

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
)

// testBundles signs and loads certificates of one test CA.
func testBundles(t *testing.T) func(security.Role, string) *security.Bundle {
	t.Helper()
	dir := t.TempDir()
	ca, cakey, err := security.CreateCA(dir, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return func(r security.Role, name string) *security.Bundle {
		t.Helper()
		cert, key, err := security.CreateCert(ca, cakey, dir, security.CertRequest{Role: r, Name: name, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := security.Load(security.Files{CA: ca, Cert: cert, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func testGossipKey(t *testing.T) []byte {
	t.Helper()
	s, err := security.NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := security.DecodeGossipKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// peerManager is another manager's API as far as the keyring routes go.
type peerManager struct {
	api.ManagerService
	*keyring
}

func (peerManager) Leader() (string, bool) { return "", true }

// peerWorker is a worker's API as far as the keyring routes go.
type peerWorker struct {
	api.WorkerService
	ring api.GossipKeyring
}

func (w peerWorker) LocalGossipKeyring() api.GossipKeyring { return w.ring }

// keyNode is one node of the fan-out test: a real gossip pool with an
// encrypted, persisted keyring, and its API served over TLS with the node's
// certificate (as the manager and worker APIs are configured: a manager's
// verifies a client certificate if given, a worker's requires a manager's).
type keyNode struct {
	pool *cluster.Pool
	srv  *httptest.Server
	file string
}

func startKeyNode(t *testing.T, name string, role cluster.Role, cert *security.Bundle, seeds []string, keys ...[]byte) *keyNode {
	t.Helper()
	n := &keyNode{srv: httptest.NewUnstartedServer(nil), file: filepath.Join(t.TempDir(), cluster.KeyringFileName)}
	cfg := cluster.FastGossipConfig()
	cfg.Name, cfg.BindPort, cfg.Seeds, cfg.Label = name, 0, seeds, "cube-test"
	cfg.Meta = cluster.Meta{Role: role, API: n.srv.Listener.Addr().String()}
	cfg.Keys, cfg.KeyringFile, cfg.Logger = keys, n.file, testkit.Logger(t, name)
	var err error
	if n.pool, err = cluster.NewPool(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.pool.Shutdown() })
	if role == cluster.RoleManager {
		k := newKeyring(n.pool, cert, "", cfg.Logger)
		n.srv.Config.Handler = api.NewManagerHandler(peerManager{keyring: k}, api.ManagerHandlerOptions{})
		n.srv.TLS = cert.ServerConfig(false)
	} else {
		n.srv.Config.Handler = api.NewWorkerHandler(peerWorker{ring: n.pool})
		n.srv.TLS = cert.ServerConfig(true, security.RoleManager)
	}
	n.srv.StartTLS()
	t.Cleanup(n.srv.Close)
	return n
}

// stop takes the node down, as a crash would.
func (n *keyNode) stop() {
	n.srv.Close()
	_ = n.pool.Shutdown()
}

// resultsOf indexes results by node, failing on a duplicate.
func resultsOf(t *testing.T, rs []api.KeyringResult) map[string]api.KeyringResult {
	t.Helper()
	out := map[string]api.KeyringResult{}
	for _, r := range rs {
		if _, dup := out[r.Node]; dup {
			t.Fatalf("node %s answered twice: %+v", r.Node, rs)
		}
		out[r.Node] = r
	}
	return out
}

// changeUntil applies op with key through k until check accepts the
// results, as an operator repeats a step until every node reports ok: on a
// loaded machine gossip can hold a live node dead for a moment, and the
// change then skips it ("not reached"). Every step is safe to repeat.
func changeUntil(t *testing.T, k *keyring, op string, key []byte, check func(map[string]api.KeyringResult) error) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, func() error {
		rs := resultsOf(t, k.ChangeGossipKeyring(context.Background(), op, key))
		if err := check(rs); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	})
}

// A manager carries a keyring change to every member over the members'
// APIs with mutual TLS: the other managers and the workers apply it, a node
// that holds the gossip key but serves a manager's address without a
// manager certificate is not talked to, a dead node is reported as not
// reached, and refusals come back node by node. The whole rotation loses
// no member.
func TestKeyring_RotationAcrossTheClusterOverTLS(t *testing.T) {
	bundle := testBundles(t)
	oldKey, newKey, extra := testGossipKey(t), testGossipKey(t), testGossipKey(t)
	m1cert := bundle(security.RoleManager, "m1")
	m1 := startKeyNode(t, "manager-m1", cluster.RoleManager, m1cert, nil, oldKey)
	seeds := []string{m1.pool.LocalAddr()}
	nodes := map[string]*keyNode{
		"manager-m1": m1,
		"manager-m2": startKeyNode(t, "manager-m2", cluster.RoleManager, bundle(security.RoleManager, "m2"), seeds, oldKey),
		"w1":         startKeyNode(t, "w1", cluster.RoleWorker, bundle(security.RoleWorker, "w1"), seeds, oldKey),
		"w2":         startKeyNode(t, "w2", cluster.RoleWorker, bundle(security.RoleWorker, "w2"), seeds, oldKey),
	}
	// An impostor with the gossip key and a worker's certificate, which
	// claims to be a manager.
	impostor := startKeyNode(t, "manager-m9", cluster.RoleManager, bundle(security.RoleWorker, "m9"), seeds, oldKey)
	legit := []string{"manager-m1", "manager-m2", "w1", "w2"}
	allAlive := func(names ...string) func() bool {
		return func() bool {
			seen := map[string]bool{}
			for _, m := range m1.pool.Members() {
				seen[m.Name] = m.State == cluster.StateAlive
			}
			for _, n := range names {
				if !seen[n] {
					return false
				}
			}
			return true
		}
	}
	testkit.WaitFor(t, 10*time.Second, "every node alive in m1's view", allAlive(append(legit, "manager-m9")...))

	k := newKeyring(m1.pool, m1cert, "", testkit.Logger(t, "m1-keyring"))
	ctx := context.Background()
	list := k.GossipKeyrings(ctx)
	if len(list) != 5 {
		t.Fatalf("GossipKeyrings listed %d nodes, want 5: %+v", len(list), list)
	}
	for _, nk := range list {
		switch {
		case nk.Node == "manager-m9":
			if nk.Error == "" || !strings.Contains(nk.Error, "certificate") {
				t.Errorf("impostor listed without a certificate error: %+v", nk)
			}
		case nk.Error != "" || !slices.Equal(nk.Keys, []string{base64.StdEncoding.EncodeToString(oldKey)}):
			t.Errorf("%s: %+v, want the old key alone", nk.Node, nk)
		}
	}

	for _, step := range []struct {
		op  string
		key []byte
	}{{api.KeyringInstall, newKey}, {api.KeyringUse, newKey}, {api.KeyringRemove, oldKey}} {
		changeUntil(t, k, step.op, step.key, func(rs map[string]api.KeyringResult) error {
			if r := rs["manager-m9"]; r.OK || !strings.Contains(r.Error, "certificate") && !strings.Contains(r.Error, "dead") {
				t.Fatalf("%s reached the impostor: %+v", step.op, r)
			}
			return wantOK(rs, legit...)
		})
	}
	testkit.WaitFor(t, 5*time.Second, "every node alive in m1's view after the rotation", allAlive(legit...))
	for _, n := range legit {
		if got := nodes[n].pool.ListKeys(); len(got) != 1 || !bytes.Equal(got[0], newKey) {
			t.Fatalf("%s ring after the rotation: %d keys, want the new key alone", n, len(got))
		}
	}
	// Left with the old key alone, the impostor is cut off.
	testkit.WaitFor(t, 10*time.Second, "the impostor dead in m1's view", func() bool {
		for _, m := range m1.pool.Members() {
			if m.Name == "manager-m9" {
				return m.State == cluster.StateDead
			}
		}
		return false
	})
	impostor.stop()

	// Refusals come back per node; a dead node is reported, not waited for.
	changeUntil(t, k, api.KeyringRemove, newKey, func(rs map[string]api.KeyringResult) error {
		for _, n := range legit {
			if r := rs[n]; r.OK {
				t.Fatalf("removing the primary on %s: %+v", n, r)
			} else if !strings.Contains(r.Error, "primary key") {
				return fmt.Errorf("%s: %s", n, r.Error)
			}
		}
		return nil
	})
	nodes["w2"].stop()
	testkit.WaitFor(t, 10*time.Second, "w2 dead in m1's view", func() bool {
		for _, m := range m1.pool.Members() {
			if m.Name == "w2" {
				return m.State == cluster.StateDead
			}
		}
		return false
	})
	changeUntil(t, k, api.KeyringInstall, extra, func(rs map[string]api.KeyringResult) error {
		if r := rs["w2"]; r.OK || !strings.Contains(r.Error, "dead") {
			t.Fatalf("install on the dead w2: %+v", r)
		}
		return wantOK(rs, "manager-m1", "manager-m2", "w1")
	})
	testkit.WaitFor(t, 5*time.Second, "the live nodes alive in m1's view at the end", allAlive("manager-m1", "manager-m2", "w1"))
}

// wantOK is nil when every named node reported ok.
func wantOK(rs map[string]api.KeyringResult, nodes ...string) error {
	for _, n := range nodes {
		if r := rs[n]; !r.OK {
			return fmt.Errorf("%s: %+v", n, r)
		}
	}
	return nil
}

// A manager server started with gossip keys encrypts its gossip, keeps the
// keyring in its data dir, and serves the keyring routes: a rotation through
// the Go client reaches both managers, and a restarted manager comes back
// with the rotated ring although its configuration still names the old key.
func TestServer_GossipKeyRotation(t *testing.T) {
	oldKey, newKey := testGossipKey(t), testGossipKey(t)
	oldB64, newB64 := base64.StdEncoding.EncodeToString(oldKey), base64.StdEncoding.EncodeToString(newKey)
	c1 := testServerConfig(t, "m1", t.TempDir())
	c1.Peers = []cluster.Peer{{ID: "m1", Addr: c1.RaftAddr}}
	c1.GossipKeys = []string{oldB64}
	s1, err := NewServer(c1)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	waitLeading(t, s1)
	c2 := testServerConfig(t, "m2", t.TempDir())
	c2.Seeds, c2.GossipKeys = []string{c1.GossipAddr}, []string{oldB64}
	s2, err := NewServer(c2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	testkit.WaitFor(t, 10*time.Second, "m1 to see m2 alive", func() bool {
		for _, m := range s1.Pool().Members() {
			if m.Name == "manager-m2" {
				return m.State == cluster.StateAlive
			}
		}
		return false
	})

	c, err := api.NewClient([]string{s1.Addr()}, api.ClientOptions{RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, req := range []api.KeyringRequest{{Op: "install", Key: newB64}, {Op: "use", Key: newB64}, {Op: "remove", Key: oldB64}} {
		// Repeated until both managers are ok (see changeUntil).
		testkit.Eventually(t, 15*time.Second, func() error {
			rs, err := c.ChangeGossipKeyring(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 2 || !rs[0].OK || !rs[1].OK {
				return fmt.Errorf("%s: %+v, want both managers ok", req.Op, rs)
			}
			return nil
		})
	}
	list, err := c.GossipKeyrings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, nk := range list {
		if nk.Primary != newB64 || len(nk.Keys) != 1 {
			t.Fatalf("%s after the rotation: %+v", nk.Node, nk)
		}
	}

	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err = NewServer(c2) // still configured with the old key
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Pool().ListKeys(); len(got) != 1 || !bytes.Equal(got[0], newKey) {
		t.Fatalf("restarted m2 ring: %d keys, want the rotated one", len(got))
	}
	testkit.WaitFor(t, 10*time.Second, "the restarted m2 alive again in m1's view", func() bool {
		for _, m := range s1.Pool().Members() {
			if m.Name == "manager-m2" {
				return m.State == cluster.StateAlive
			}
		}
		return false
	})
}

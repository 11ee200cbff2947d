package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
)

// leaderAmong waits until one of servers leads (its control loop runs,
// which it starts only after storing any bootstrap token) and returns it.
func leaderAmong(t *testing.T, servers ...*Server) *Server {
	t.Helper()
	var leader *Server
	testkit.Eventually(t, 30*time.Second, func() error {
		for _, s := range servers {
			if s.Manager().Leading() {
				leader = s
				return nil
			}
		}
		return errors.New("no manager leads yet")
	})
	return leader
}

// tokensOf is a manager's token table, for messages: name, role and hash prefix.
func tokensOf(s *Server) string {
	var out []string
	for _, t := range s.FSM().Tokens() {
		out = append(out, fmt.Sprintf("%s/%s/%s…", t.Name, t.Role, t.Hash[:8]))
	}
	return fmt.Sprintf("%s: %v", s.cfg.ID, out)
}

// filesHolding returns the files under dir whose bytes contain s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A three-manager cluster with TLS on and a bootstrap hash configured on
// every manager (a different one each, so that a second store would show):
// the first leader stores its bootstrap token, the next leader stores
// nothing; a token created through a follower's HTTPS API is made on the
// leader, lands on disk as a hash only, and authenticates on a follower
// once replicated; deleted, it no longer does; and once the bootstrap
// token is deleted too, a third leader does not bring it back.
func TestServer_Tokens_ReplicatedAndBootstrappedOnce(t *testing.T) {
	sign := testPKI(t)
	ids := []string{"m1", "m2", "m3"}
	cfgs := make(map[string]ServerConfig)
	var peers []cluster.Peer
	var seeds []string
	for _, id := range ids {
		c := testServerConfig(t, id, t.TempDir())
		c.TLS = sign(security.RoleManager, id)
		c.BootstrapTokenHash = security.HashToken("cube_bootstrap-of-" + id)
		cfgs[id] = c
		peers = append(peers, cluster.Peer{ID: id, Addr: c.RaftAddr})
		seeds = append(seeds, c.GossipAddr)
	}
	servers := make(map[string]*Server)
	start := func(id string) *Server {
		t.Helper()
		c := cfgs[id]
		c.Peers, c.Seeds = peers, seeds
		s, err := NewServer(c)
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		servers[id] = s
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	running := func(except ...*Server) []*Server {
		var out []*Server
	next:
		for _, id := range ids {
			for _, e := range except {
				if servers[id] == e {
					continue next
				}
			}
			out = append(out, servers[id])
		}
		return out
	}
	for _, id := range ids {
		start(id)
	}

	// The first leader stores its bootstrap token; every manager applies it.
	// Which manager that was is read from the token: on a loaded machine
	// the leader seen first can lose its leadership before it writes, and
	// the next one's token is then the one stored.
	leaderAmong(t, running()...)
	var first *Server
	for _, s := range running() {
		testkit.Eventually(t, 10*time.Second, func() error {
			toks := s.FSM().Tokens()
			if len(toks) != 1 || toks[0].Name != fsm.BootstrapTokenName || toks[0].Role != api.RoleOperator {
				return fmt.Errorf("want one bootstrap token; %s", tokensOf(s))
			}
			for _, id := range ids {
				if toks[0].Hash == cfgs[id].BootstrapTokenHash && (first == nil || first == servers[id]) {
					first = servers[id]
					return nil
				}
			}
			return fmt.Errorf("want the bootstrap token of one manager, the same on every manager; %s", tokensOf(s))
		})
	}
	boot := first.FSM().Tokens()[0]

	// The next leader has a bootstrap hash of its own, and stores nothing.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := leaderAmong(t, running(first)...)
	if toks := second.FSM().Tokens(); len(toks) != 1 || toks[0] != boot {
		t.Fatalf("after a second leader: %s; want only %+v", tokensOf(second), boot)
	}
	var follower *Server
	for _, s := range running(first) {
		if s != second {
			follower = s
		}
	}

	// Create a token through the follower's HTTPS API, with a client certificate.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, cfgs["m1"].TLS.CA, sign(security.RoleClient, "alice"))}}
	t.Cleanup(hc.CloseIdleConnections)
	testkit.Eventually(t, 10*time.Second, func() error {
		if addr, _ := follower.Manager().Leader(); addr != second.AdvertiseAddr() {
			return fmt.Errorf("%s knows the leader at %q, want %s", follower.cfg.ID, addr, second.AdvertiseAddr())
		}
		return nil
	})
	// A 503 (leadership wavering on a busy machine) is retried, as the Go
	// client does; should an attempt have committed unseen, its token (with
	// a secret nobody saw) is an orphan named ci, deleted below.
	var (
		status int
		body   []byte
	)
	testkit.Eventually(t, 10*time.Second, func() error {
		resp, err := hc.Post("https://"+follower.Addr()+"/tokens", "application/json", strings.NewReader(`{"Name":"ci","Role":"submit"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if status = resp.StatusCode; status == http.StatusServiceUnavailable {
			return fmt.Errorf("POST /tokens: %d %s", status, body)
		}
		return nil
	})
	var tok api.Token
	if status != http.StatusCreated || json.Unmarshal(body, &tok) != nil || !strings.HasPrefix(tok.Secret, security.TokenPrefix) {
		t.Fatalf("POST /tokens to follower %s: %d %s", follower.cfg.ID, status, body)
	}
	if tok.Name != "ci" || tok.Role != api.RoleSubmit {
		t.Fatalf("created %+v", tok)
	}
	hash := security.HashToken(tok.Secret)

	// Replicated: the follower finds it by hash and authenticates with it.
	auth := NewAuthenticator(follower.Manager())
	withToken := func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "https://"+follower.Addr()+"/tasks", nil)
		r.Header.Set(api.HeaderToken, tok.Secret)
		return r
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		got, ok := follower.Manager().TokenByHash(hash)
		if !ok || got.AccessorID != tok.AccessorID || got.Name != "ci" || got.Role != api.RoleSubmit {
			return fmt.Errorf("TokenByHash on %s: %+v, %v", follower.cfg.ID, got, ok)
		}
		return nil
	})
	if c, err := auth.Authenticate(withToken()); err != nil || c != (api.Caller{Kind: api.CallerToken, Name: "ci", Role: api.RoleSubmit}) {
		t.Fatalf("Authenticate on %s: %+v, %v", follower.cfg.ID, c, err)
	}
	// Only the hash reached the raft log and the disk, on every manager.
	for _, s := range running(first) {
		if files := filesHolding(t, s.cfg.DataDir, tok.Secret); len(files) > 0 {
			t.Fatalf("the secret is on disk in %v", files)
		}
		if files := filesHolding(t, s.cfg.DataDir, hash); len(files) == 0 {
			t.Fatalf("the hash is in no file under %s (is the log elsewhere?)", s.cfg.DataDir)
		}
	}

	// The Go client lists (no secrets) and deletes, through any manager.
	cl, err := api.NewClient([]string{"https://" + follower.Addr()}, api.ClientOptions{HTTP: hc, RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := cl.Tokens(ctx, true)
	if err != nil || len(list) < 2 || list[0].AccessorID != boot.AccessorID {
		t.Fatalf("Tokens: %+v, %v; want the bootstrap token first", list, err)
	}
	found := false
	for _, l := range list[1:] {
		found = found || l.AccessorID == tok.AccessorID
		if l.Secret != "" || l.Name != "ci" || l.Role != api.RoleSubmit {
			t.Fatalf("Tokens: %+v; want ci tokens without secrets after the bootstrap token", list)
		}
	}
	if !found {
		t.Fatalf("Tokens: %+v; %s is missing", list, tok.AccessorID)
	}
	for _, l := range list[1:] { // tok, and any orphan of a retried POST
		if err := cl.DeleteToken(ctx, l.AccessorID); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if _, err := auth.Authenticate(withToken()); !errors.Is(err, api.ErrUnauthenticated) {
			return fmt.Errorf("a deleted token on %s: %v, want ErrUnauthenticated", follower.cfg.ID, err)
		}
		return nil
	})

	// The bootstrap token deleted, a third leader does not bring it back.
	if err := cl.DeleteToken(ctx, boot.AccessorID); err != nil {
		t.Fatal(err)
	}
	restarted := start(first.cfg.ID)
	testkit.Eventually(t, 20*time.Second, func() error {
		if n := len(restarted.FSM().Tokens()); n != 0 {
			return fmt.Errorf("restarted %s has not caught up: %s", restarted.cfg.ID, tokensOf(restarted))
		}
		return nil
	})
	cur := leaderAmong(t, running()...)
	if err := cur.Close(); err != nil {
		t.Fatal(err)
	}
	third := leaderAmong(t, running(cur)...)
	for _, s := range running(cur) {
		if toks := s.FSM().Tokens(); len(toks) != 0 || !s.FSM().TokensBootstrapped() {
			t.Fatalf("leader %s, after the bootstrap token was deleted: %s", third.cfg.ID, tokensOf(s))
		}
	}
}

// A manager refuses to start with a certificate that is not a manager's,
// or with a bootstrap secret where its hash belongs.
func TestServer_TLSAndBootstrapConfig(t *testing.T) {
	sign := testPKI(t)
	c := testServerConfig(t, "m1", t.TempDir())
	c.Peers = []cluster.Peer{{ID: "m1", Addr: c.RaftAddr}}
	c.TLS = sign(security.RoleWorker, "m1")
	testkit.WantErr(t, "NewServer with a worker certificate", startErr(c), "is a worker certificate (m1); a manager needs a manager certificate")

	c.TLS = security.Files{CA: c.TLS.CA}
	testkit.WantErr(t, "NewServer with a CA only", startErr(c), "TLS needs the CA certificate, the node certificate and its key")

	c.TLS = security.Files{}
	c.BootstrapTokenHash = "cube_not-a-hash"
	testkit.WantErr(t, "NewServer with a secret as the bootstrap hash", startErr(c), "BootstrapTokenHash must be the 64 lowercase hex digits")
}

// startErr starts a server from c and returns NewServer's error (closing
// the server if it started).
func startErr(c ServerConfig) error {
	s, err := NewServer(c)
	if err == nil {
		_ = s.Close()
		return errors.New("started")
	}
	return err
}

package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// managers is a cluster of real manager servers (raft on TCP with bolt
// files, memberlist, the HTTP API) on loopback, fast profile.
type managers struct {
	t     *testing.T
	mu    sync.Mutex
	cfgs  map[string]ServerConfig
	srv   map[string]*Server // running ones
	seeds []string
}

// startManagers bootstraps n managers m1..mn together and waits for a
// leader.
func startManagers(t *testing.T, n int) *managers {
	t.Helper()
	c := &managers{t: t, cfgs: map[string]ServerConfig{}, srv: map[string]*Server{}}
	var peers []cluster.Peer
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("m%d", i)
		cfg := testServerConfig(t, id, t.TempDir())
		c.cfgs[id] = cfg
		peers = append(peers, cluster.Peer{ID: id, Addr: cfg.RaftAddr})
		c.seeds = append(c.seeds, cfg.GossipAddr)
	}
	t.Cleanup(c.closeAll)
	for id, cfg := range c.cfgs {
		cfg.Peers, cfg.Seeds = peers, c.seeds
		c.cfgs[id] = cfg
		c.start(id)
	}
	c.leader()
	return c
}

func (c *managers) start(id string) *Server {
	c.t.Helper()
	s, err := NewServer(c.cfgs[id])
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.mu.Lock()
	c.srv[id] = s
	c.mu.Unlock()
	return s
}

// join starts manager id without peers: its joiner asks the cluster to add it.
func (c *managers) join(id string) *Server {
	c.t.Helper()
	cfg := testServerConfig(c.t, id, c.t.TempDir())
	cfg.Seeds = c.seeds
	c.cfgs[id] = cfg
	return c.start(id)
}

// kill stops a manager abruptly (no leadership transfer, no gossip leave).
func (c *managers) kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	s := c.srv[id]
	delete(c.srv, id)
	c.mu.Unlock()
	if err := s.Halt(); err != nil {
		c.t.Errorf("halt %s: %v", id, err)
	}
}

func (c *managers) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, s := range c.srv {
		_ = s.Halt()
		delete(c.srv, id)
	}
}

// leader waits until exactly one running manager leads (its control loop
// runs) and returns its ID.
func (c *managers) leader() string {
	c.t.Helper()
	var id string
	testkit.Eventually(c.t, 30*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		id = ""
		for sid, s := range c.srv {
			if s.Manager().Leading() && s.Raft().IsLeader() {
				if id != "" {
					return fmt.Errorf("two leaders: %s and %s", id, sid)
				}
				id = sid
			}
		}
		if id == "" {
			return fmt.Errorf("no leader among %d managers", len(c.srv))
		}
		return nil
	})
	return id
}

// follower returns a running manager other than the leader and skip.
func (c *managers) follower(leader string, skip ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.srv {
		if id != leader && !contains(skip, id) {
			return id
		}
	}
	c.t.Fatalf("no follower but %s, %v", leader, skip)
	return ""
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// http sends one request to manager id's API and returns the status and
// the body.
// A 503 (no leader at the moment: an election on a loaded machine) is
// tried again for up to 20 s, as the Go client and the CLI do; the last
// answer is returned.
func (c *managers) http(id, method, path, body string) (int, []byte) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://"+c.cfgs[id].HTTPAddr+path, rd)
		if err != nil {
			c.t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			c.t.Fatalf("%s %s on %s: %v", method, path, id, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return resp.StatusCode, b
		}
		c.t.Logf("%s %s on %s: 503 %s; trying again", method, path, id, bytes.TrimSpace(b))
		time.Sleep(200 * time.Millisecond)
	}
}

// servers is the raft configuration as GET /cluster?consistent (the
// leader's view, with promotion notes) shows it, by ID.
func (c *managers) servers(via string) map[string]api.RaftServer {
	c.t.Helper()
	var out map[string]api.RaftServer
	testkit.Eventually(c.t, 20*time.Second, func() error {
		status, body := c.http(via, http.MethodGet, "/cluster?consistent", "")
		if status != http.StatusOK {
			return fmt.Errorf("GET /cluster: %d %s", status, body)
		}
		var info api.ClusterInfo
		if err := json.Unmarshal(body, &info); err != nil {
			return err
		}
		out = map[string]api.RaftServer{}
		for _, s := range info.Servers {
			out[s.ID] = s
		}
		return nil
	})
	return out
}

// wantVoters checks the configuration holds exactly the bootstrapped
// managers, each a voter at its own raft address.
func (c *managers) wantVoters(via string, ids ...string) {
	c.t.Helper()
	got := c.servers(via)
	if len(got) != len(ids) {
		c.t.Fatalf("raft servers %+v, want voters %v", got, ids)
	}
	for _, id := range ids {
		if s, ok := got[id]; !ok || !s.Voter || s.Addr != c.cfgs[id].RaftAddr {
			c.t.Fatalf("raft server %s: %+v, want a voter at %s", id, s, c.cfgs[id].RaftAddr)
		}
	}
}

// write submits a task through any running manager and waits for the
// commit: the cluster has a leader that can commit.
func (c *managers) write(name string) {
	c.t.Helper()
	var addrs []string
	c.mu.Lock()
	for id := range c.srv {
		addrs = append(addrs, c.cfgs[id].HTTPAddr)
	}
	c.mu.Unlock()
	cl, err := api.NewClient(addrs, api.ClientOptions{RetryFor: 20 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := cl.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: uuid.New(), Name: name, Image: "cube-echo:latest"}}); err != nil {
		c.t.Fatalf("submit %s: %v", name, err)
	}
}

// errMessage decodes an ErrResponse body.
func errMessage(t *testing.T, body []byte) string {
	t.Helper()
	var er api.ErrResponse
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&er); err != nil {
		t.Fatalf("not an ErrResponse: %s", body)
	}
	return er.Message
}

// A manager that joins (its joiner calls POST /cluster/servers, as does
// the test) enters as a non-voter, GET /cluster shows it waiting with the
// leader's note, and it is promoted once caught up and stable for the
// stabilization time, not sooner.
func TestMembership_JoinedManagerPromotedAfterStabilization(t *testing.T) {
	c := startManagers(t, 3)
	c.write("before")
	stab := c.cfgs["m1"].Manager.Autopilot.StabilizationTime
	started := time.Now()
	m4 := c.join("m4")
	body := fmt.Sprintf(`{"ID":"m4","Addr":%q}`, m4.Raft().Addr())
	if status, b := c.http(c.follower(c.leader(), "m4"), http.MethodPost, "/cluster/servers", body); status != http.StatusNoContent {
		t.Fatalf("POST /cluster/servers: %d %s", status, b)
	}

	var notes []string
	var promoted time.Time
	testkit.Eventually(t, 30*time.Second, func() error {
		s, ok := c.servers(c.leader())["m4"]
		switch {
		case !ok:
			return fmt.Errorf("m4 not in the configuration yet")
		case !s.Voter:
			if s.Promotion != "" && (len(notes) == 0 || notes[len(notes)-1] != s.Promotion) {
				notes = append(notes, s.Promotion)
			}
			return fmt.Errorf("m4 still a non-voter: %q", s.Promotion)
		}
		promoted = time.Now()
		return nil
	})
	t.Logf("m4 promoted %s after it started (stabilization %s); the leader's notes while it waited: %q", promoted.Sub(started).Round(time.Millisecond), stab, notes)
	if promoted.Sub(started) < stab {
		t.Fatalf("m4 promoted %s after it started, within the stabilization time %s", promoted.Sub(started), stab)
	}
	if len(notes) == 0 || !strings.Contains(strings.Join(notes, "|"), "healthy for") {
		t.Fatalf("GET /cluster never showed m4 waiting for promotion: %q", notes)
	}
	if s := c.servers(c.leader())["m4"]; s.Promotion != "" || s.API != m4.AdvertiseAddr() {
		t.Fatalf("m4 after promotion: %+v", s)
	}
	c.write("after")
}

// A non-voter at an address where nothing listens is never promoted (the
// leader says why), and the cluster keeps electing leaders and committing
// after the leader is killed.
func TestMembership_BogusNonVoterNeverPromoted(t *testing.T) {
	c := startManagers(t, 3)
	stab := c.cfgs["m1"].Manager.Autopilot.StabilizationTime
	bogus := testkit.FreeAddr(t) // nothing listens there
	body := fmt.Sprintf(`{"ID":"m9","Addr":%q}`, bogus)
	if status, b := c.http(c.follower(c.leader()), http.MethodPost, "/cluster/servers", body); status != http.StatusNoContent {
		t.Fatalf("POST /cluster/servers: %d %s", status, b)
	}
	time.Sleep(3 * stab)
	s := c.servers(c.leader())["m9"]
	if s.Voter || s.Addr != bogus || !strings.Contains(s.Promotion, "no manager m9 in gossip") {
		t.Fatalf("bogus m9 after %s: %+v, want a non-voter the leader explains", 3*stab, s)
	}

	old := c.leader()
	c.kill(old)
	next := c.leader()
	t.Logf("leader %s killed; %s elected with bogus m9 in the configuration", old, next)
	c.write("after-kill")
	time.Sleep(2 * stab)
	if s := c.servers(next)["m9"]; s.Voter {
		t.Fatalf("bogus m9 promoted by the new leader: %+v", s)
	}
}

// The attack of issue #12: two requests re-pointing live voters to a bogus
// address. Each is refused with 409 and a message saying what to do, the
// configuration is unchanged, and the cluster elects a new leader after
// the old one is killed.
func TestMembership_BogusRepointsRefused(t *testing.T) {
	c := startManagers(t, 3)
	l := c.leader()
	f1 := c.follower(l)
	f2 := c.follower(l, f1)
	bogus := testkit.FreeAddr(t)
	for _, id := range []string{f1, f2} {
		for _, via := range []string{l, f1} {
			status, b := c.http(via, http.MethodPost, "/cluster/servers", fmt.Sprintf(`{"ID":%q,"Addr":%q}`, id, bogus))
			want := fmt.Sprintf("%s is a live voter at %s; remove it first", id, c.cfgs[id].RaftAddr)
			if msg := errMessage(t, b); status != http.StatusConflict || !strings.Contains(msg, want) {
				t.Fatalf("re-point %s via %s: %d %q, want 409 containing %q", id, via, status, msg, want)
			}
		}
	}
	// Another ID at a live voter's address, and the leader itself, too.
	status, b := c.http(f1, http.MethodPost, "/cluster/servers", fmt.Sprintf(`{"ID":"evil","Addr":%q}`, c.cfgs[f2].RaftAddr))
	if msg := errMessage(t, b); status != http.StatusConflict || !strings.Contains(msg, f2+" is a live voter") {
		t.Fatalf("take %s's address: %d %q", f2, status, msg)
	}
	status, b = c.http(f1, http.MethodPost, "/cluster/servers", fmt.Sprintf(`{"ID":%q,"Addr":%q}`, l, bogus))
	if msg := errMessage(t, b); status != http.StatusConflict || !strings.Contains(msg, "conflicts with the leader itself") {
		t.Fatalf("re-point the leader %s: %d %q", l, status, msg)
	}
	c.wantVoters(l, "m1", "m2", "m3")

	c.kill(l)
	next := c.leader()
	t.Logf("leader %s killed; %s elected", l, next)
	c.write("after-kill")
}

// Removing a voter without which fewer reachable voters than a quorum
// would remain is refused; removing the dead voter is allowed, and the
// cluster goes on with the two that are left.
func TestMembership_RemovalsKeepAQuorum(t *testing.T) {
	c := startManagers(t, 3)
	l := c.leader()
	live := c.follower(l)
	dead := c.follower(l, live)
	c.kill(dead)
	// Nothing can know of a crash at once: the leader's heartbeats fail
	// within a heartbeat interval, gossip declares it dead within about a
	// second. Wait for gossip, the slower of the two.
	c.mu.Lock()
	ls := c.srv[l]
	c.mu.Unlock()
	testkit.Eventually(t, 10*time.Second, func() error {
		for _, m := range ls.Pool().Members() {
			if m.Meta.RaftID == dead && m.State == cluster.StateAlive {
				return fmt.Errorf("the leader's gossip still sees %s alive", dead)
			}
		}
		return nil
	})

	status, b := c.http(live, http.MethodDelete, "/cluster/servers/"+live, "")
	want := fmt.Sprintf("removing voter %s would leave 1 reachable voter(s) of 2 (unreachable: %s)", live, dead)
	if msg := errMessage(t, b); status != http.StatusConflict || !strings.Contains(msg, want) {
		t.Fatalf("remove live %s with %s dead: %d %q, want 409 containing %q", live, dead, status, msg, want)
	}
	c.wantVoters(l, "m1", "m2", "m3")

	if status, b := c.http(live, http.MethodDelete, "/cluster/servers/"+dead, ""); status != http.StatusNoContent {
		t.Fatalf("remove dead %s: %d %s", dead, status, b)
	}
	c.wantVoters(c.leader(), l, live)
	c.write("after-removal")
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/hashicorp/raft"
)

// voters builds a configuration: IDs ending in "?" are non-voters.
func voters(ids ...string) []raft.Server {
	var out []raft.Server
	for _, id := range ids {
		s := raft.Server{Suffrage: raft.Voter}
		if strings.HasSuffix(id, "?") {
			id, s.Suffrage = strings.TrimSuffix(id, "?"), raft.Nonvoter
		}
		s.ID, s.Address = raft.ServerID(id), raft.ServerAddress("10.0.0.1:"+id)
		out = append(out, s)
	}
	return out
}

// aliveOnly is a Liveness in which exactly ids are alive at their
// addresses in voters' scheme.
func aliveOnly(ids ...string) Liveness {
	return func(id, addr string) MemberState {
		for _, a := range ids {
			if a == id && addr == "10.0.0.1:"+id {
				return StateAlive
			}
		}
		return StateDead
	}
}

func TestCheckRemoval(t *testing.T) {
	for _, tc := range []struct {
		name    string
		servers []raft.Server
		live    Liveness
		remove  string
		want    string // substring of the refusal; "" allowed
	}{
		{"live follower of three, all alive", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "m2", ""},
		{"live follower while another is dead", voters("m1", "m2", "m3"), aliveOnly("m2"), "m2", "would leave 1 reachable voter(s) of 2 (unreachable: m3), fewer than the 2"},
		{"dead follower while another is dead", voters("m1", "m2", "m3"), aliveOnly("m2"), "m3", ""},
		{"dead voter of five with two dead", voters("m1", "m2", "m3", "m4", "m5"), aliveOnly("m2", "m3"), "m5", ""},
		{"live voter of five with two dead", voters("m1", "m2", "m3", "m4", "m5"), aliveOnly("m2", "m3"), "m2", "fewer than the 3"},
		{"suspect does not count as reachable", voters("m1", "m2", "m3"), func(id, _ string) MemberState {
			if id == "m3" {
				return StateSuspect
			}
			return StateAlive
		}, "m2", "(unreachable: m3)"},
		{"the leader itself, others alive", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "m1", ""},
		{"a non-voter, nothing alive", voters("m1", "m2", "m3", "m4?"), aliveOnly(), "m4", ""},
		{"an unknown ID", voters("m1", "m2"), aliveOnly(), "m9", ""},
		{"the last voter", voters("m1", "m2?"), aliveOnly("m2"), "m1", "m1 is the last voter"},
		{"down to one voter, the leader", voters("m1", "m2"), aliveOnly("m2"), "m2", ""},
		{"nil liveness knows only the leader", voters("m1", "m2", "m3"), nil, "m2", "fewer than the 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRemoval(tc.servers, "m1", tc.remove, tc.live)
			testkit.WantErr(t, "checkRemoval", err, tc.want)
			if tc.want != "" && !errors.Is(err, ErrUnsafeChange) {
				t.Fatalf("%v does not wrap ErrUnsafeChange", err)
			}
		})
	}
}

func TestPlanJoin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		servers    []raft.Server
		live       Liveness
		id, addr   string
		wantDone   bool
		wantRemove []string
		wantErr    string
	}{
		{"new server", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "m4", "10.0.0.1:m4", false, nil, ""},
		{"already a voter", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "m2", "10.0.0.1:m2", true, nil, ""},
		{"already a non-voter", voters("m1", "m2", "m3", "m4?"), aliveOnly("m2", "m3"), "m4", "10.0.0.1:m4", true, nil, ""},
		{"re-point a live voter", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "m2", "10.9.9.9:1", false, nil, "m2 is a live voter at 10.0.0.1:m2; remove it first"},
		{"re-point a suspect voter", voters("m1", "m2", "m3"), func(string, string) MemberState { return StateSuspect }, "m2", "10.9.9.9:1", false, nil, "m2 is a live voter"},
		{"another ID at a live voter's address", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "evil", "10.0.0.1:m2", false, nil, "m2 is a live voter"},
		{"re-point the leader", voters("m1", "m2", "m3"), aliveOnly("m2", "m3"), "m1", "10.9.9.9:1", false, nil, "conflicts with the leader itself"},
		{"re-point a dead voter", voters("m1", "m2", "m3"), aliveOnly("m3"), "m2", "10.9.9.9:1", false, []string{"m2"}, ""},
		{"re-point a dead voter of a cluster without a quorum", voters("m1", "m2", "m3", "m4", "m5"), aliveOnly("m3"), "m2", "10.9.9.9:1", false, nil, "fewer than the 3"},
		{"re-point a non-voter", voters("m1", "m2", "m3", "m4?"), aliveOnly("m2", "m3", "m4"), "m4", "10.9.9.9:1", false, []string{"m4"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, remove, err := planJoin(tc.servers, "m1", tc.id, tc.addr, tc.live)
			testkit.WantErr(t, "planJoin", err, tc.wantErr)
			var ids []string
			for _, s := range remove {
				ids = append(ids, string(s.ID))
			}
			if done != tc.wantDone || fmt.Sprint(ids) != fmt.Sprint(tc.wantRemove) {
				t.Fatalf("planJoin = done %v, remove %v; want %v, %v", done, ids, tc.wantDone, tc.wantRemove)
			}
		})
	}
}

// On real raft: a voter whose removal would leave fewer reachable voters
// than a quorum stays, a dead voter can be removed, the last voter stays,
// and a live voter cannot be re-pointed; refused changes write nothing.
func TestRaft_MembershipChangesKeepAQuorum(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.apply("a")
	ctx := context.Background()
	l := c.leader(10 * time.Second)
	fs := c.followers(l)
	live, dead := fs[0], fs[1]

	for _, f := range fs {
		id := f.cfg.ID
		c.onLeader("re-point "+id, func(l *testNode) error {
			err := l.r.Join(ctx, id, "127.0.0.1:1", c.live())
			if !errors.Is(err, ErrUnsafeChange) || !strings.Contains(err.Error(), id+" is a live voter at "+f.r.Addr()+"; remove it first") {
				t.Errorf("re-point live voter %s: %v, want ErrUnsafeChange naming it", id, err)
			}
			return nil
		})
	}
	c.assertServers("m1", "m2", "m3")

	c.stop(dead)
	c.onLeader("remove live "+live.cfg.ID, func(l *testNode) error {
		last := l.r.LastIndex()
		err := l.r.Remove(ctx, live.cfg.ID, c.live())
		if !errors.Is(err, ErrUnsafeChange) || !strings.Contains(err.Error(), "(unreachable: "+dead.cfg.ID+")") {
			t.Errorf("remove %s with %s down: %v, want ErrUnsafeChange", live.cfg.ID, dead.cfg.ID, err)
		}
		if got := l.r.LastIndex(); got != last {
			t.Errorf("refused removal wrote to the log: LastIndex %d -> %d", last, got)
		}
		return nil
	})
	c.onLeader("remove dead "+dead.cfg.ID, func(l *testNode) error { return l.r.Remove(ctx, dead.cfg.ID, c.live()) })
	l = c.leader(10 * time.Second)
	c.assertSuffrage(map[string]bool{l.cfg.ID: true, live.cfg.ID: true})
	c.onLeader("remove "+live.cfg.ID+" down to one voter", func(l *testNode) error { return l.r.Remove(ctx, live.cfg.ID, c.live()) })
	c.onLeader("remove the last voter", func(l *testNode) error {
		err := l.r.Remove(ctx, l.cfg.ID, c.live())
		if !errors.Is(err, ErrUnsafeChange) || !strings.Contains(err.Error(), "last voter") {
			t.Errorf("remove the last voter: %v, want ErrUnsafeChange", err)
		}
		return nil
	})
	c.apply("b")
}

// promoterRig runs a Promoter on servers of a raft test cluster, as the
// managers do: each checks only while it leads. Gossip and the status
// route are stood in for: a server the test put in the rig is an alive
// manager whose "API address" is its ID, and its status is read from its
// Raft directly. The rig keeps its own registry (the promoters' goroutines
// must not read the test cluster's nodes, which the test changes).
type promoterRig struct {
	t   *testing.T
	cfg AutopilotConfig

	mu    sync.Mutex
	nodes map[string]*Raft
	// lag makes the status of the named server report an applied index
	// that far behind.
	lag map[string]uint64
}

func newPromoterRig(t *testing.T) *promoterRig {
	return &promoterRig{t: t, cfg: testAutopilot(), nodes: map[string]*Raft{}, lag: map[string]uint64{}}
}

// put makes n an alive manager (its current Raft).
func (p *promoterRig) put(n *testNode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodes[n.cfg.ID] = n.r
}

// drop makes the manager id gone from gossip.
func (p *promoterRig) drop(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.nodes, id)
}

func (p *promoterRig) setLag(id string, lag uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lag[id] = lag
}

func (p *promoterRig) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Member
	for id, r := range p.nodes {
		out = append(out, Member{Name: "manager-" + id, State: StateAlive,
			Meta: Meta{Role: RoleManager, API: id, RaftID: id, RaftAddr: r.Addr()}})
	}
	return out
}

func (p *promoterRig) status(_ context.Context, api string) (ServerStatus, error) {
	p.mu.Lock()
	r, lag := p.nodes[api], p.lag[api]
	p.mu.Unlock()
	if r == nil {
		return ServerStatus{}, fmt.Errorf("no manager answers at %s", api)
	}
	st := r.Status()
	st.AppliedIndex -= min(st.AppliedIndex, lag)
	return st, nil
}

// run puts n in the rig and starts a promoter on its current Raft, stopped
// at the end of the test.
func (p *promoterRig) run(c *testCluster, n *testNode) *Promoter {
	p.t.Helper()
	p.put(n)
	pr, err := NewPromoter(p.cfg, n.r, p, p.status, c.log.Named(n.cfg.ID))
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pr.Run(ctx) }()
	p.t.Cleanup(func() { cancel(); <-done })
	return pr
}

func testAutopilot() AutopilotConfig {
	c := FastAutopilotConfig()
	c.Interval, c.StabilizationTime, c.MaxLag = 50*time.Millisecond, 600*time.Millisecond, 16
	return c
}

// suffrage returns whether id is in the leader's configuration and votes.
func (c *testCluster) suffrage(id string) (in, voter bool) {
	c.t.Helper()
	c.onLeader("read servers", func(l *testNode) error {
		servers, err := l.r.Servers(context.Background())
		if err != nil {
			return err
		}
		in, voter = false, false
		for _, s := range servers {
			if s.ID == id {
				in, voter = true, s.Voter
			}
		}
		return nil
	})
	return in, voter
}

// A joined server enters as a non-voter, is not promoted while it lags
// more than MaxLag, and is promoted once it has caught up and stayed
// healthy for StabilizationTime, not sooner.
func TestPromoter_PromotesACaughtUpServerAfterStabilization(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	rig := newPromoterRig(t)
	prs := map[string]*Promoter{}
	for _, n := range c.nodes {
		prs[n.cfg.ID] = rig.run(c, n)
	}
	c.apply(items("p", 0, 40)...)
	n4 := c.add("m4")
	rig.setLag("m4", 1000)
	rig.put(n4)
	ctx := context.Background()
	c.onLeaderIdempotent("join m4", func(l *testNode) error { return l.r.Join(ctx, "m4", n4.r.Addr(), c.live()) })
	if in, voter := c.suffrage("m4"); !in || voter {
		t.Fatalf("m4 after Join: in %v, voter %v; want a non-voter", in, voter)
	}
	c.waitItems(items("p", 0, 40), n4)

	// Lagging (as its status says): never promoted, and the leader says why.
	time.Sleep(3 * rig.cfg.StabilizationTime)
	if _, voter := c.suffrage("m4"); voter {
		t.Fatal("m4 promoted while it reported lagging 1000 entries behind")
	}
	l := c.leader(10 * time.Second)
	if why := prs[l.cfg.ID].Waiting()["m4"]; !strings.Contains(why, "catching up") {
		t.Fatalf("leader's verdict on m4: %q, want it catching up", why)
	}

	caughtUp := time.Now()
	rig.setLag("m4", 0)
	var promoted time.Time
	testkit.WaitFor(t, 20*time.Second, "m4 promoted", func() bool {
		_, voter := c.suffrage("m4")
		if voter {
			promoted = time.Now()
		}
		return voter
	})
	if took := promoted.Sub(caughtUp); took < rig.cfg.StabilizationTime {
		t.Fatalf("m4 promoted %s after it caught up, before the stabilization time %s", took, rig.cfg.StabilizationTime)
	}
	t.Logf("m4 promoted %s after it caught up (stabilization %s)", promoted.Sub(caughtUp).Round(time.Millisecond), rig.cfg.StabilizationTime)
	c.assertServers("m1", "m2", "m3", "m4")
	c.apply("after")
	c.waitItems(append(items("p", 0, 40), "after"), c.running()...)
}

// A non-voter at an address where no server listens is never promoted,
// and the voters keep electing leaders without it.
func TestPromoter_NeverPromotesABogusServer(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	rig := newPromoterRig(t)
	prs := map[string]*Promoter{}
	for _, n := range c.nodes {
		prs[n.cfg.ID] = rig.run(c, n)
	}
	c.apply("a")
	ctx := context.Background()
	bogus := testkit.FreeAddr(t) // nothing listens there
	c.onLeaderIdempotent("join bogus", func(l *testNode) error { return l.r.Join(ctx, "m9", bogus, c.live()) })
	time.Sleep(3 * rig.cfg.StabilizationTime)
	if in, voter := c.suffrage("m9"); !in || voter {
		t.Fatalf("bogus m9: in %v, voter %v; want a non-voter", in, voter)
	}
	l := c.leader(10 * time.Second)
	if why := prs[l.cfg.ID].Waiting()["m9"]; !strings.Contains(why, "no manager m9 in gossip") {
		t.Fatalf("leader's verdict on m9: %q", why)
	}

	for range 2 {
		old := c.leader(10 * time.Second)
		rig.drop(old.cfg.ID)
		c.stop(old)
		next := c.leader(10 * time.Second)
		t.Logf("leader %s stopped; %s elected", old.cfg.ID, next.cfg.ID)
		c.apply("after-" + old.cfg.ID)
		time.Sleep(2 * rig.cfg.StabilizationTime)
		if _, voter := c.suffrage("m9"); voter {
			t.Fatal("bogus m9 promoted")
		}
		c.start(old)
		rig.run(c, old)
	}
}

// fakePromoterRaft is a leader at term 5, commit index 100, whose
// configuration is servers; it records promotions.
type fakePromoterRaft struct {
	mu       sync.Mutex
	servers  []Server
	promoted []string
}

func (f *fakePromoterRaft) IsLeader() bool      { return true }
func (f *fakePromoterRaft) Term() uint64        { return 5 }
func (f *fakePromoterRaft) CommitIndex() uint64 { return 100 }
func (f *fakePromoterRaft) Servers(context.Context) ([]Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.servers), nil
}
func (f *fakePromoterRaft) Promote(_ context.Context, id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.promoted = append(f.promoted, id+"@"+addr)
	return nil
}

// Each way a non-voter can fail a check, and the verdict the leader shows.
func TestPromoter_Verdicts(t *testing.T) {
	healthy := ServerStatus{ID: "m4", RaftAddr: "10.0.0.4:1", Term: 5, AppliedIndex: 90, LastContact: 10 * time.Millisecond}
	alive := Member{Name: "manager-m4", State: StateAlive, Meta: Meta{Role: RoleManager, API: "10.0.0.4:2", RaftID: "m4", RaftAddr: "10.0.0.4:1"}}
	for _, tc := range []struct {
		name    string
		members fakeMembers
		status  ServerStatus
		err     error
		want    string
	}{
		{"healthy", fakeMembers{alive}, healthy, nil, "caught up; healthy for"},
		{"not in gossip", nil, healthy, nil, "no manager m4 in gossip"},
		{"dead in gossip", fakeMembers{{Name: "manager-m4", State: StateDead, Meta: alive.Meta}}, healthy, nil, "gossip sees it dead"},
		{"gossip knows it elsewhere", fakeMembers{{Name: "manager-m4", State: StateAlive, Meta: Meta{Role: RoleManager, API: "x:1", RaftID: "m4", RaftAddr: "10.0.0.9:1"}}}, healthy, nil, `at raft address "10.0.0.9:1", not 10.0.0.4:1`},
		{"a worker of that name does not count", fakeMembers{{Name: "m4", State: StateAlive, Meta: Meta{Role: RoleWorker, API: "x:1", RaftID: "m4", RaftAddr: "10.0.0.4:1"}}}, healthy, nil, "no manager m4 in gossip"},
		{"status fails", fakeMembers{alive}, healthy, errors.New("connection refused"), "did not answer its status: connection refused"},
		{"answers for another server", fakeMembers{alive}, ServerStatus{ID: "m2", RaftAddr: "10.0.0.2:1", Term: 5}, nil, "answers for m2 at 10.0.0.2:1"},
		{"another term", fakeMembers{alive}, func() ServerStatus { s := healthy; s.Term = 4; return s }(), nil, "it is at term 4, the leader at 5"},
		{"never contacted", fakeMembers{alive}, func() ServerStatus { s := healthy; s.LastContact = -1; return s }(), nil, "has not heard from a leader"},
		{"contact too old", fakeMembers{alive}, func() ServerStatus { s := healthy; s.LastContact = time.Minute; return s }(), nil, "last heard from the leader 1m0s ago"},
		{"lagging", fakeMembers{alive}, func() ServerStatus { s := healthy; s.AppliedIndex = 83; return s }(), nil, "catching up: applied index 83, leader's commit index 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakePromoterRaft{servers: []Server{{ID: "m1", Addr: "10.0.0.1:1", Voter: true, Leader: true}, {ID: "m4", Addr: "10.0.0.4:1"}}}
			var asked []string
			status := func(_ context.Context, api string) (ServerStatus, error) {
				asked = append(asked, api)
				return tc.status, tc.err
			}
			cfg := testAutopilot() // MaxLag 16
			p, err := NewPromoter(cfg, r, tc.members, status, nil)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			p.now = func() time.Time { return now }
			p.Check(context.Background())
			if got := p.Waiting()["m4"]; !strings.Contains(got, tc.want) {
				t.Fatalf("verdict %q, want it to contain %q", got, tc.want)
			}
			if len(asked) > 0 && asked[0] != "10.0.0.4:2" && tc.name != "gossip knows it elsewhere" {
				t.Fatalf("asked %v for the status, want the API m4 gossips", asked)
			}
			// Healthy for the whole stabilization time: promoted then, not before.
			now = now.Add(cfg.StabilizationTime - time.Millisecond)
			p.Check(context.Background())
			if len(r.promoted) != 0 {
				t.Fatalf("promoted %v before the stabilization time", r.promoted)
			}
			now = now.Add(time.Millisecond)
			p.Check(context.Background())
			if healthy := tc.want == "caught up; healthy for"; healthy != (len(r.promoted) == 1) {
				t.Fatalf("promoted %v; healthy case %v", r.promoted, healthy)
			}
		})
	}
}

// A failed check in the middle starts the stabilization over.
func TestPromoter_FlapRestartsStabilization(t *testing.T) {
	r := &fakePromoterRaft{servers: []Server{{ID: "m1", Addr: "10.0.0.1:1", Voter: true}, {ID: "m4", Addr: "10.0.0.4:1"}}}
	ok := true
	status := func(context.Context, string) (ServerStatus, error) {
		if !ok {
			return ServerStatus{}, errors.New("timeout")
		}
		return ServerStatus{ID: "m4", RaftAddr: "10.0.0.4:1", Term: 5, AppliedIndex: 100, LastContact: time.Millisecond}, nil
	}
	members := fakeMembers{{Name: "manager-m4", State: StateAlive, Meta: Meta{Role: RoleManager, API: "a:1", RaftID: "m4", RaftAddr: "10.0.0.4:1"}}}
	cfg := testAutopilot()
	p, err := NewPromoter(cfg, r, members, status, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p.now = func() time.Time { return now }
	step := cfg.StabilizationTime / 3
	for i, up := range []bool{true, true, false, true, true, true} {
		ok = up
		p.Check(context.Background())
		if len(r.promoted) != 0 {
			t.Fatalf("promoted at check %d, before a full stabilization time of health", i)
		}
		now = now.Add(step)
	}
	p.Check(context.Background())
	if len(r.promoted) != 1 {
		t.Fatalf("not promoted after a full stabilization time of health: %v", p.Waiting())
	}
}

func TestAutopilotConfig_Validate(t *testing.T) {
	for name, mod := range map[string]func(*AutopilotConfig){
		"zero interval":               func(c *AutopilotConfig) { c.Interval = 0 },
		"stabilization below a check": func(c *AutopilotConfig) { c.StabilizationTime = c.Interval / 2 },
		"zero last contact":           func(c *AutopilotConfig) { c.LastContactThreshold = 0 },
		"zero status timeout":         func(c *AutopilotConfig) { c.StatusTimeout = 0 },
	} {
		c := DefaultAutopilotConfig()
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig", name, err)
		}
	}
	for _, c := range []AutopilotConfig{DefaultAutopilotConfig(), FastAutopilotConfig()} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// Gossip takes a while to declare a crashed manager dead; the leader's
// failing heartbeats count at once: a removal that needs the crashed voter
// for a quorum is refused even while gossip still says it is alive.
func TestRaft_RemovalJudgedOnHeartbeatsBeforeGossip(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.apply("a")
	staleGossip := Liveness(func(string, string) MemberState { return StateAlive })
	l := c.leader(10 * time.Second)
	fs := c.followers(l)
	live, crashed := fs[0], fs[1]
	c.stop(crashed)
	// Leadership may move on a loaded machine: each leader is asked once its
	// own heartbeats to the crashed voter have failed.
	c.onLeader("changes right after a crash", func(l *testNode) error {
		for start := time.Now(); !l.r.heartbeatFailing(crashed.cfg.ID); time.Sleep(5 * time.Millisecond) {
			if !l.r.IsLeader() || time.Since(start) > 5*time.Second {
				return ErrNotLeader // try the next leader
			}
		}
		err := l.r.Remove(context.Background(), live.cfg.ID, staleGossip)
		if errors.Is(err, ErrNotLeader) {
			return err
		}
		if !errors.Is(err, ErrUnsafeChange) || !strings.Contains(err.Error(), "(unreachable: "+crashed.cfg.ID+")") {
			t.Fatalf("remove %s right after %s crashed: %v, want ErrUnsafeChange", live.cfg.ID, crashed.cfg.ID, err)
		}
		// A re-point of the crashed voter is refused too while gossip says
		// it is alive (suspect counts as live): only an explicit removal
		// replaces it.
		err = l.r.Join(context.Background(), crashed.cfg.ID, "127.0.0.1:1", staleGossip)
		if errors.Is(err, ErrNotLeader) {
			return err
		}
		if !errors.Is(err, ErrUnsafeChange) || !strings.Contains(err.Error(), "is a live voter") {
			t.Fatalf("re-point %s: %v, want ErrUnsafeChange", crashed.cfg.ID, err)
		}
		return nil
	})
	c.assertServers("m1", "m2", "m3")
	c.start(crashed)
	l = c.leader(10 * time.Second)
	testkit.WaitFor(t, 10*time.Second, "heartbeats to "+crashed.cfg.ID+" resumed", func() bool {
		return !l.r.heartbeatFailing(crashed.cfg.ID)
	})
}

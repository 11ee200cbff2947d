package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/test/testkit"
	"github.com/hashicorp/go-hclog"
)

// testPools starts gossip pools with FastGossipConfig on 127.0.0.1 and
// shuts them down at the end of the test.
type testPools struct {
	t   *testing.T
	log hclog.Logger
}

func newTestPools(t *testing.T) *testPools {
	return &testPools{t: t, log: testkit.Logger(t, "test")}
}

// start starts pool name on port (0: any) with seeds.
func (tp *testPools) start(name string, port int, seeds ...string) *Pool {
	tp.t.Helper()
	return tp.startWith(name, port, nil, seeds...)
}

// startWith is start with mutate (if not nil) applied to the config.
func (tp *testPools) startWith(name string, port int, mutate func(*GossipConfig), seeds ...string) *Pool {
	tp.t.Helper()
	cfg := FastGossipConfig()
	cfg.Name = name
	cfg.BindPort = port
	cfg.Seeds = seeds
	cfg.Label = "cube-test"
	cfg.Meta = Meta{Role: RoleWorker, API: "127.0.0.1:" + strconv.Itoa(5000+len(name)), Cpu: 2, Memory: 1 << 30, Disk: 10 << 30}
	cfg.Logger = tp.log.Named(name)
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := NewPool(cfg)
	if err != nil {
		tp.t.Fatalf("start pool %s: %v", name, err)
	}
	tp.t.Cleanup(func() {
		if err := p.Shutdown(); err != nil {
			tp.t.Errorf("shut down %s: %v", name, err)
		}
	})
	return p
}

// memberOf returns name as seen by p.
func memberOf(p *Pool, name string) (Member, bool) {
	for _, m := range p.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// stateIs reports whether every pool in ps sees name in state s.
func stateIs(name string, s MemberState, ps ...*Pool) func() bool {
	return func() bool {
		for _, p := range ps {
			if m, ok := memberOf(p, name); !ok || m.State != s {
				return false
			}
		}
		return true
	}
}

// portOf returns the port of a pool's gossip address.
func portOf(t *testing.T, p *Pool) int {
	t.Helper()
	_, port, err := splitIPPort(p.LocalAddr())
	if err != nil {
		t.Fatalf("pool address %q: %v", p.LocalAddr(), err)
	}
	return port
}

// threePools starts n1, n2 and n3, each seeded with the others started
// before it, and waits until all see all alive.
func threePools(t *testing.T, tp *testPools) []*Pool {
	t.Helper()
	p1 := tp.start("n1", 0)
	p2 := tp.start("n2", 0, p1.LocalAddr())
	p3 := tp.start("n3", 0, p1.LocalAddr(), p2.LocalAddr())
	ps := []*Pool{p1, p2, p3}
	for _, p := range ps {
		testkit.WaitFor(t, 5*time.Second, "every pool to see "+p.LocalName()+" alive", stateIs(p.LocalName(), StateAlive, ps...))
	}
	return ps
}

func TestPool_Membership(t *testing.T) {
	tp := newTestPools(t)
	ps := threePools(t, tp)
	p1, p2, p3 := ps[0], ps[1], ps[2]

	select {
	case <-p1.Changes():
	case <-time.After(5 * time.Second):
		t.Fatalf("Changes did not fire on n1")
	}
	ch, cancel := p1.Subscribe()
	defer cancel()

	members := p1.Members()
	if len(members) != 3 {
		t.Fatalf("n1 Members() = %v, want 3 members", members)
	}
	for i, m := range members {
		p := ps[i]
		if m.Name != p.LocalName() || m.Addr != p.LocalAddr() || m.State != StateAlive || m.Since.IsZero() {
			t.Errorf("n1 Members()[%d] = %+v, want %s at %s alive with Since", i, m, p.LocalName(), p.LocalAddr())
		}
		if !reflect.DeepEqual(m.Meta, p.cfg.Meta) {
			t.Errorf("n1 sees %s Meta %+v, want %+v", m.Name, m.Meta, p.cfg.Meta)
		}
	}

	// Metadata updates reach every node and fire the change signal.
	meta := Meta{Role: RoleManager, API: "127.0.0.1:5556", RaftID: "m2", RaftAddr: "127.0.0.1:7001", Cpu: 4, Memory: 8 << 30, Disk: 100 << 30}
	start := time.Now()
	if err := p2.UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "n2's new metadata everywhere", func() bool {
		for _, p := range ps {
			if m, ok := memberOf(p, "n2"); !ok || !reflect.DeepEqual(m.Meta, meta) {
				return false
			}
		}
		return true
	})
	t.Logf("metadata update seen everywhere %s after UpdateMeta was called", time.Since(start).Round(time.Millisecond))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Errorf("Subscribe channel did not fire on a metadata update")
	}

	big := meta
	big.API = strings.Repeat("x", 600)
	if err := p3.UpdateMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta with a %d-byte API: err = %v, want ErrMetaTooLarge", len(big.API), err)
	}
	cfg := FastGossipConfig()
	cfg.Name = "big"
	cfg.Meta = big
	if _, err := NewPool(cfg); !errors.Is(err, ErrMetaTooLarge) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewPool with oversized Meta: err = %v, want ErrInvalidConfig wrapping ErrMetaTooLarge", err)
	}
}

func TestPool_FailureDetection(t *testing.T) {
	tp := newTestPools(t)
	ps := threePools(t, tp)
	p1, p2, p3 := ps[0], ps[1], ps[2]
	port := portOf(t, p3)

	const tries = 3
	var dead []time.Duration
	sawSuspect := false
	for try := range tries {
		before := time.Now()
		if err := p3.Shutdown(); err != nil {
			t.Fatalf("Shutdown n3: %v", err)
		}
		took := testkit.WaitFor(t, 5*time.Second, "n1 and n2 to see n3 dead", func() bool {
			for _, p := range []*Pool{p1, p2} {
				if m, _ := memberOf(p, "n3"); m.State == StateSuspect {
					sawSuspect = true
				}
			}
			return stateIs("n3", StateDead, p1, p2)()
		})
		dead = append(dead, took)
		if m, _ := memberOf(p1, "n3"); m.Since.Before(before) {
			t.Errorf("n3 dead Since %s, before it was shut down at %s", m.Since, before)
		}

		// Restarted with the same name and address, it is alive again.
		p3 = tp.start("n3", port, p1.LocalAddr(), p2.LocalAddr())
		back := testkit.WaitFor(t, 5*time.Second, "n3 alive again everywhere", stateIs("n3", StateAlive, p1, p2, p3))
		t.Logf("try %d: crash seen by both survivors after %s; restart seen alive after %s", try, took.Round(time.Millisecond), back.Round(time.Millisecond))
	}
	if !sawSuspect {
		t.Errorf("n3 was never reported suspect before dead")
	}
	m, x := durationStats(dead)
	t.Logf("FastGossipConfig crash detection over %d tries: median %s max %s", tries, m.Round(time.Millisecond), x.Round(time.Millisecond))
}

func TestPool_Leave(t *testing.T) {
	tp := newTestPools(t)
	ps := threePools(t, tp)
	p1, p2, p3 := ps[0], ps[1], ps[2]

	start := time.Now()
	if err := p3.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	returned := time.Since(start)
	testkit.WaitFor(t, 5*time.Second, "n1 and n2 to see n3 left", stateIs("n3", StateLeft, p1, p2))
	t.Logf("Leave returned after %s; both survivors saw n3 left after %s", returned.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if m, _ := memberOf(p3, "n3"); m.State != StateLeft {
		t.Errorf("n3 sees itself %s, want left", m.State)
	}
	if err := p3.UpdateMeta(Meta{Role: RoleWorker}); !errors.Is(err, ErrShutdown) {
		t.Errorf("UpdateMeta after Leave: err = %v, want ErrShutdown", err)
	}
	if err := p3.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := p3.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := p3.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown: err = %v, want ErrShutdown", err)
	}
	// A node that left is not probed, so it never turns dead: watch it
	// for several suspicion timeouts.
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		if !stateIs("n3", StateLeft, p1, p2)() {
			t.Fatalf("n3 left, then: n1 %v, n2 %v", p1.Members(), p2.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPool_SeedStartsLater(t *testing.T) {
	tp := newTestPools(t)
	seedAddr := testkit.FreeAddr(t)
	_, seedPort, _ := splitIPPort(seedAddr)

	early := tp.start("early", 0, seedAddr)
	// Let the first rounds fail, so the join happens on a retry.
	testkit.WaitFor(t, 5*time.Second, "three failed join rounds", func() bool { return early.joinRounds.Load() >= 3 })
	if got := len(early.Members()); got != 1 {
		t.Fatalf("early Members() = %d nodes before the seed exists, want 1", got)
	}
	seed := tp.start("seed", seedPort)
	took := testkit.WaitFor(t, 10*time.Second, "early and seed to see each other", func() bool {
		return stateIs("early", StateAlive, early, seed)() && stateIs("seed", StateAlive, early, seed)()
	})
	t.Logf("node started before its seed joined %s after the seed appeared (join round %d)", took.Round(time.Millisecond), early.joinRounds.Load())
}

func TestGossipConfig_Validate(t *testing.T) {
	valid := func() GossipConfig {
		c := FastGossipConfig()
		c.Name = "n1"
		c.BindPort = 7946
		c.Seeds = []string{"127.0.0.1:7947"}
		c.Meta = Meta{Role: RoleWorker, API: "127.0.0.1:5555"}
		return c
	}
	tests := []struct {
		name   string
		mutate func(*GossipConfig)
		want   string // substring of the error; "" means valid
	}{
		{"fast", func(*GossipConfig) {}, ""},
		{"default", func(c *GossipConfig) {
			d := DefaultGossipConfig()
			d.Name, d.Meta = c.Name, c.Meta
			*c = d
		}, ""},
		{"no name", func(c *GossipConfig) { c.Name = "" }, "Name cannot be empty"},
		{"host name", func(c *GossipConfig) { c.BindAddr = "localhost" }, `BindAddr "localhost" must be an IP address`},
		{"bad port", func(c *GossipConfig) { c.BindPort = 70000 }, "BindPort (70000) must be between 0 and 65535"},
		{"advertise port alone", func(c *GossipConfig) { c.BindAddr, c.AdvertisePort = "0.0.0.0", 8000 }, "AdvertisePort (8000) needs AdvertiseAddr"},
		{"bad seed", func(c *GossipConfig) { c.Seeds = []string{"127.0.0.1"} }, `Seeds[0] "127.0.0.1" must be host:port`},
		{"long label", func(c *GossipConfig) { c.Label = strings.Repeat("l", 256) }, "Label (256 bytes) cannot be longer than 255 bytes"},
		{"no role", func(c *GossipConfig) { c.Meta.Role = "" }, `Role "" must be "manager" or "worker"`},
		{"negative memory", func(c *GossipConfig) { c.Meta.Memory = -1 }, "cannot be negative"},
		{"huge meta", func(c *GossipConfig) { c.Meta.API = strings.Repeat("x", 500) }, "node metadata too large"},
		{"probe timeout", func(c *GossipConfig) { c.ProbeTimeout = c.ProbeInterval },
			fmt.Sprintf("ProbeTimeout (%s) must be positive and less than ProbeInterval (%s)", FastGossipConfig().ProbeInterval, FastGossipConfig().ProbeInterval)},
		{"no gossip", func(c *GossipConfig) { c.GossipInterval = 0 }, "GossipInterval (0s) must be positive"},
		{"suspicion", func(c *GossipConfig) { c.SuspicionMult = 0 }, "SuspicionMult (0) must be at least 1"},
		{"no reclaim", func(c *GossipConfig) { c.DeadNodeReclaimTime = 0 }, "DeadNodeReclaimTime (0s) must be positive"},
		{"no stream timeout", func(c *GossipConfig) { c.StreamTimeout = 0 }, "StreamTimeout (0s) must be positive"},
		{"no push/pull", func(c *GossipConfig) { c.PushPullInterval = -time.Second }, "PushPullInterval (-1s) must be positive"},
		{"no broadcast timeout", func(c *GossipConfig) { c.BroadcastTimeout = 0 }, "BroadcastTimeout (0s) must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			checkValidate(t, c.Validate(), tt.want)
		})
	}
}

// A node that saw its only seed die finds it again when the seed restarts
// knowing nobody (all managers restarted at once): memberlist alone never
// contacts a dead node again, and the restarted seed does not know the node.
func TestPool_ReconnectsToARestartedSeed(t *testing.T) {
	tp := newTestPools(t)
	seed := tp.start("seed", 0)
	node := tp.start("node", 0, seed.LocalAddr())
	testkit.WaitFor(t, 5*time.Second, "both alive in both views", stateIs("seed", StateAlive, seed, node))
	testkit.WaitFor(t, 5*time.Second, "both alive in both views", stateIs("node", StateAlive, seed, node))

	port := portOf(t, seed)
	if err := seed.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "node to see the seed dead", stateIs("seed", StateDead, node))

	// Back on its address, with no seeds of its own.
	again := tp.start("seed", port)
	took := testkit.WaitFor(t, 15*time.Second, "seed and node to see each other alive again", func() bool {
		return stateIs("seed", StateAlive, node, again)() && stateIs("node", StateAlive, node, again)()
	})
	t.Logf("restarted seed and node see each other after %s (ReconnectInterval %s)", took.Round(time.Millisecond), FastGossipConfig().ReconnectInterval)
}

// A dead member that is not a seed is tried too, one per interval.
func TestPool_ReconnectTargets(t *testing.T) {
	p := &Pool{cfg: GossipConfig{Name: "me", Seeds: []string{"127.0.0.1:7001", "127.0.0.1:7002"}, ReconnectTimeout: time.Hour},
		members: map[string]*member{}}
	now := time.Now()
	p.members["me"] = &member{addr: "127.0.0.1:7000", state: StateAlive}
	p.members["s1"] = &member{addr: "127.0.0.1:7001", state: StateAlive}
	p.members["s2"] = &member{addr: "127.0.0.1:7002", state: StateDead, since: now}
	p.members["w"] = &member{addr: "127.0.0.1:7003", state: StateDead, since: now}
	p.members["old"] = &member{addr: "127.0.0.1:7004", state: StateDead, since: now.Add(-2 * time.Hour)}
	p.members["gone"] = &member{addr: "127.0.0.1:7005", state: StateLeft, since: now}
	if got := p.reconnectTargets(now, 0); !slices.Equal(got, []string{"127.0.0.1:7002"}) {
		t.Fatalf("with a seed down: %v, want the seed", got)
	}
	p.members["s2"].state = StateAlive
	if got := p.reconnectTargets(now, 0); !slices.Equal(got, []string{"127.0.0.1:7003"}) {
		t.Fatalf("seeds alive: %v, want the one recently dead member (not the long-dead, not the left)", got)
	}
	p.members["w"].state = StateAlive
	if got := p.reconnectTargets(now, 0); len(got) != 0 {
		t.Fatalf("everyone alive: %v, want nothing", got)
	}
}

// In a large pool a dead member is tried every reconnectScale ticks, a
// seed that is down at every tick.
func TestPool_ReconnectTargetsSpacedOutInALargePool(t *testing.T) {
	for _, c := range []struct{ n, scale int }{{1, 1}, {32, 1}, {33, 2}, {64, 2}, {65, 3}, {100, 3}, {1000, 6}} {
		if got := reconnectScale(c.n); got != c.scale {
			t.Errorf("reconnectScale(%d) = %d, want %d", c.n, got, c.scale)
		}
	}
	p := &Pool{cfg: GossipConfig{Name: "me", Seeds: []string{"127.0.0.1:7001"}, ReconnectTimeout: time.Hour},
		members: map[string]*member{}}
	now := time.Now()
	p.members["me"] = &member{addr: "127.0.0.1:7000", state: StateAlive}
	p.members["s1"] = &member{addr: "127.0.0.1:7001", state: StateAlive}
	for i := range 98 {
		p.members[fmt.Sprintf("w%d", i)] = &member{addr: fmt.Sprintf("127.0.1.%d:7946", i), state: StateAlive}
	}
	p.members["dead"] = &member{addr: "127.0.0.1:7003", state: StateDead, since: now}
	var tried []int
	for tick := range 7 {
		if got := p.reconnectTargets(now, tick); len(got) > 0 {
			tried = append(tried, tick)
		}
	}
	if !slices.Equal(tried, []int{0, 3, 6}) { // 101 members: every third tick
		t.Fatalf("dead member tried at ticks %v, want [0 3 6]", tried)
	}
	p.members["s1"].state = StateDead
	for tick := range 3 {
		if got := p.reconnectTargets(now, tick); !slices.Equal(got, []string{"127.0.0.1:7001"}) {
			t.Fatalf("tick %d with the seed down: %v, want the seed", tick, got)
		}
	}
}

// A member that does not compress its gossip (NoCompression, as the
// benchmark's simulated workers) and one that does understand each other:
// each joins, sees the other alive, and learns the other's new metadata.
func TestPool_CompressionOffAndOnInterwork(t *testing.T) {
	tp := newTestPools(t)
	on := tp.start("on", 0)
	off := tp.startWith("off", 0, func(c *GossipConfig) { c.NoCompression = true }, on.LocalAddr())
	for _, name := range []string{"on", "off"} {
		testkit.WaitFor(t, 5*time.Second, "both pools to see "+name+" alive", stateIs(name, StateAlive, on, off))
	}
	for _, c := range []struct {
		from, to *Pool
		api      string
	}{{off, on, "127.0.0.1:7101"}, {on, off, "127.0.0.1:7102"}} {
		if err := c.from.UpdateMeta(Meta{Role: RoleWorker, API: c.api}); err != nil {
			t.Fatalf("UpdateMeta of %s: %v", c.from.LocalName(), err)
		}
		testkit.WaitFor(t, 5*time.Second, c.to.LocalName()+" to learn "+c.from.LocalName()+"'s new metadata", func() bool {
			m, ok := memberOf(c.to, c.from.LocalName())
			return ok && m.Meta.API == c.api
		})
	}
}

// A pool with PollRoles (a worker's: managers only) reads the state of no
// other member on its polls, and still sees every member's death and
// departure, which arrive as events; a pool without it polls everyone.
func TestPool_PollRolesReadsOnlyThoseRolesAndStillSeesDeaths(t *testing.T) {
	tp := newTestPools(t)
	m := tp.startWith("m", 0, func(c *GossipConfig) { c.Meta.Role = RoleManager })
	w := tp.startWith("w", 0, func(c *GossipConfig) { c.PollRoles = []Role{RoleManager} }, m.LocalAddr())
	all := tp.start("all", 0, m.LocalAddr())
	x := tp.start("x", 0, m.LocalAddr())
	z := tp.start("z", 0, m.LocalAddr())
	for _, name := range []string{"m", "w", "all", "x", "z"} {
		testkit.WaitFor(t, 10*time.Second, "every pool to see "+name+" alive", stateIs(name, StateAlive, m, w, all, x, z))
	}

	// Steady state: w reads the manager's state alone on each poll; a pool
	// without PollRoles reads all five members'.
	r0, p0, ra0, pa0 := w.refreshes.Load(), w.polled.Load(), all.refreshes.Load(), all.polled.Load()
	time.Sleep(time.Second)
	refreshes, polled := w.refreshes.Load()-r0, w.polled.Load()-p0
	if refreshes < 3 || polled > refreshes {
		t.Errorf("w: %d member states read in %d refreshes, want at most one each (the manager)", polled, refreshes)
	}
	if ra, pa := all.refreshes.Load()-ra0, all.polled.Load()-pa0; ra < 3 || pa < 5*ra {
		t.Errorf("a pool without PollRoles: %d member states read in %d refreshes, want five each", pa, ra)
	}

	// A worker that dies, one that leaves: w tells them apart as everyone.
	if err := z.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave z: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "w and all to see z left", stateIs("z", StateLeft, w, all))
	if err := x.Shutdown(); err != nil {
		t.Fatalf("Shutdown x: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "w and all to see x dead", stateIs("x", StateDead, w, all))
	// And the manager's death.
	if err := m.Shutdown(); err != nil {
		t.Fatalf("Shutdown m: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "w and all to see m dead", stateIs("m", StateDead, w, all))
}

package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// switchablePing is the real Docker runtime whose Ping can be made to fail,
// standing in for an engine that stops answering.
type switchablePing struct {
	Runtime
	down  atomic.Bool
	fails atomic.Int32 // the next fails pings fail, then it answers again
	pings atomic.Int64
}

func (s *switchablePing) Ping(ctx context.Context) error {
	s.pings.Add(1)
	if s.down.Load() {
		return fmt.Errorf("ping: %w", ErrRuntimeUnavailable)
	}
	if s.fails.Add(-1) >= 0 {
		return fmt.Errorf("ping (once): %w", context.DeadlineExceeded)
	}
	return s.Runtime.Ping(ctx)
}

// fakeReports is a manager API that accepts reports and counts them and the
// connections they came on.
type fakeReports struct {
	srv   *httptest.Server
	conns atomic.Int64
	mu    sync.Mutex
	seen  map[uuid.UUID]bool
}

func newFakeReports(t *testing.T) *fakeReports {
	f := &fakeReports{seen: make(map[uuid.UUID]bool)}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/reports" {
			http.NotFound(w, r)
			return
		}
		var task api.Task
		if err := json.NewDecoder(r.Body).Decode(&task); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.seen[task.ID] = true
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeReports) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

func testAgentConfig(t *testing.T) AgentConfig {
	cfg := FastAgentConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Worker.DataDir = t.TempDir()
	cfg.Worker.Name = "agent-" + uuid.NewString()[:8]
	cfg.Logger = testkit.Logger(t, "agent")
	return cfg
}

// Alone (no gossip), the agent serves the worker API, and Close frees its
// port.
func TestAgent_AloneServesTheWorkerAPI(t *testing.T) {
	a, err := NewAgent(testAgentConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tasks, err := api.NewWorkerClient(5*time.Second).Tasks(ctx, a.Addr())
	if err != nil || len(tasks) != 0 {
		t.Fatalf("GET /tasks of a new worker: %v, %v; want no task", tasks, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	_ = a.Close() // idempotent
	ln, err := net.Listen("tcp", a.Addr())
	if err != nil {
		t.Fatalf("port of a closed agent still taken: %v", err)
	}
	ln.Close()
}

// In a cluster the agent owns its gossip membership (address, capacity,
// engine state), its reporter (through one pooled HTTP client to the
// managers gossip names) and its engine monitor, which also tells of a
// store that refuses writes; Close leaves the pool.
func TestAgent_ClusterMembershipReportsAndEngineMonitor(t *testing.T) {
	mgrAPI := newFakeReports(t)
	g := cluster.FastGossipConfig()
	gossipAddr := testkit.FreeAddr(t)
	host, port, _ := cluster.ParseGossipAddr(gossipAddr)
	g.Name, g.BindAddr, g.BindPort, g.Logger = "manager-m1", host, port, testkit.Logger(t, "m1")
	g.Meta = cluster.Meta{Role: cluster.RoleManager, API: mgrAPI.srv.Listener.Addr().String(), RaftID: "m1", RaftAddr: "127.0.0.1:1"}
	mgr, err := cluster.NewPool(g)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Shutdown()

	docker, err := NewDocker(DefaultDockerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer docker.Close()
	rt := &switchablePing{Runtime: docker}
	cfg := testAgentConfig(t)
	cfg.GossipAddr, cfg.Seeds, cfg.Runtime = testkit.FreeAddr(t), []string{gossipAddr}, rt
	cfg.Cpu, cfg.Memory, cfg.RuntimeCheckInterval = 3, 1<<30, 50*time.Millisecond
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	member := func() (cluster.Member, error) {
		for _, m := range mgr.Members() {
			if m.Name == a.Name() {
				return m, nil
			}
		}
		return cluster.Member{}, errors.New("worker not in the manager's pool yet")
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		m, err := member()
		if err != nil {
			return err
		}
		if m.State != cluster.StateAlive || m.Meta.Role != cluster.RoleWorker || m.Meta.API != a.Addr() || m.Meta.Cpu != 3 || m.Meta.Memory != 1<<30 || m.Meta.RuntimeDown {
			return fmt.Errorf("worker seen as %+v, want alive, API %s, 3 cpu, 1 GiB, runtime up", m, a.Addr())
		}
		return nil
	})

	// One check that fails among good ones is not an engine gone: the
	// managers would move every task of the worker.
	rt.fails.Store(1)
	seen := rt.pings.Load()
	for rt.pings.Load() < seen+4 {
		if m, err := member(); err == nil && m.Meta.RuntimeDown {
			t.Fatal("one failed engine check was advertised as RuntimeDown")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a metadata change would have reached the manager
	if m, err := member(); err != nil || m.Meta.RuntimeDown {
		t.Fatalf("after one failed engine check the worker is seen as %+v (%v), want its runtime up", m, err)
	}
	for _, down := range []bool{true, false} {
		rt.down.Store(down)
		testkit.Eventually(t, 30*time.Second, func() error {
			m, err := member()
			if err != nil || m.Meta.RuntimeDown != down {
				return fmt.Errorf("worker seen as %+v (%v), want RuntimeDown %v", m, err, down)
			}
			return nil
		})
	}

	// A store that refuses writes is advertised the same way once a write
	// failed and a probe write fails too; when it takes writes again, the
	// worker is back.
	refuse := func(api.Task) error { return errors.New("write worker.db: input/output error (test)") }
	a.w.store.failPut.Store(&refuse)
	if err := a.w.save(api.Task{ID: uuid.New(), Worker: a.Name(), Generation: 1, State: api.Scheduled}); err == nil {
		t.Fatal("a write the store refused succeeded")
	}
	for _, down := range []bool{true, false} {
		if !down {
			a.w.store.failPut.Store(nil)
		}
		testkit.Eventually(t, 30*time.Second, func() error {
			m, err := member()
			if err != nil || m.Meta.RuntimeDown != down {
				return fmt.Errorf("worker seen as %+v (%v), want RuntimeDown %v with its store refusing writes: %v", m, err, down, down)
			}
			return nil
		})
	}

	// 300 reports reach the manager gossip names, over a handful of pooled
	// connections (a client per report used to open one each).
	const reports = 300
	for range reports {
		a.reporter.Enqueue(api.Task{ID: uuid.New(), Worker: a.Name(), Generation: 1, State: api.Running})
	}
	testkit.Eventually(t, 60*time.Second, func() error {
		if n := mgrAPI.count(); n != reports {
			return fmt.Errorf("%d of %d reports delivered", n, reports)
		}
		return nil
	})
	if n := mgrAPI.conns.Load(); n > 4 {
		t.Fatalf("%d reports came on %d connections, want them pooled (at most 4)", reports, n)
	}
	_, text := get(t, a.Addr(), "/metrics")
	if v, ok := series(text, `cube_worker_reports_total{result="ok"}`); !ok || v < reports {
		t.Fatalf("cube_worker_reports_total{result=\"ok\"} = %v (present %v) after %d reports delivered", v, ok, reports)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		m, err := member()
		if err == nil && m.State != cluster.StateLeft {
			return fmt.Errorf("closed worker seen as %s, want left", m.State)
		}
		return nil
	})
}

func TestAgentConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*AgentConfig)
		wantErr string // substring; empty: valid
	}{
		{"alone", func(c *AgentConfig) {}, ""},
		{"alone on every interface", func(c *AgentConfig) { c.HTTPAddr = "0.0.0.0:5555" }, ""},
		{"no HTTP address", func(c *AgentConfig) { c.HTTPAddr = "" }, "HTTPAddr"},
		{"negative cpu", func(c *AgentConfig) { c.Cpu = -1 }, "Cpu"},
		{"zero check period", func(c *AgentConfig) { c.RuntimeCheckInterval = 0 }, "RuntimeCheckInterval"},
		{"zero report bound", func(c *AgentConfig) { c.ReportTimeout = 0 }, "ReportTimeout"},
		{"labels", func(c *AgentConfig) { c.Labels = map[string]string{"zone": "a", "disk": "ssd"} }, ""},
		{"bad label value", func(c *AgentConfig) { c.Labels = map[string]string{"zone": "a!"} }, "Labels: label zone=a!: value \"a!\" must not contain"},
		{"too many labels", func(c *AgentConfig) {
			c.Labels = map[string]string{}
			for i := range 17 {
				c.Labels[fmt.Sprintf("k%d", i)] = "v"
			}
		}, "Labels: 17 labels, at most 16"},
		{"no data dir", func(c *AgentConfig) { c.Worker.DataDir = "" }, "DataDir"},
		{"cluster on loopback", func(c *AgentConfig) { c.GossipAddr = "127.0.0.1:6555" }, ""},
		{"cluster, wildcard HTTP alone", func(c *AgentConfig) { c.HTTPAddr, c.GossipAddr = "[::]:5555", "127.0.0.1:6555" },
			"--http [::]:5555 binds every interface; give --advertise-http (or --advertise)"},
		{"cluster, wildcard gossip alone", func(c *AgentConfig) { c.GossipAddr = "0.0.0.0:6555" },
			"--gossip 0.0.0.0:6555 binds every interface; give --advertise-gossip"},
		{"cluster, wildcard with --advertise", func(c *AgentConfig) {
			c.HTTPAddr, c.GossipAddr, c.Advertise = "0.0.0.0:5555", "0.0.0.0:6555", "worker1.example"
		}, ""},
		{"cluster, wildcard with overrides", func(c *AgentConfig) {
			c.HTTPAddr, c.GossipAddr, c.HTTPAdvertise, c.GossipAdvertise = "0.0.0.0:5555", "0.0.0.0:6555", "10.0.0.7:5555", "10.0.0.7:6555"
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testAgentConfig(t)
			tc.mod(&c)
			testkit.WantErr(t, fmt.Sprintf("Validate(%+v)", c), c.Validate(), tc.wantErr)
			if tc.wantErr != "" {
				if _, err := NewAgent(c); err == nil {
					t.Fatalf("NewAgent accepted it")
				}
			}
		})
	}
}

// A worker bound to every interface advertises the address it is given in
// its gossip metadata: the managers dispatch to 127.0.0.1, not to [::]. Its
// seed is named by host name.
func TestAgent_WildcardBindAdvertises(t *testing.T) {
	g := cluster.FastGossipConfig()
	seed := testkit.FreeAddr(t)
	host, port, _ := cluster.ParseGossipAddr(seed)
	g.Name, g.BindAddr, g.BindPort, g.Logger = "manager-m1", host, port, testkit.Logger(t, "m1")
	g.Meta = cluster.Meta{Role: cluster.RoleManager, API: "127.0.0.1:1", RaftID: "m1", RaftAddr: "127.0.0.1:1"}
	mgr, err := cluster.NewPool(g)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Shutdown()

	cfg := testAgentConfig(t)
	httpAddr, gossipAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	swap := func(addr, host string) string {
		_, p, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, p)
	}
	cfg.HTTPAddr, cfg.GossipAddr, cfg.Advertise = swap(httpAddr, "0.0.0.0"), swap(gossipAddr, "0.0.0.0"), "127.0.0.1"
	cfg.Seeds, cfg.Managers = []string{swap(seed, "localhost")}, []string{"127.0.0.1:1"}
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	testkit.Eventually(t, 10*time.Second, func() error {
		for _, m := range mgr.Members() {
			if m.Name != a.Name() {
				continue
			}
			if m.Meta.API != httpAddr || m.Addr != gossipAddr {
				return fmt.Errorf("worker seen at gossip %q with API %q; want %q and %q", m.Addr, m.Meta.API, gossipAddr, httpAddr)
			}
			return nil
		}
		return errors.New("worker not in the pool yet")
	})
}

package manager

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// testServerConfig is a manager node on free loopback ports, with the fast
// profile, in its own data dir.
func testServerConfig(t *testing.T, id string, dir string) ServerConfig {
	cfg := FastServerConfig()
	cfg.ID, cfg.DataDir, cfg.Logger = id, dir, testkit.Logger(t, id)
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	return cfg
}

func waitLeading(t *testing.T, s *Server) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		if !s.Manager().Leading() {
			return fmt.Errorf("%s does not lead yet", s.cfg.ID)
		}
		return nil
	})
}

// A one-manager cluster bootstraps, serves the API over HTTP, and after a
// Close and a start on the same data dir still holds its tasks.
func TestServer_BootstrapsServesAndRestarts(t *testing.T) {
	cfg := testServerConfig(t, "m1", t.TempDir())
	cfg.Peers = []cluster.Peer{{ID: "m1", Addr: cfg.RaftAddr}}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeading(t, s)
	c, err := api.NewClient([]string{s.Addr()}, api.ClientOptions{RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	task, created, err := c.SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: api.Task{ID: uuid.New(), Name: "kept", Image: "cube-echo:latest"}})
	if err != nil || !created {
		t.Fatalf("submit: %v (created %v)", err, created)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close() // idempotent
	if ln, err := net.Listen("tcp", cfg.HTTPAddr); err != nil {
		t.Fatalf("HTTP port of a closed manager still taken: %v", err)
	} else {
		ln.Close()
	}

	s, err = NewServer(cfg)
	if err != nil {
		t.Fatalf("restart on the same data dir: %v", err)
	}
	defer s.Close()
	waitLeading(t, s)
	got, err := s.FSM().Task(task.ID)
	if err != nil || got.Name != "kept" {
		t.Fatalf("task after restart: %+v, %v", got, err)
	}
}

// A manager started without peers is added by the cluster it finds through
// gossip (its joiner asks a manager over HTTP, which forwards to the leader).
func TestServer_WithoutPeersJoinsThroughGossip(t *testing.T) {
	c1 := testServerConfig(t, "m1", t.TempDir())
	c1.Peers = []cluster.Peer{{ID: "m1", Addr: c1.RaftAddr}}
	s1, err := NewServer(c1)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	waitLeading(t, s1)

	c2 := testServerConfig(t, "m2", t.TempDir())
	c2.Seeds = []string{c1.GossipAddr}
	s2, err := NewServer(c2)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	testkit.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		servers, err := s1.Raft().Servers(ctx)
		if err != nil {
			return err
		}
		for _, srv := range servers {
			if srv.ID == "m2" && srv.Addr == c2.RaftAddr && srv.Voter {
				if id, _ := s2.Raft().Leader(); id != "m1" {
					return fmt.Errorf("m2 is a voter but knows leader %q", id)
				}
				return nil
			}
		}
		return fmt.Errorf("m2 not a voter yet: %+v", servers)
	})
}

// A busy HTTP port fails the start before any raft state is written, and
// leaves nothing running.
func TestServer_BusyPortFailsFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testServerConfig(t, "m1", t.TempDir())
	cfg.HTTPAddr = ln.Addr().String()
	cfg.Peers = []cluster.Peer{{ID: "m1", Addr: cfg.RaftAddr}}
	if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), cfg.HTTPAddr) {
		t.Fatalf("NewServer on a busy port: %v, want an error naming %s", err, cfg.HTTPAddr)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "raft")); !os.IsNotExist(err) {
		t.Fatalf("raft dir created before the port was checked: %v", err)
	}
	// Its raft and gossip ports are free again.
	for _, addr := range []string{cfg.RaftAddr, cfg.GossipAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s still taken after a failed start: %v", addr, err)
		}
		l.Close()
	}
}

func TestServerConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*ServerConfig)
		wantErr string // substring; empty: valid
	}{
		{"loopback binds", func(c *ServerConfig) {}, ""},
		{"no ID", func(c *ServerConfig) { c.ID = "" }, "needs an ID"},
		{"no data dir", func(c *ServerConfig) { c.DataDir = "" }, "data dir"},
		{"no HTTP", func(c *ServerConfig) { c.HTTPAddr = "" }, "HTTP"},
		{"no raft", func(c *ServerConfig) { c.RaftAddr = "" }, "raft"},
		{"no gossip", func(c *ServerConfig) { c.GossipAddr = "" }, "gossip"},
		{"wildcard HTTP alone", func(c *ServerConfig) { c.HTTPAddr = "0.0.0.0:5556" },
			"--http 0.0.0.0:5556 binds every interface; give --advertise-http (or --advertise)"},
		{"wildcard raft alone", func(c *ServerConfig) { c.RaftAddr = "[::]:6556" },
			"--raft [::]:6556 binds every interface; give --advertise-raft"},
		{"wildcard gossip alone", func(c *ServerConfig) { c.GossipAddr = ":6557" },
			"--gossip :6557 binds every interface; give --advertise-gossip"},
		{"wildcard everything with --advertise", func(c *ServerConfig) {
			c.HTTPAddr, c.RaftAddr, c.GossipAddr, c.Advertise = "0.0.0.0:5556", "0.0.0.0:6556", "0.0.0.0:6557", "10.0.0.5"
		}, ""},
		{"wildcard everything with per-address overrides", func(c *ServerConfig) {
			c.HTTPAddr, c.RaftAddr, c.GossipAddr = "0.0.0.0:5556", "0.0.0.0:6556", "0.0.0.0:6557"
			c.HTTPAdvertise, c.RaftAdvertise, c.GossipAdvertise = "node1.example:80", "10.0.0.5:6556", "10.0.0.5:6557"
		}, ""},
		{"one override missing", func(c *ServerConfig) {
			c.HTTPAddr, c.RaftAddr = "0.0.0.0:5556", "0.0.0.0:6556"
			c.HTTPAdvertise = "10.0.0.5:5556"
		}, "--raft 0.0.0.0:6556 binds every interface"},
		{"wildcard --advertise", func(c *ServerConfig) { c.Advertise = "::" }, "--advertise \"::\" must be this machine's address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testServerConfig(t, "m1", t.TempDir())
			tc.mod(&c)
			testkit.WantErr(t, fmt.Sprintf("Validate(%+v)", c), c.Validate(), tc.wantErr)
			if tc.wantErr != "" {
				if _, err := NewServer(c); err == nil {
					t.Fatalf("NewServer accepted it")
				}
			}
		})
	}
}

// withHost returns addr with its host replaced.
func withHost(t *testing.T, addr, host string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, port)
}

// A manager bound to every interface advertises the address it is given:
// X-Cube-Leader, Leader(), its raft address and its gossip metadata all
// name 127.0.0.1, never 0.0.0.0. Its peer list names it by host name.
func TestServer_WildcardBindAdvertises(t *testing.T) {
	cfg := testServerConfig(t, "m1", t.TempDir())
	loopHTTP, loopRaft := cfg.HTTPAddr, cfg.RaftAddr
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = withHost(t, cfg.HTTPAddr, "0.0.0.0"), withHost(t, cfg.RaftAddr, "0.0.0.0"), withHost(t, cfg.GossipAddr, "0.0.0.0")
	cfg.Advertise = "127.0.0.1"
	cfg.Peers = []cluster.Peer{{ID: "m1", Addr: withHost(t, loopRaft, "localhost")}}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitLeading(t, s)

	if got := s.AdvertiseAddr(); got != loopHTTP {
		t.Errorf("AdvertiseAddr() = %q, want %q", got, loopHTTP)
	}
	if got, _ := s.Manager().Leader(); got != loopHTTP {
		t.Errorf("Leader() = %q, want %q", got, loopHTTP)
	}
	if got := s.Raft().Addr(); got != loopRaft {
		t.Errorf("raft advertises %q, want %q", got, loopRaft)
	}
	for _, m := range s.Pool().Members() {
		if m.Meta.API != loopHTTP || m.Meta.RaftAddr != loopRaft || !strings.HasPrefix(m.Addr, "127.0.0.1:") {
			t.Errorf("gossip member %s: addr %q, meta API %q, raft %q; want 127.0.0.1, %q, %q", m.Name, m.Addr, m.Meta.API, m.Meta.RaftAddr, loopHTTP, loopRaft)
		}
	}
	resp, err := http.Get("http://" + loopHTTP + "/cluster")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Cube-Leader"); resp.StatusCode != http.StatusOK || got != loopHTTP {
		t.Fatalf("GET /cluster: %d, X-Cube-Leader %q; want 200 and %q", resp.StatusCode, got, loopHTTP)
	}
}

// GET /cluster names the build the answering manager runs, and the
// version each manager gossips (cube members -o wide shows it).
func TestServer_ClusterShowsVersions(t *testing.T) {
	cfg := testServerConfig(t, "m1", t.TempDir())
	cfg.Peers = []cluster.Peer{{ID: "m1", Addr: cfg.RaftAddr}}
	cfg.Manager.Version = "v7.7.7 0123456789ab"
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitLeading(t, s)
	c, err := api.NewClient([]string{s.Addr()}, api.ClientOptions{RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != cfg.Manager.Version {
		t.Errorf("GET /cluster Version = %q; want %q", info.Version, cfg.Manager.Version)
	}
	var gossiped []string
	for _, m := range info.Members {
		gossiped = append(gossiped, m.Name+"="+m.Version)
	}
	if want := "manager-m1=" + cfg.Manager.Version; !slices.Contains(gossiped, want) {
		t.Errorf("gossip members %q; want %q among them", gossiped, want)
	}
}

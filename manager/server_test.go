package manager

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	for name, mod := range map[string]func(*ServerConfig){
		"no ID":       func(c *ServerConfig) { c.ID = "" },
		"no data dir": func(c *ServerConfig) { c.DataDir = "" },
		"no HTTP":     func(c *ServerConfig) { c.HTTPAddr = "" },
		"no raft":     func(c *ServerConfig) { c.RaftAddr = "" },
		"no gossip":   func(c *ServerConfig) { c.GossipAddr = "" },
	} {
		c := testServerConfig(t, "m1", t.TempDir())
		mod(&c)
		if _, err := NewServer(c); err == nil {
			t.Errorf("%s: NewServer accepted it", name)
		}
	}
}

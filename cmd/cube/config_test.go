package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/manager"
	"github.com/cube-orch/cube/worker"
	"github.com/spf13/cobra"
)

// clearEnv unsets (sets empty, which counts as unset) every CUBE_* variable
// the node commands read, so the tests do not depend on the caller's.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, s := range []fileSchema{managerFile, workerFile} {
		for _, f := range s.env {
			t.Setenv(envName(f), "")
		}
	}
}

// writeFile writes an agent config file and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.hcl")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseOnly makes cmd parse its flags, file and environment and stop there.
func parseOnly(cmd *cobra.Command, args []string) error {
	cmd.RunE = func(*cobra.Command, []string) error { return nil }
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	return cmd.Execute()
}

func managerConfig(t *testing.T, args ...string) (manager.ServerConfig, error) {
	t.Helper()
	cmd, m := newManagerCmdFlags()
	if err := parseOnly(cmd, args); err != nil {
		return manager.ServerConfig{}, err
	}
	return m.config()
}

func workerConfig(t *testing.T, args ...string) (worker.AgentConfig, error) {
	t.Helper()
	cmd, w := newWorkerCmdFlags()
	if err := parseOnly(cmd, args); err != nil {
		return worker.AgentConfig{}, err
	}
	return w.config()
}

// Without a file the flags keep their defaults (scripts/cluster.sh and
// test/procs.go rely on them).
func TestConfig_FlagsAloneKeepTheirDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := managerConfig(t, "--id", "m1", "--data", "/tmp/m1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:5556" || cfg.RaftAddr != "127.0.0.1:6556" || cfg.GossipAddr != "127.0.0.1:6557" || cfg.Advertise != "" {
		t.Errorf("manager defaults: http %q raft %q gossip %q advertise %q", cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr, cfg.Advertise)
	}
	w, err := workerConfig(t, "--data", "/tmp/w1")
	if err != nil {
		t.Fatal(err)
	}
	if w.HTTPAddr != "127.0.0.1:5555" || w.GossipAddr != "" || w.Worker.KeepEnded != worker.DefaultConfig().KeepEnded {
		t.Errorf("worker defaults: http %q gossip %q keep-ended %s", w.HTTPAddr, w.GossipAddr, w.Worker.KeepEnded)
	}
	if _, err := managerConfig(t, "--data", "/tmp/m1"); err == nil || !strings.Contains(err.Error(), "id") {
		t.Errorf("manager without --id: %v, want the required-flag error", err)
	}
}

func TestConfig_ManagerFileOnly(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, `
id       = "m2"
data_dir = "/var/lib/cube/m2"
bind_addr      = "0.0.0.0"
advertise_addr = "10.0.0.12"
ports {
  http = 5000
  raft = 5001
}
advertise {
  gossip = "gossip.example:7000"
}
peers     = ["m1=10.0.0.11:6556", "m2=10.0.0.12:5001"]
join      = ["10.0.0.11:6557"]
fast      = true
scheduler = "roundrobin"
gc_interval         = "1m"
task_gc_threshold   = "2h"
worker_gc_threshold = "3h"
max_tasks           = 500
max_event_streams   = 7
scheduled_timeout = "15m"
`)
	cfg, err := managerConfig(t, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	want := manager.FastServerConfig().Raft.HeartbeatTimeout
	for _, c := range []struct{ name, got, want string }{
		{"ID", cfg.ID, "m2"},
		{"DataDir", cfg.DataDir, "/var/lib/cube/m2"},
		{"HTTPAddr", cfg.HTTPAddr, "0.0.0.0:5000"},
		{"RaftAddr", cfg.RaftAddr, "0.0.0.0:5001"},
		{"GossipAddr (bind_addr, default port)", cfg.GossipAddr, "0.0.0.0:6557"},
		{"Advertise", cfg.Advertise, "10.0.0.12"},
		{"GossipAdvertise", cfg.GossipAdvertise, "gossip.example:7000"},
		{"Seeds", strings.Join(cfg.Seeds, ","), "10.0.0.11:6557"},
		{"Scheduler", cfg.Manager.Scheduler, "roundrobin"},
		{"GCInterval", cfg.Manager.GCInterval.String(), "1m0s"},
		{"TaskGCThreshold", cfg.Manager.TaskGCThreshold.String(), "2h0m0s"},
		{"WorkerGCThreshold", cfg.Manager.WorkerGCThreshold.String(), "3h0m0s"},
		{"MaxTasks", strconv.Itoa(cfg.Manager.MaxTasks), "500"},
		{"MaxEventStreams", strconv.Itoa(cfg.Manager.MaxEventStreams), "7"},
		{"ScheduledTimeout", cfg.Manager.ScheduledTimeout.String(), "15m0s"},
		{"fast (heartbeat)", cfg.Raft.HeartbeatTimeout.String(), want.String()},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if want := []cluster.Peer{{ID: "m1", Addr: "10.0.0.11:6556"}, {ID: "m2", Addr: "10.0.0.12:5001"}}; !slices.Equal(cfg.Peers, want) {
		t.Errorf("Peers = %v, want %v", cfg.Peers, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// Defaults < file < environment < command line.
func TestConfig_Precedence(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, `
name       = "from-file"
data_dir   = "/file"
bind_addr  = "127.0.0.2"
ports {
  http   = 5100
  gossip = 5101
}
keep_ended = "2h"
log_level  = "debug"
join       = ["127.0.0.9:1"]
`)
	t.Setenv("CUBE_DATA", "/env")
	t.Setenv("CUBE_HTTP", "127.0.0.3:5200")
	t.Setenv("CUBE_NAME", "from-env")
	cfg, err := workerConfig(t, "--config", path, "--name", "from-flag")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"name: flag over env and file", cfg.Worker.Name, "from-flag"},
		{"data: env over file", cfg.Worker.DataDir, "/env"},
		{"http: env over file", cfg.HTTPAddr, "127.0.0.3:5200"},
		{"gossip: file over default", cfg.GossipAddr, "127.0.0.2:5101"},
		{"keep_ended: file over default", cfg.Worker.KeepEnded.String(), (2 * time.Hour).String()},
		{"join: file", strings.Join(cfg.Seeds, ","), "127.0.0.9:1"},
		{"stop-grace: default", cfg.Worker.StopGrace.String(), worker.DefaultConfig().StopGrace.String()},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

// Unknown keys and bad values name the file, the line and the key.
func TestConfig_FileErrorsNameFileLineAndKey(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		name, body string
		line       string // "path:LINE"
		want       string
	}{
		{"unknown key", "name = \"w\"\n\nbogus = 1\n", ":3,", "bogus"},
		{"manager key in a worker file", "id = \"m1\"\n", ":1,", "id"},
		{"unknown port", "ports {\n  raft = 1\n}\n", ":2,", "raft"},
		{"string for a number", "\ncpu = \"many\"\n", ":2,", "cpu"},
		{"bad duration", "\n\nkeep_ended = \"3 days\"\n", ":3,", "keep_ended"},
		{"number for a list", "join = 5\n", ":1,", "join"},
		{"two ports blocks", "ports {\n}\nports {\n}\n", ":3,", "ports"},
		{"syntax", "name = \n", ":1,", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.body)
			_, err := workerConfig(t, "--config", path, "--data", "/d")
			if err == nil || !strings.Contains(err.Error(), path+tc.line) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("file %q: error %v; want one naming %s%s and %q", tc.body, err, path, tc.line, tc.want)
			}
		})
	}
	if _, err := workerConfig(t, "--config", "/no/such/file.hcl", "--data", "/d"); err == nil || !strings.Contains(err.Error(), "/no/such/file.hcl") {
		t.Errorf("missing file: %v", err)
	}
}

// The example files parse into valid configs with the addresses they
// advertise.
func TestConfig_ExampleFilesParse(t *testing.T) {
	clearEnv(t)
	m, err := managerConfig(t, "--config", "../../examples/manager.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("examples/manager.hcl: %v", err)
	}
	if m.ID != "m1" || m.HTTPAddr != "0.0.0.0:5556" || m.Advertise != "10.0.0.11" || len(m.Peers) != 3 {
		t.Errorf("examples/manager.hcl: %+v", m)
	}
	w, err := workerConfig(t, "--config", "../../examples/worker.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Validate(); err != nil {
		t.Errorf("examples/worker.hcl: %v", err)
	}
	if w.Worker.Name != "w1" || w.GossipAddr != "0.0.0.0:6555" || w.Advertise != "10.0.0.21" || w.Worker.KeepEnded != 24*time.Hour {
		t.Errorf("examples/worker.hcl: %+v", w)
	}
}

package main

import (
	"os"
	"runtime/debug"
	"time"

	"github.com/cube-orch/cube/manager"
	"github.com/spf13/cobra"
)

// managerFlags are what the flags (and the config file and environment
// beneath them) of cube manager fill.
type managerFlags struct {
	o                                  manager.ServerConfig
	fast                               bool
	peers, seeds, pprofAddr, scheduler string
	log                                logFlags
	scheduledTimeout                   time.Duration
	sec                                agentSecurity
	// Garbage collection and bounds (manager.Config).
	gcInterval, taskGC, workerGC time.Duration
	maxTasks, maxStreams         int
}

// config builds the server's config from the flags.
func (m *managerFlags) config() (manager.ServerConfig, error) {
	peerList, err := parsePeers(m.peers)
	if err != nil {
		return manager.ServerConfig{}, err
	}
	o := m.o
	cfg := manager.DefaultServerConfig()
	if m.fast {
		cfg = manager.FastServerConfig()
	}
	cfg.ID, cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr, cfg.DataDir = o.ID, o.HTTPAddr, o.RaftAddr, o.GossipAddr, o.DataDir
	cfg.Advertise, cfg.HTTPAdvertise, cfg.RaftAdvertise, cfg.GossipAdvertise = o.Advertise, o.HTTPAdvertise, o.RaftAdvertise, o.GossipAdvertise
	cfg.Peers, cfg.Seeds, cfg.SourceIP = peerList, splitList(m.seeds), o.SourceIP
	cfg.Manager.Scheduler = m.scheduler
	cfg.Manager.Version = gossipVersion(buildVersion(version, commit, debug.ReadBuildInfo))
	cfg.Manager.GCInterval, cfg.Manager.TaskGCThreshold, cfg.Manager.WorkerGCThreshold = m.gcInterval, m.taskGC, m.workerGC
	cfg.Manager.MaxTasks, cfg.Manager.MaxEventStreams = m.maxTasks, m.maxStreams
	if m.scheduledTimeout != 0 {
		cfg.Manager.ScheduledTimeout = m.scheduledTimeout
	}
	if cfg.Logger, err = m.log.logger(); err != nil {
		return manager.ServerConfig{}, err
	}
	return cfg, nil
}

func newManagerCmd() *cobra.Command {
	cmd, _ := newManagerCmdFlags()
	return cmd
}

// newManagerCmdFlags returns cube manager and what its flags fill.
func newManagerCmdFlags() (*cobra.Command, *managerFlags) {
	m := &managerFlags{}
	o := &m.o
	var configPath string
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run a manager: one replica of the control plane",
		Long: `Run a manager.

Three or more managers replicate the task database through Raft; the leader
schedules tasks, dispatches them to workers and follows what they report. Any
manager serves the whole manager API on --http (writes are forwarded to the
leader):

  POST /tasks  GET /tasks  GET /tasks/{id}  DELETE /tasks/{id}
  GET /nodes   GET /cluster   (?consistent for linearizable reads)
  GET /health/live  GET /health/ready   (probes: 200 or 503, no credentials)
  GET /metrics      (Prometheus' text format; role read)

Start the initial managers with the same --peers list (every manager's
ID=raft address, its own included); they bootstrap the cluster together on
first start and ignore --peers once they hold state. --join names gossip
addresses of other nodes; managers and workers share one gossip pool.

To run on separate machines, bind every interface and say what to advertise:
--http 0.0.0.0:5556 --raft 0.0.0.0:6556 --gossip 0.0.0.0:6557 --advertise
10.0.0.5 (or per address: --advertise-http, --advertise-raft,
--advertise-gossip). A wildcard bind without an advertised address is
refused. Host names are accepted wherever an address is.

Settings can come from an agent config file in HCL (--config FILE, one
file per node, as Nomad's and Consul's; see examples/manager.hcl) and from
the environment; precedence, lowest first: defaults, the file, the
environment, flags given on the command line. Environment variables:` + envHelp(managerFile) + `

Data lives in --data: raft log, stable store and snapshots. Keep --id and
--raft the same across restarts.

Garbage collection: every --gc-interval the leader removes the tasks that
ended for good (stopped, given up on, or completed under a policy that does
not restart them) more than --task-gc-threshold ago, and the workers dead
or gone for longer than --worker-gc-threshold with no live task. A task
whose container may still run is never removed. cube system gc collects
now, whatever the age. --max-tasks bounds the tasks the cluster stores
(finished ones included, until collected): beyond it POST /tasks answers
429 and stores nothing. --max-event-streams caps this manager's GET /events
streams (429 beyond).`,
		Example: `  cube manager --id m1 --http 127.0.0.1:5556 --raft 127.0.0.1:6556 --gossip 127.0.0.1:6557 \
      --data /tmp/m1 --peers m1=127.0.0.1:6556,m2=127.0.0.1:6566,m3=127.0.0.1:6576 \
      --join 127.0.0.1:6567,127.0.0.1:6577`,
		Args: cobra.NoArgs,
		// The file and the environment fill the flags not given on the
		// command line, before cobra checks the required ones.
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyConfig(cmd.Flags(), configPath, managerFile, os.LookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := m.config()
			if err != nil {
				return err
			}
			if cfg.TLS, cfg.GossipKeys, cfg.BootstrapTokenHash, err = m.sec.resolve("manager"); err != nil {
				return err
			}
			return runUntilSignal(cmd.Context(), cfg.Logger, m.pprofAddr, func() (node, error) {
				return manager.NewServer(cfg)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "agent config file (HCL, see examples/manager.hcl); flags and CUBE_* variables override it")
	f.StringVar(&o.ID, "id", "", "stable raft server ID of this manager (required)")
	f.StringVar(&o.HTTPAddr, "http", "127.0.0.1:5556", "HOST:PORT the manager API listens on (0.0.0.0 for every interface, with --advertise)")
	f.StringVar(&o.RaftAddr, "raft", "127.0.0.1:6556", "HOST:PORT raft listens on (keep it stable across restarts)")
	f.StringVar(&o.GossipAddr, "gossip", "127.0.0.1:6557", "HOST:PORT this manager's gossip (memberlist) endpoint listens on")
	f.StringVar(&o.Advertise, "advertise", "", "host (IP or name) other nodes reach this manager at, for every address (ports from --http, --raft, --gossip); required when they bind 0.0.0.0")
	f.StringVar(&o.HTTPAdvertise, "advertise-http", "", "HOST:PORT clients and other nodes reach the API at (X-Cube-Leader); default: --advertise with the --http port, else --http")
	f.StringVar(&o.RaftAdvertise, "advertise-raft", "", "HOST:PORT the other managers reach raft at (what --peers lists); default: --advertise with the --raft port, else --raft")
	f.StringVar(&o.GossipAdvertise, "advertise-gossip", "", "HOST:PORT other nodes reach gossip at; default: --advertise with the --gossip port, else --gossip")
	f.StringVar(&o.DataDir, "data", "", "data directory (required)")
	f.StringVar(&m.peers, "peers", "", "initial voters ID=HOST:PORT,... of raft (self included, at its advertised raft address) to bootstrap a new cluster; empty: wait to be added")
	f.StringVar(&m.seeds, "join", "", "comma-separated gossip addresses (HOST:PORT) of other nodes")
	f.BoolVar(&m.fast, "fast", false, "tight raft and gossip timings (failover in well under a second), as make cluster uses; default: production timings")
	f.StringVar(&o.SourceIP, "source-ip", "", "local IP outgoing connections leave from (to simulate separate machines on one host's loopback addresses; default: any)")
	f.StringVar(&m.scheduler, "scheduler", "epvm", "placement: epvm (least marginal cost) or roundrobin")
	defaults := manager.DefaultConfig()
	f.DurationVar(&m.gcInterval, "gc-interval", defaults.GCInterval, "how often the leader collects garbage (0: only on cube system gc)")
	f.DurationVar(&m.taskGC, "task-gc-threshold", defaults.TaskGCThreshold, "remove a finished task this long after it ended")
	f.DurationVar(&m.workerGC, "worker-gc-threshold", defaults.WorkerGCThreshold, "remove a worker dead or gone this long, if no live task is on it")
	f.IntVar(&m.maxTasks, "max-tasks", defaults.MaxTasks, "state quota: most tasks the cluster stores, finished ones included (0: no quota); beyond it POST /tasks gets 429")
	f.IntVar(&m.maxStreams, "max-event-streams", defaults.MaxEventStreams, "most GET /events streams this manager serves at once; beyond it 429")
	f.DurationVar(&m.scheduledTimeout, "scheduled-timeout", 0, "how long a task may stay Scheduled on a worker before the leader sends it again; after twice this long it is placed again and the copy there stopped (keep it above the workers' --start-timeout); 0: 10m, 1m with --fast")
	m.log.register(f)
	f.StringVar(&m.pprofAddr, "pprof", "", "serve Go profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6061; default: off")
	m.sec.register(f, "manager")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("data")
	return cmd, m
}

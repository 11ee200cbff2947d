package main

import (
	"os"

	"github.com/cube-orch/cube/worker"
	"github.com/spf13/cobra"
)

// workerFlags are what the flags (and the config file and environment
// beneath them) of cube worker fill.
type workerFlags struct {
	// o is filled by the flags; --fast swaps in the fast gossip profile
	// once they are parsed.
	o                                    worker.AgentConfig
	fast                                 bool
	seeds, managers, logLevel, pprofAddr string
}

// config builds the agent's config from the flags.
func (w *workerFlags) config() worker.AgentConfig {
	cfg := w.o
	if w.fast {
		cfg.Gossip = worker.FastAgentConfig().Gossip
	}
	cfg.Seeds, cfg.Managers = splitList(w.seeds), splitList(w.managers)
	cfg.Logger = newLogger(w.logLevel)
	return cfg
}

func newWorkerCmd() *cobra.Command {
	cmd, _ := newWorkerCmdFlags()
	return cmd
}

// newWorkerCmdFlags returns cube worker and what its flags fill.
func newWorkerCmdFlags() (*cobra.Command, *workerFlags) {
	w := &workerFlags{o: worker.DefaultAgentConfig()}
	o := &w.o
	var configPath string
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: the agent that runs tasks on this machine's Docker Engine",
		Long: `Run a worker agent.

The worker runs the tasks it is given as Docker containers, keeps its task
records in <data>/worker.db, follows the Docker event stream so a container
that dies is recorded at once, and serves the worker API on --http:

  POST /tasks  GET /tasks  GET /tasks/{id}  DELETE /tasks/{id}
  GET /tasks/{id}/logs  GET /stats

With --gossip it joins the cluster's gossip pool (through --join), where the
managers see it, place tasks on it and learn at once when it dies; it reports
every change of its tasks to the managers. Without --gossip it runs alone and
takes tasks straight from its API.

Containers keep running when the worker stops; a restarted worker re-adopts
them (same containers, not restarted). An ended task's record and exited
container (its logs) stay for --keep-ended, then are removed; the managers
keep the task's replicated record.

On separate machines, bind every interface and say what to advertise:
--http 0.0.0.0:5555 --gossip 0.0.0.0:6555 --advertise 10.0.0.7 (or
--advertise-http, --advertise-gossip). Host names are accepted wherever an
address is.

Settings can come from an agent config file in HCL (--config FILE, one
file per node, as Nomad's and Consul's; see examples/worker.hcl) and from
the environment; precedence, lowest first: defaults, the file, the
environment, flags given on the command line. Environment variables:` + envHelp(workerFile),
		Example: `  cube worker --name w1 --http 127.0.0.1:5555 --data /tmp/w1
  cube worker --name w1 --http 127.0.0.1:5555 --data /tmp/w1 \
      --gossip 127.0.0.1:6555 --join 127.0.0.1:6557,127.0.0.1:6567,127.0.0.1:6577`,
		Args: cobra.NoArgs,
		// The file and the environment fill the flags not given on the
		// command line, before cobra checks the required ones.
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyConfig(cmd.Flags(), configPath, workerFile, os.LookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := w.config()
			return runUntilSignal(cmd.Context(), cfg.Logger, w.pprofAddr, func() (node, error) {
				return worker.NewAgent(cfg)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "agent config file (HCL, see examples/worker.hcl); flags and CUBE_* variables override it")
	f.StringVar(&o.Worker.Name, "name", "", "worker name, stable across restarts (default: the name recorded in --data, else the host name)")
	f.StringVar(&o.HTTPAddr, "http", "127.0.0.1:5555", "HOST:PORT the worker API listens on (0.0.0.0 for every interface, with --advertise)")
	f.StringVar(&o.Advertise, "advertise", "", "host (IP or name) the managers reach this worker at, for every address (ports from --http, --gossip); required when they bind 0.0.0.0 in a cluster")
	f.StringVar(&o.HTTPAdvertise, "advertise-http", "", "HOST:PORT the managers reach the worker API at; default: --advertise with the --http port, else --http")
	f.StringVar(&o.GossipAdvertise, "advertise-gossip", "", "HOST:PORT other nodes reach gossip at; default: --advertise with the --gossip port, else --gossip")
	f.StringVar(&o.Worker.DataDir, "data", "", "data directory for the worker's task records (required)")
	f.StringVar(&o.GossipAddr, "gossip", "", "HOST:PORT this worker's gossip (memberlist) endpoint listens on; empty runs the worker alone")
	f.StringVar(&w.seeds, "join", "", "comma-separated gossip addresses of cluster nodes to join (all are tried)")
	f.StringVar(&w.managers, "managers", "", "comma-separated manager HTTP addresses for reports (default: the managers gossip knows)")
	f.BoolVar(&w.fast, "fast", false, "tight gossip timings (crash noticed in about a second), as make cluster uses; default: LAN timings")
	f.StringVar(&o.SourceIP, "source-ip", "", "local IP outgoing connections leave from (to simulate separate machines on one host's loopback addresses; default: any)")
	f.Float64Var(&o.Cpu, "cpu", 0, "CPU cores offered to tasks (default: all of the machine's)")
	f.Int64Var(&o.Memory, "memory", 0, "memory offered to tasks, in bytes (default: the machine's total)")
	f.Int64Var(&o.Disk, "disk", 0, "disk offered to tasks, in bytes (default: the data dir's file system size)")
	f.DurationVar(&o.Worker.StopGrace, "stop-grace", o.Worker.StopGrace, "time a stopped container gets between SIGTERM and SIGKILL")
	f.DurationVar(&o.Worker.PollInterval, "poll-interval", o.Worker.PollInterval, "safety-net re-inspection of running tasks (deaths are seen at once through Docker events)")
	f.DurationVar(&o.Worker.KeepEnded, "keep-ended", o.Worker.KeepEnded, "how long an ended task's record and exited container (for cube logs) stay on the worker; 0 keeps them forever")
	f.DurationVar(&o.Worker.StartTimeout, "start-timeout", o.Worker.StartTimeout, "bound on pulling, creating and starting one container")
	f.StringVar(&w.logLevel, "log-level", "info", "log level: trace, debug, info, warn or error")
	f.StringVar(&w.pprofAddr, "pprof", "", "serve Go profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; default: off")
	_ = cmd.MarkFlagRequired("data")
	return cmd, w
}

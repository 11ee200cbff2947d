package main

import (
	"fmt"
	"os"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/worker"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// workerFlags are what the flags (and the config file and environment
// beneath them) of cube worker fill.
type workerFlags struct {
	// o is filled by the flags; --fast swaps in the fast gossip profile
	// once they are parsed.
	o                          worker.AgentConfig
	fast                       bool
	seeds, managers, pprofAddr string
	labels                     []string
	log                        logFlags
	sec                        agentSecurity
}

// config builds the agent's config from the flags.
func (w *workerFlags) config() (worker.AgentConfig, error) {
	cfg := w.o
	if w.fast {
		cfg.Gossip = worker.FastAgentConfig().Gossip
	}
	cfg.Seeds, cfg.Managers = splitList(w.seeds), splitList(w.managers)
	labels, err := api.ParseLabels(w.labels)
	if err != nil {
		return cfg, fmt.Errorf("--label: %w", err)
	}
	cfg.Labels = labels
	cfg.Logger, err = w.log.logger()
	return cfg, err
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
  GET /health/live  GET /health/ready  GET /metrics

With --gossip it joins the cluster's gossip pool (through --join), where the
managers see it, place tasks on it and learn at once when it dies; it reports
every change of its tasks to the managers. Without --gossip it runs alone and
takes tasks straight from its API.

Containers keep running when the worker stops; a restarted worker re-adopts
them (same containers, not restarted). An ended task's record and exited
container (its logs) stay for --keep-ended, then are removed; the managers
keep the task's replicated record.

A task may ask for more than an ordinary container: Privileged, NetworkMode
"host", Mounts of host paths, CapAdd of Linux capabilities. By default a
worker allows none of it, and says so in its gossip: the leader places such
a task only on a worker that allows all it asks and keeps it Pending, with
the reason, while none does; a worker given one anyway fails it before any
container is created, with a reason naming the flag that would allow it.
Turn each on per worker, for the tasks that need it: --allow-privileged,
--allow-host-network, --allow-mount PREFIX (a host path prefix tasks may
bind; repeatable) and --allow-cap CAP (repeatable; ALL allows any).
Capabilities Docker grants every container (CHOWN, NET_BIND_SERVICE, ...)
need no allowance.

Labels describe the worker: --label zone=a --label disk=ssd (repeatable, or
comma-separated). They are gossiped with its capacity and shown by cube
node; the leader places a task with Constraints (["zone==a"]) only on a
worker whose labels meet them all, and ranks first the workers meeting more
of its Prefer list. A key is 1-63 letters, digits, '_', '.', '/' or '-'; a
value 1-63 characters without white space, '=', '!' or ','; at most 16
labels, 256 bytes in all (gossip metadata holds 512 bytes).

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
			cfg, err := w.config()
			if err != nil {
				return err
			}
			if cfg.TLS, cfg.GossipKeys, _, err = w.sec.resolve("worker"); err != nil {
				return err
			}
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
	f.StringVar(&o.SourceIP, "source-ip", "", "local IP outgoing connections leave from (to simulate separate machines on one host's loopback addresses; default: any)")
	w.register(f)
	f.StringVar(&w.pprofAddr, "pprof", "", "serve Go profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; default: off")
	w.sec.register(f, "worker")
	_ = cmd.MarkFlagRequired("data")
	return cmd, w
}

// register adds the flags of how a worker joins the cluster, what it offers
// and how it runs tasks: those cube worker and cube sim-workers share (each
// adds its own for its addresses, name, data directory and certificate).
func (w *workerFlags) register(f *pflag.FlagSet) {
	o := &w.o
	f.StringVar(&w.seeds, "join", "", "comma-separated gossip addresses of cluster nodes to join (all are tried)")
	f.StringVar(&w.managers, "managers", "", "comma-separated manager HTTP addresses for reports (default: the managers gossip knows)")
	f.BoolVar(&w.fast, "fast", false, "tight gossip timings (crash noticed in about a second), as make cluster uses; default: LAN timings")
	f.Float64Var(&o.Cpu, "cpu", 0, "CPU cores offered to tasks (default: all of the machine's)")
	f.Int64Var(&o.Memory, "memory", 0, "memory offered to tasks, in bytes (default: the machine's total)")
	f.Int64Var(&o.Disk, "disk", 0, "disk offered to tasks, in bytes (default: the data dir's file system size)")
	f.DurationVar(&o.Worker.StopGrace, "stop-grace", o.Worker.StopGrace, "time a stopped container gets between SIGTERM and SIGKILL")
	f.DurationVar(&o.Worker.PollInterval, "poll-interval", o.Worker.PollInterval, "safety-net re-inspection of running tasks (deaths are seen at once through Docker events)")
	f.DurationVar(&o.Worker.SweepInterval, "sweep-interval", o.Worker.SweepInterval, "how often the worker lists its containers and settles those no task record accounts for (left by a failed write or adoption)")
	f.DurationVar(&o.Worker.KeepEnded, "keep-ended", o.Worker.KeepEnded, "how long an ended task's record and exited container (for cube logs) stay on the worker; 0 keeps them forever")
	f.DurationVar(&o.Worker.StartTimeout, "start-timeout", o.Worker.StartTimeout, "bound on pulling, creating and starting one container")
	f.BoolVar(&o.Worker.AllowPrivileged, "allow-privileged", false, "let tasks run in Docker's privileged mode (Task.Privileged)")
	f.BoolVar(&o.Worker.AllowHostNetwork, "allow-host-network", false, "let tasks use the host's network stack (Task.NetworkMode \"host\")")
	f.StringSliceVar(&o.Worker.AllowMounts, "allow-mount", nil, "host path prefix tasks may bind (Task.Mounts), e.g. /srv/data: the path itself and what lies beneath it; repeatable")
	f.StringSliceVar(&o.Worker.AllowCaps, "allow-cap", nil, "Linux capability tasks may add (Task.CapAdd), e.g. NET_ADMIN, or ALL for any; repeatable")
	f.StringSliceVar(&w.labels, "label", nil, "label KEY=VALUE describing this worker, matched by tasks' Constraints and Prefer (zone==a), e.g. zone=a; repeatable")
	w.log.register(f)
}

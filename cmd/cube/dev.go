package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/manager"
	"github.com/cube-orch/cube/worker"
	"github.com/spf13/cobra"
)

func newDevCmd() *cobra.Command {
	var log logFlags
	var pprofAddr, dataDir, httpAddr, raftAddr, gossipAddr, workerHTTP, workerGossip, workerName string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a manager and a worker in one process, for a first try",
		Long: `Run a one-process development cluster: a single-manager raft cluster and
one worker, like 'nomad agent -dev'. The manager API is on 127.0.0.1:5556
(the default of every client command), the worker on 127.0.0.1:5555.
State is kept in --data, so a restarted dev cluster remembers its tasks.

cube dev is open: no TLS, no tokens, no gossip encryption, so it listens on
loopback addresses only (anyone on this machine can use it). For anything
else, run managers and workers with their certificates (make cluster).`,
		Example: `  cube dev &
  cube run -f task1.json
  cube status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, a := range []string{httpAddr, raftAddr, gossipAddr, workerHTTP, workerGossip} {
				if err := loopbackOnly(a); err != nil {
					return err
				}
			}
			logger, err := log.logger()
			if err != nil {
				return err
			}
			logger.Warn("cube dev is open: no TLS, no tokens, no gossip encryption; it listens on loopback only, for a first try")
			m := manager.FastServerConfig()
			m.ID, m.HTTPAddr, m.RaftAddr, m.GossipAddr = "dev", httpAddr, raftAddr, gossipAddr
			m.DataDir, m.Peers, m.Logger = filepath.Join(dataDir, "manager"), []cluster.Peer{{ID: "dev", Addr: raftAddr}}, logger
			w := worker.FastAgentConfig()
			w.HTTPAddr, w.GossipAddr, w.Seeds, w.Managers, w.Logger = workerHTTP, workerGossip, []string{gossipAddr}, []string{httpAddr}, logger
			w.Worker.Name, w.Worker.DataDir = workerName, filepath.Join(dataDir, "worker")
			return runUntilSignal(cmd.Context(), logger, pprofAddr,
				func() (node, error) { return manager.NewServer(m) },
				func() (node, error) { return worker.NewAgent(w) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http", "127.0.0.1:5556", "manager API address")
	f.StringVar(&raftAddr, "raft", "127.0.0.1:6556", "manager raft address")
	f.StringVar(&gossipAddr, "gossip", "127.0.0.1:6557", "manager gossip address")
	f.StringVar(&workerHTTP, "worker-http", "127.0.0.1:5555", "worker API address")
	f.StringVar(&workerGossip, "worker-gossip", "127.0.0.1:6555", "worker gossip address")
	f.StringVar(&workerName, "worker-name", "dev-worker", "worker name")
	f.StringVar(&dataDir, "data", filepath.Join(os.TempDir(), "cube-dev"), "data directory")
	log.register(f)
	f.StringVar(&pprofAddr, "pprof", "", "serve Go profiles (/debug/pprof/) on this address; default: off")
	return cmd
}

// loopbackOnly refuses an address cube dev would serve, open, beyond this
// machine.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("cube dev runs open (no TLS, no tokens) and listens on loopback addresses only, not %s; run cube manager and cube worker with certificates (make cluster) to serve beyond this machine", addr)
}

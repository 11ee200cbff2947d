package main

import (
	"os"
	"path/filepath"

	"github.com/cube-orch/cube/cluster"
	"github.com/cube-orch/cube/worker"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

func newDevCmd() *cobra.Command {
	var pprofAddr, dataDir, logLevel, httpAddr, raftAddr, gossipAddr, workerHTTP, workerGossip, workerName string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a manager and a worker in one process, for a first try",
		Long: `Run a one-process development cluster: a single-manager raft cluster and
one worker, like 'nomad agent -dev'. The manager API is on 127.0.0.1:5556
(the default of every client command), the worker on 127.0.0.1:5555.
State is kept in --data, so a restarted dev cluster remembers its tasks.`,
		Example: `  cube dev &
  cube run -f task1.json
  cube status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m := managerOpts{
				ID: "dev", HTTPAddr: httpAddr, RaftAddr: raftAddr, GossipAddr: gossipAddr,
				DataDir: filepath.Join(dataDir, "manager"), Fast: true,
				Peers: []cluster.Peer{{ID: "dev", Addr: raftAddr}},
			}
			w := workerOpts{Config: worker.DefaultConfig(), HTTPAddr: workerHTTP, GossipAddr: workerGossip,
				Seeds: []string{gossipAddr}, Managers: []string{httpAddr}, Fast: true}
			w.Config.Name, w.Config.DataDir = workerName, filepath.Join(dataDir, "worker")
			return runUntilSignal(cmd.Context(), newLogger(logLevel), pprofAddr, func(l hclog.Logger) (func(), <-chan error, error) {
				mn, err := startManager(m, l)
				if err != nil {
					return nil, nil, err
				}
				wn, err := startWorker(w, l)
				if err != nil {
					mn.stop()
					return nil, nil, err
				}
				errc := make(chan error, 2)
				go func() { errc <- <-mn.errc }()
				go func() { errc <- <-wn.errc }()
				return func() { wn.stop(); mn.stop() }, errc, nil
			})
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:5556", "manager API address")
	cmd.Flags().StringVar(&raftAddr, "raft", "127.0.0.1:6556", "manager raft address")
	cmd.Flags().StringVar(&gossipAddr, "gossip", "127.0.0.1:6557", "manager gossip address")
	cmd.Flags().StringVar(&workerHTTP, "worker-http", "127.0.0.1:5555", "worker API address")
	cmd.Flags().StringVar(&workerGossip, "worker-gossip", "127.0.0.1:6555", "worker gossip address")
	cmd.Flags().StringVar(&workerName, "worker-name", "dev-worker", "worker name")
	cmd.Flags().StringVar(&dataDir, "data", filepath.Join(os.TempDir(), "cube-dev"), "data directory")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn or error")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go profiles (/debug/pprof/) on this address; default: off")
	return cmd
}

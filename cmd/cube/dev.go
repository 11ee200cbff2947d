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
	var dataDir, logLevel string
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
				ID: "dev", HTTPAddr: "127.0.0.1:5556", RaftAddr: "127.0.0.1:6556", GossipAddr: "127.0.0.1:6557",
				DataDir: filepath.Join(dataDir, "manager"), Fast: true,
				Peers: []cluster.Peer{{ID: "dev", Addr: "127.0.0.1:6556"}},
			}
			w := workerOpts{Config: worker.DefaultConfig(), HTTPAddr: "127.0.0.1:5555", GossipAddr: "127.0.0.1:6555",
				Seeds: []string{"127.0.0.1:6557"}, Managers: []string{"127.0.0.1:5556"}, Fast: true}
			w.Config.Name, w.Config.DataDir = "dev-worker", filepath.Join(dataDir, "worker")
			return runUntilSignal(cmd.Context(), newLogger(logLevel), func(l hclog.Logger) (func(), <-chan error, error) {
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
	cmd.Flags().StringVar(&dataDir, "data", filepath.Join(os.TempDir(), "cube-dev"), "data directory")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn or error")
	return cmd
}

// Command cube is Cube's single binary: the worker agent today, the manager
// and the client commands as they arrive. main only wires components together.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cube:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cube",
		Short: "Cube: a container orchestrator whose control plane survives machine loss",
		Long: `Cube runs tasks (Docker containers) on a fleet of workers.

A worker runs tasks on its machine's Docker Engine and serves the worker API:
  cube worker --name w1 --http 127.0.0.1:5555 --data /var/lib/cube/w1`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newWorkerCmd())
	return root
}

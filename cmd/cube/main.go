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
		Long: `Cube runs tasks (Docker containers) on a fleet of workers. Three or more
managers replicate the task database through Raft; the leader places tasks on
workers and follows them; any manager answers the API.

Start:   cube manager ...   cube worker ...   (or 'cube dev' for one process)
Use:     cube run -f task.json   cube status   cube stop ID   cube node   cube members`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newManagerCmd(), newWorkerCmd(), newDevCmd())
	// The client commands; each takes -m/--manager and --timeout (client.go).
	cf := &clientFlags{}
	root.AddCommand(newRunCmd(cf), newStopCmd(cf), newStatusCmd(cf), newNodeCmd(cf),
		newMembersCmd(cf), newEventsCmd(cf), newLogsCmd(cf))
	return root
}

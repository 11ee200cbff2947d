// Command cube is Cube's single binary: the worker agent today, the manager
// and the client commands as they arrive. main only wires components together.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func main() {
	stopClock := startTestClock()
	err := newRootCmd().Execute()
	stopClock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cube:", err)
		os.Exit(exitCode(err)) // 1, or what a wait says (wait.go)
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
Use:     cube run -f task.json   cube status   cube stop ID   cube node   cube members
Serve:   cube service create|ls|inspect|scale|update|rollback|rm   cube apply -f FILE
Access:  cube token create --name NAME --role read|submit|operator
Operate: cube operator snapshot save|restore|inspect   cube operator raft list-peers

Listings take -o table (the default), -o wide (more columns) or -o json (the
API's objects, for scripts); cube status --watch redraws. cube run --wait and
cube node drain --wait follow what they started until it is done; cube logs -f
follows a task's output. Shell completion: cube completion bash|zsh|fish|powershell
(cube completion bash --help says how to load it).`,
		Version:       buildVersion(version, commit, debug.ReadBuildInfo).String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newManagerCmd(), newWorkerCmd(), newDevCmd(), newTLSCmd(), newKeygenCmd(), newVersionCmd())
	// Hidden: the control-plane benchmark's simulated workers (make scale).
	root.AddCommand(newSimWorkersCmd())
	// The client commands; each takes -m/--manager and --timeout (client.go).
	cf := &clientFlags{}
	root.AddCommand(newRunCmd(cf), newStopCmd(cf), newStatusCmd(cf), newNodeCmd(cf),
		newMembersCmd(cf), newEventsCmd(cf), newLogsCmd(cf))
	root.AddCommand(newServiceCmd(cf), newApplyCmd(cf))
	root.AddCommand(newTokenCmd(cf), newGossipCmd(cf), newOperatorCmd(cf), newSystemCmd(cf))
	return root
}

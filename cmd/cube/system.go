package main

import (
	"context"
	"fmt"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newSystemCmd is cube system, the cluster's housekeeping; its one
// subcommand is gc.
func newSystemCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "system",
		Short: "Cluster housekeeping (garbage collection)",
		Args:  cobra.NoArgs,
	}
	gc := &cobra.Command{
		Use:   "gc",
		Short: "Remove finished tasks and departed workers from the cluster's state now",
		Long: `Run a garbage collection now, as "nomad system gc" does.

The leader removes from the replicated state, whatever their age:
  - every task that ended for good: stopped, given up on, or completed under
    a restart policy that does not run it again ("on-failure", "no");
  - every worker that gossip saw die or leave, if no live task is on it.
A task whose container may still run (a stop not yet confirmed by its
worker) is kept, as is every task that is to run again. Removed tasks no
longer appear in cube status and GET /tasks, and free room under the state
quota (--max-tasks).

The leader also collects on its own, every --gc-interval, what is older than
--task-gc-threshold and --worker-gc-threshold (cube manager --help). Needs role
operator.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.CollectGarbage(ctx)
				if err != nil {
					return fmt.Errorf("garbage collection: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %d finished task(s) and %d departed worker(s)\n", res.Tasks, res.Workers)
				return nil
			})
		},
	}
	cmd.AddCommand(gc)
	cf.register(cmd) // gc inherits the flags
	return cmd
}

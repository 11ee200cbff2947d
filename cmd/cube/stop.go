package main

import (
	"context"
	"fmt"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

func newStopCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stop ID|PREFIX|NAME",
		Short: "Stop a task (from any state that has not ended): by ID, a unique ID prefix, or a unique name",
		Args:  oneTaskRef,
		// Only tasks that have not ended for good: nothing to stop in the rest.
		ValidArgsFunction: cf.completeTasks(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				id, err := resolveTaskID(ctx, c, args[0])
				if err != nil {
					return err
				}
				t, err := c.StopTask(ctx, id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stop of task %s committed (state %s)\n", t.ID, t.State)
				return nil
			})
		},
	}
	cf.register(cmd)
	return cmd
}

package main

import (
	"context"
	"fmt"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

func newStopCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a task (from any state that has not ended)",
		Args:  oneTaskID,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := uuid.MustParse(args[0]) // checked by oneTaskID
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
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

package main

import (
	"context"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

func newLogsCmd(cf *clientFlags) *cobra.Command {
	var tail int
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Show a task's container output (read through its worker)",
		Args:  oneTaskID,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := uuid.MustParse(args[0]) // checked by oneTaskID
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				out, err := c.Logs(ctx, id, tail)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			})
		},
	}
	cmd.Flags().IntVar(&tail, "tail", 0, "show only the last N lines (0: all)")
	cf.register(cmd)
	return cmd
}

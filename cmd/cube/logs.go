package main

import (
	"context"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

func newLogsCmd(cf *clientFlags) *cobra.Command {
	var tail int
	cmd := &cobra.Command{
		Use:   "logs ID|PREFIX|NAME",
		Short: "Show a task's container output (read through its worker)",
		Args:  oneTaskRef,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				id, err := resolveTaskID(ctx, c, args[0])
				if err != nil {
					return err
				}
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

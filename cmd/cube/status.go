package main

import (
	"context"
	"fmt"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

func newStatusCmd(cf *clientFlags) *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List tasks: state, worker, restarts and the reason of the last failure",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				tasks, err := c.Tasks(ctx, consistent)
				if err != nil {
					return err
				}
				w := newTable(cmd.OutOrStdout())
				fmt.Fprintln(w, "ID\tNAME\tCREATED\tSTATE\tCONTAINERNAME\tIMAGE\tWORKER\tPORTS\tRESTARTS\tREASON")
				for _, t := range tasks {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.Name, ago(t.SubmitTime), t.State,
						shortID(t.ContainerID), t.Image, t.Worker, portsText(t.HostPorts), t.RestartCount, t.Reason)
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "linearizable read through the leader")
	cf.register(cmd)
	return cmd
}

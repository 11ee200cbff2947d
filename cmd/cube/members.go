package main

import (
	"context"
	"fmt"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newMembersCmd is cube members (raft servers and gossip members) with its
// subcommand remove.
func newMembersCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the raft servers (leader marked) and the gossip members with their state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				info, err := c.Cluster(ctx)
				if err != nil {
					return err
				}
				w := newTable(cmd.OutOrStdout())
				fmt.Fprintf(w, "raft (term %d, answered by %s at index %d)\n", info.Term, info.Self, info.AppliedIndex)
				fmt.Fprintln(w, "ID\tRAFT ADDR\tAPI\tVOTER\tLEADER")
				for _, s := range info.Servers {
					lead := ""
					if s.Leader {
						lead = "*"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\n", s.ID, s.Addr, s.API, s.Voter, lead)
				}
				fmt.Fprintln(w, "\ngossip")
				fmt.Fprintln(w, "NAME\tADDR\tROLE\tAPI\tSTATE")
				for _, m := range info.Members {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.Role, m.API, m.State)
				}
				return w.Flush()
			})
		},
	}
	cf.register(cmd) // remove inherits the flags
	cmd.AddCommand(newMembersRemoveCmd(cf))
	return cmd
}

func newMembersRemoveCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a manager from the raft configuration (before retiring its machine)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				if err := c.RemoveManager(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "manager %s removed from the raft configuration\n", args[0])
				return nil
			})
		},
	}
}

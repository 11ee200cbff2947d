package main

import (
	"context"
	"fmt"
	"io"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newMembersCmd is cube members (raft servers and gossip members) with its
// subcommand remove.
func newMembersCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the raft servers (leader marked) and the gossip members with their state and, for managers, the command types they apply",
		Long: `List the raft servers (the managers, the leader marked) and the gossip members
(managers and workers) with their state and, for managers, the command types
they apply. -o json prints GET /cluster's object as the API returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				info, err := c.Cluster(ctx)
				if err != nil {
					return err
				}
				return printObject(cmd.OutOrStdout(), *output, info, func(w io.Writer) {
					fmt.Fprintf(w, "raft (term %d, answered by %s at index %d)\n", info.Term, info.Self, info.AppliedIndex)
					fmt.Fprintln(w, "ID\tRAFT ADDR\tAPI\tVOTER\tLEADER\tPROMOTION")
					for _, s := range info.Servers {
						lead := ""
						if s.Leader {
							lead = "*"
						}
						promo := s.Promotion
						if promo == "" {
							promo = "-"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\n", s.ID, s.Addr, s.API, s.Voter, lead, promo)
					}
					fmt.Fprintln(w, "\ngossip")
					// COMMANDS: the replicated command types a manager
					// applies; a rolling upgrade is done when all agree.
					fmt.Fprintln(w, "NAME\tADDR\tROLE\tAPI\tSTATE\tCOMMANDS")
					for _, m := range info.Members {
						cmds := "-"
						if m.MaxCommand > 0 {
							cmds = fmt.Sprintf("up to %d", m.MaxCommand)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.Role, m.API, m.State, cmds)
					}
				})
			})
		},
	}
	output = addOutputFlag(cmd) // cube members' own: not inherited by remove
	cf.register(cmd)            // remove inherits the flags
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

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
they apply. -o wide adds to each raft server its gossip state, the command
types it applies and the build it runs (cube version). -o json prints GET /cluster's object as the API returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				info, err := c.Cluster(ctx)
				if err != nil {
					return err
				}
				return printObject(cmd.OutOrStdout(), *output, info, func(w io.Writer) {
					fmt.Fprintf(w, "raft (term %d, answered by %s at index %d)\n", info.Term, info.Self, info.AppliedIndex)
					writeColumns(w, *output == outputWide, info.Servers, serverColumns(info))
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
	output = addListOutputFlag(cmd) // cube members' own: not inherited by remove
	cf.register(cmd)                // remove inherits the flags
	cmd.AddCommand(newMembersRemoveCmd(cf))
	return cmd
}

// serverColumns are the columns of cube members' raft table; -o wide adds
// each server's gossip state and the command types it applies, found by
// its API address among info's gossip members.
func serverColumns(info api.ClusterInfo) []column[api.RaftServer] {
	member := func(s api.RaftServer) (api.GossipMember, bool) {
		for _, m := range info.Members {
			if m.Role == "manager" && s.API != "" && m.API == s.API {
				return m, true
			}
		}
		return api.GossipMember{}, false
	}
	return []column[api.RaftServer]{
		{head: "ID", cell: func(s api.RaftServer) string { return s.ID }},
		{head: "RAFT ADDR", cell: func(s api.RaftServer) string { return s.Addr }},
		{head: "API", cell: func(s api.RaftServer) string { return s.API }},
		{head: "VOTER", cell: func(s api.RaftServer) string { return fmt.Sprint(s.Voter) }},
		{head: "LEADER", cell: func(s api.RaftServer) string {
			if s.Leader {
				return "*"
			}
			return ""
		}},
		{head: "PROMOTION", cell: func(s api.RaftServer) string { return orDash(s.Promotion) }},
		{head: "GOSSIP", show: wideOnly, cell: func(s api.RaftServer) string {
			if m, ok := member(s); ok {
				return m.State
			}
			return "-"
		}},
		{head: "COMMANDS", show: wideOnly, cell: func(s api.RaftServer) string {
			if m, ok := member(s); ok && m.MaxCommand > 0 {
				return fmt.Sprintf("up to %d", m.MaxCommand)
			}
			return "-"
		}},
		{head: "VERSION", show: wideOnly, cell: func(s api.RaftServer) string {
			if m, ok := member(s); ok && m.Version != "" {
				return m.Version
			}
			return "-"
		}},
	}
}

func newMembersRemoveCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "remove ID",
		Short:             "Remove a manager from the raft configuration (before retiring its machine)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cf.completeManagers(),
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

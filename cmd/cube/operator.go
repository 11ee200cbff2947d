package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/spf13/cobra"
)

// newOperatorCmd is cube operator: the day-two operations on the managers'
// replicated state (snapshot save|restore|inspect, raft list-peers|
// remove-peer|recover), named as Consul's and Nomad's.
func newOperatorCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Back up and restore the state, list and remove raft peers, recover a lost majority",
		Long: `Operations on the managers' replicated state, for operators (role operator):

  cube operator snapshot save FILE      back up the whole state (tasks, workers, tokens)
  cube operator snapshot restore FILE   replace the whole state with a backup's
  cube operator snapshot inspect FILE   print what a backup holds (no manager needed)
  cube operator raft list-peers         the raft servers: ID, address, voter, leader, state
  cube operator raft remove-peer ID|ADDR   remove a manager from the raft configuration
  cube operator raft recover --data DIR --peers ID=ADDR   write peers.json on a stopped
                                        manager to recover from a lost majority

See the README, Operations, for the runbooks.`,
		Args: cobra.NoArgs,
	}
	// Only the commands that call a manager take -m and --timeout;
	// snapshot inspect and raft recover work on files.
	cmd.AddCommand(newSnapshotCmd(cf), newRaftCmd(cf))
	return cmd
}

func newRaftCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raft",
		Short: "List and remove the managers' raft peers; recover a cluster that lost its majority",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newListPeersCmd(cf), newRemovePeerCmd(cf), newRecoverCmd())
	return cmd
}

// peer is one line of cube operator raft list-peers.
type peer struct {
	ID      string
	Address string
	API     string `json:",omitempty"`
	Voter   bool
	Leader  bool
	// State is leader, follower or non-voter (waiting to be promoted),
	// with gossip's view of the manager when it is not alive.
	State string
}

// peersOf lists the raft servers of info with their state.
func peersOf(info api.ClusterInfo) []peer {
	gossip := map[string]string{}
	for _, m := range info.Members {
		if m.Role == "manager" {
			gossip[m.API] = m.State
		}
	}
	out := make([]peer, 0, len(info.Servers))
	for _, s := range info.Servers {
		p := peer{ID: s.ID, Address: s.Addr, API: s.API, Voter: s.Voter, Leader: s.Leader}
		switch {
		case s.Leader:
			p.State = "leader"
		case s.Voter:
			p.State = "follower"
		default:
			p.State = "non-voter"
		}
		if g, ok := gossip[s.API]; s.API == "" || !ok {
			p.State += " (unknown to gossip)"
		} else if g != api.NodeAlive {
			p.State += " (" + g + ")"
		}
		out = append(out, p)
	}
	return out
}

func newListPeersCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "list-peers",
		Short: "List the raft servers: ID, address, voter, leader, state",
		Long: `List the managers in the raft configuration, as the answering manager sees it
(it answers even when no leader is elected, which is when you need it most).
STATE is leader, follower or non-voter (a manager that joined and waits to be
promoted), followed by gossip's view when the manager is not alive: a voter
marked (dead) is one to remove (cube operator raft remove-peer) or, if a
majority is dead for good, to recover from (cube operator raft recover).
-o json prints the same rows as a JSON array of {ID, Address, API, Voter,
Leader, State}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				info, err := c.Cluster(ctx)
				if err != nil {
					return err
				}
				peers := peersOf(info)
				return printColumns(cmd.OutOrStdout(), *output, peers, []column[peer]{
					{head: "ID", cell: func(p peer) string { return p.ID }},
					{head: "ADDRESS", cell: func(p peer) string { return p.Address }},
					{head: "API", show: wideOnly, cell: func(p peer) string { return orDash(p.API) }},
					{head: "VOTER", cell: func(p peer) string { return fmt.Sprint(p.Voter) }},
					{head: "LEADER", cell: func(p peer) string { return fmt.Sprint(p.Leader) }},
					{head: "STATE", cell: func(p peer) string { return p.State }},
				})
			})
		},
	}
	output = addListOutputFlag(cmd)
	cf.register(cmd)
	return cmd
}

func newRemovePeerCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove-peer ID|ADDR",
		Short: "Remove a manager from the raft configuration, by raft ID or raft address",
		Long: `Remove a manager from the raft configuration (the same operation as cube
members remove), naming it by its raft ID or its raft address as list-peers
shows them. The leader refuses (409) a removal that would leave fewer reachable
voters than a quorum of those that remain, or the last voter. Use it to retire
a manager's machine, or to drop a dead manager before adding its replacement.
With a majority lost for good there is no leader to ask: see
cube operator raft recover.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				id := args[0]
				if _, _, err := net.SplitHostPort(id); err == nil {
					info, err := c.Cluster(ctx)
					if err != nil {
						return err
					}
					id = ""
					for _, s := range info.Servers {
						if s.Addr == args[0] {
							id = s.ID
						}
					}
					if id == "" {
						return fmt.Errorf("no raft server has the address %s (see cube operator raft list-peers)", args[0])
					}
				}
				if err := c.RemoveManager(ctx, id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "manager %s removed from the raft configuration\n", id)
				return nil
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func newRecoverCmd() *cobra.Command {
	var dataDir, peers string
	cmd := &cobra.Command{
		Use:   "recover --data DIR --peers ID=ADDR[,ID=ADDR...]",
		Short: "Write peers.json on a stopped manager to recover a cluster that lost its majority",
		Long: `Recover a cluster that lost a majority of its managers for good (machines and
data gone): with no quorum there is no leader, and nothing can be written or
removed. This is the peers.json recovery Consul and Nomad document.

On ONE surviving manager, stopped, run this with the manager's --data directory
and the new configuration: usually that manager alone, at its raft address.
It checks the data directory holds raft state and is not in use, and writes
DIR/raft/peers.json. At its next start the manager finds the file, makes the
configuration it lists the current one (raft.RecoverCluster, keeping every
entry the survivor has, committed or not), renames the file peers.json.applied
and logs what it did. It then leads alone, with every task it knew; start new
managers with --join (and no --peers) to grow back to three.

Use the survivor that was most up to date (highest last index in its log) if
several survive; never start two managers that recovered separately into one
cluster. Entries that only the lost managers had are gone.`,
		Example: `  cube operator raft recover --data /var/lib/cube/m1 --peers m1=10.0.0.5:6556`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := parsePeers(peers)
			if err != nil {
				return err
			}
			path, err := cluster.WritePeersFile(filepath.Join(dataDir, "raft"), list)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d server(s)); start the manager: it applies the file once, then renames it\n", path, len(list))
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "the stopped manager's data directory (its --data)")
	cmd.Flags().StringVar(&peers, "peers", "", "the new raft configuration, ID=HOST:PORT,... (raft addresses; usually the survivor alone)")
	_ = cmd.MarkFlagRequired("data")
	_ = cmd.MarkFlagRequired("peers")
	return cmd
}

package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newGossipCmd is cube gossip, whose one subcommand, keyring, manages the
// gossip encryption keys of every node at once, as consul keyring does.
func newGossipCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip",
		Short: "Manage the gossip pool (its encryption keys)",
		Args:  cobra.NoArgs,
	}
	keyring := &cobra.Command{
		Use:   "keyring",
		Short: "List, install, use and remove gossip encryption keys on every node",
		Long: `Rotate the gossip encryption key without downtime, one command at a time:

  cube keygen                          # prints a new key, NEW
  cube gossip keyring install NEW      # every node accepts NEW
  cube gossip keyring use NEW          # every node encrypts with NEW
  cube gossip keyring remove OLD       # no node accepts OLD any more

The manager that receives a command applies it to every member of the gossip
pool (itself, the other managers, every worker). Each node keeps its keyring
in its data dir, where it takes precedence over the gossip keys of its
configuration at the next start. Run each step until every node reports ok
before the next one: a node that misses "install" cannot hear the others once
they "use" the new key. A dead node is reported as not reached; bring it back
(or retire it) before removing the key it still uses.`,
		Args: cobra.NoArgs,
	}
	keyring.AddCommand(newKeyringListCmd(cf),
		newKeyringOpCmd(cf, api.KeyringInstall, "Install a key on every node (each accepts it; none encrypts with it yet)"),
		newKeyringOpCmd(cf, api.KeyringUse, "Make an installed key primary on every node (each encrypts with it)"),
		newKeyringOpCmd(cf, api.KeyringRemove, "Remove a key that is no longer primary from every node"))
	cmd.AddCommand(keyring)
	cf.register(cmd) // the subcommands inherit the flags
	return cmd
}

func newKeyringListCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the keys of every node: how many nodes hold each, and use it as primary",
		Long: `List the gossip keys: for each, on how many of the nodes that answered it is
primary and installed; then the nodes that did not answer. -o json prints each
node's keyring as the API returns it (a JSON array).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				nodes, err := c.GossipKeyrings(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), *output, nodes, func(w io.Writer) {
					printKeyrings(w, nodes)
					if *output == outputWide {
						fmt.Fprintln(w)
						writeColumns(w, true, nodes, keyringColumns)
					}
				})
			})
		},
	}
	output = addListOutputFlag(cmd)
	return cmd
}

// keyringColumns are the per-node table -o wide adds to cube gossip keyring
// list: each node's primary key and how many it holds.
var keyringColumns = []column[api.NodeKeyring]{
	{head: "NODE", cell: func(n api.NodeKeyring) string { return n.Node }},
	{head: "ROLE", cell: func(n api.NodeKeyring) string { return n.Role }},
	{head: "PRIMARY", cell: func(n api.NodeKeyring) string { return orDash(n.Primary) }},
	{head: "KEYS", cell: func(n api.NodeKeyring) string {
		if n.Error != "" {
			return "-"
		}
		return strconv.Itoa(len(n.Keys))
	}},
	{head: "ERROR", cell: func(n api.NodeKeyring) string { return orDash(n.Error) }},
}

// printKeyrings shows each key with the number of nodes that use it as
// primary and that hold it, out of the nodes that answered, then the nodes
// that did not.
func printKeyrings(w io.Writer, nodes []api.NodeKeyring) {
	answered := 0
	primary, installed := map[string]int{}, map[string]int{}
	var keys []string
	for _, n := range nodes {
		if n.Error != "" {
			continue
		}
		answered++
		primary[n.Primary]++
		for _, k := range n.Keys {
			if installed[k] == 0 {
				keys = append(keys, k)
			}
			installed[k]++
		}
	}
	// The most used first: during a rotation the new key climbs the list.
	slices.SortStableFunc(keys, func(a, b string) int {
		return cmp.Or(primary[b]-primary[a], installed[b]-installed[a])
	})
	fmt.Fprintln(w, "KEY\tPRIMARY ON\tINSTALLED ON")
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%d/%d\t%d/%d\n", k, primary[k], answered, installed[k], answered)
	}
	if answered < len(nodes) {
		fmt.Fprintln(w, "\nNODE\tROLE\tNOT LISTED BECAUSE")
		for _, n := range nodes {
			if n.Error != "" {
				fmt.Fprintf(w, "%s\t%s\t%s\n", n.Node, n.Role, n.Error)
			}
		}
	}
}

func newKeyringOpCmd(cf *clientFlags, op, short string) *cobra.Command {
	return &cobra.Command{
		Use:   op + " KEY",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.KeyringRequest{Op: op, Key: args[0]}
			if _, err := req.DecodeKey(); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				results, err := c.ChangeGossipKeyring(ctx, req)
				if err != nil {
					return err
				}
				return printKeyringResults(cmd, op, results)
			})
		},
	}
}

// printKeyringResults shows each node's outcome and fails unless every node
// is ok.
func printKeyringResults(cmd *cobra.Command, op string, results []api.KeyringResult) error {
	w := newTable(cmd.OutOrStdout())
	fmt.Fprintln(w, "NODE\tROLE\tRESULT")
	failed := 0
	for _, r := range results {
		res := "ok"
		if !r.OK {
			failed++
			res = "failed: " + strings.ReplaceAll(r.Error, "\n", " ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.Node, r.Role, res)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("gossip keyring %s failed on %d of %d nodes; fix them and run it again (it is safe to repeat)", op, failed, len(results))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "gossip keyring %s done on all %d nodes\n", op, len(results))
	return nil
}

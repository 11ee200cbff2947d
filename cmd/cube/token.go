package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// newTokenCmd is cube token with its subcommands create, ls and rm.
func newTokenCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage the API tokens of people and scripts (create, ls, rm)",
		Long: `Tokens let people and scripts call the managers without a client certificate.
Each has a role: read (see tasks, nodes, the cluster, events and logs; task Env
values are redacted), submit (also run and stop tasks) or operator (also drain
nodes, change the managers, manage tokens and gossip keys).

The cluster stores only a hash of each token: its secret is shown once, when it
is created. Managing tokens needs the operator role (or a client certificate).`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd) // the subcommands inherit the flags
	cmd.AddCommand(newTokenCreateCmd(cf), newTokenLsCmd(cf), newTokenRmCmd(cf))
	return cmd
}

func newTokenCreateCmd(cf *clientFlags) *cobra.Command {
	var (
		name, role string
		quiet      bool
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --role read|submit|operator",
		Short: "Create a token and print its secret (shown this once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Checked here too, so that a typo fails before any manager is asked.
			req := api.TokenRequest{Name: name, Role: api.Role(role)}
			if err := req.Validate(); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				tok, err := c.CreateToken(ctx, req)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if quiet {
					fmt.Fprintln(out, tok.Secret)
					return nil
				}
				fmt.Fprintf(out, "token %q created (role %s)\n", tok.Name, tok.Role)
				fmt.Fprintf(out, "accessor: %s\n", tok.AccessorID)
				fmt.Fprintf(out, "secret:   %s\n", tok.Secret)
				fmt.Fprintln(out, "The secret is not shown again: store it now (CUBE_TOKEN, or --token).")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "whom or what the token is for (1 to 64 printable characters)")
	cmd.Flags().StringVar(&role, "role", "", "read, submit or operator")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print the secret only, for scripts")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func newTokenLsCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the tokens (accessor, name, role, age; never a secret)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				// From the leader: a token just made or deleted shows as such.
				toks, err := c.Tokens(ctx, true)
				if err != nil {
					return err
				}
				return printColumns(cmd.OutOrStdout(), *output, toks, []column[api.Token]{
					{head: "ACCESSOR", cell: func(t api.Token) string { return t.AccessorID.String() }},
					{head: "NAME", cell: func(t api.Token) string { return t.Name }},
					{head: "ROLE", cell: func(t api.Token) string { return string(t.Role) }},
					{head: "CREATED", cell: func(t api.Token) string { return ago(t.CreateTime) }},
					{head: "CREATED AT", show: wideOnly, cell: func(t api.Token) string { return timeText(t.CreateTime) }},
				})
			})
		},
	}
	output = addListOutputFlag(cmd)
	return cmd
}

func newTokenRmCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ACCESSOR",
		Aliases: []string{"remove"},
		Short:   "Delete a token: every manager refuses it once the deletion is applied",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(1)(cmd, args); err != nil {
				return err
			}
			if _, err := uuid.Parse(args[0]); err != nil {
				return fmt.Errorf("token accessor %q is not a UUID (cube token ls lists them)", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id := uuid.MustParse(args[0]) // checked by Args
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				// A deletion of an unknown accessor succeeds (so that a retry
				// does); asking first tells a typo from a deletion.
				toks, err := c.Tokens(ctx, true)
				if err != nil {
					return err
				}
				if !slices.ContainsFunc(toks, func(t api.Token) bool { return t.AccessorID == id }) {
					return fmt.Errorf("no token has accessor %s (cube token ls lists them)", id)
				}
				if err := c.DeleteToken(ctx, id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token %s deleted\n", id)
				return nil
			})
		},
	}
}

package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// This file holds the dynamic shell completion of the client commands'
// arguments (cobra's `cube completion bash|zsh|fish|powershell` prints the
// scripts; the shell then runs `cube __complete ARGS…` on each TAB): task
// IDs and names, worker names, service names and manager IDs, read from the
// cluster the command's -m/--manager and credentials name.

// completionTimeout bounds everything one completion asks the cluster: a
// shell waits for it at every TAB. Past it, or on any error, the completion
// offers nothing (and no file names).
const completionTimeout = 2 * time.Second

// completeFrom returns a completion of a command's first argument from
// what list reads from the cluster: the candidates that begin with what was
// typed, each with its description. Later arguments are not completed.
func (f *clientFlags) completeFrom(list func(ctx context.Context, c *api.Client) ([]cobra.Completion, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		const none = cobra.ShellCompDirectiveNoFileComp
		if len(args) > 0 {
			return nil, none
		}
		tlsCfg, err := f.creds.tls()
		if err != nil {
			return nil, none
		}
		c, err := api.NewClient(splitList(f.managers), api.ClientOptions{Timeout: completionTimeout, RetryFor: completionTimeout,
			Token: f.creds.token, TLS: tlsCfg, GiveUpUnreachable: giveUpUnreachable})
		if err != nil {
			return nil, none
		}
		ctx := cmd.Context()
		if ctx == nil {
			ctx = context.Background()
		}
		ctx, cancel := context.WithTimeout(ctx, completionTimeout)
		defer cancel()
		all, err := list(ctx, c)
		if err != nil {
			return nil, none
		}
		return matching(all, toComplete), none
	}
}

// matching returns the completions whose value (before the description's
// tab) begins with prefix, in their order.
func matching(all []cobra.Completion, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, c := range all {
		value, _, _ := strings.Cut(c, "\t")
		if strings.HasPrefix(value, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// completeTasks completes a task argument (cube status, stop, logs) with
// the tasks' IDs and the names that name one task only, as resolveTaskID
// takes them; live only leaves out the tasks that ended for good (nothing
// to stop).
func (f *clientFlags) completeTasks(live bool) cobra.CompletionFunc {
	return f.completeFrom(func(ctx context.Context, c *api.Client) ([]cobra.Completion, error) {
		tasks, err := c.Tasks(ctx, false)
		if err != nil {
			return nil, err
		}
		return taskCompletions(tasks, live), nil
	})
}

// taskCompletions are the tasks' IDs, each described by its name and
// state, then their unique names, each described by its ID's first 12
// characters and state, oldest submission first.
func taskCompletions(tasks []api.Task, live bool) []cobra.Completion {
	named := map[string]int{}
	for _, t := range tasks {
		named[t.Name]++
	}
	var ids, names []cobra.Completion
	for _, t := range tasks {
		if live && t.Finished() {
			continue
		}
		ids = append(ids, cobra.CompletionWithDesc(t.ID.String(), strings.TrimSpace(t.Name+" "+t.State.String())))
		if t.Name != "" && named[t.Name] == 1 {
			names = append(names, cobra.CompletionWithDesc(t.Name, shortID(t.ID.String())+" "+t.State.String()))
		}
	}
	return append(ids, names...)
}

// completeWorkers completes a worker's name (cube node drain, undrain),
// described by its state and whether it is draining.
func (f *clientFlags) completeWorkers() cobra.CompletionFunc {
	return f.completeFrom(func(ctx context.Context, c *api.Client) ([]cobra.Completion, error) {
		nodes, err := c.Nodes(ctx, false)
		if err != nil {
			return nil, err
		}
		var out []cobra.Completion
		for _, n := range nodes {
			desc := n.State
			if n.Drain {
				desc += ", draining"
			}
			out = append(out, cobra.CompletionWithDesc(n.Name, desc))
		}
		return out, nil
	})
}

// completeServices completes a service's name (cube service inspect,
// scale, rollback, rm), described by its version, image and count.
func (f *clientFlags) completeServices() cobra.CompletionFunc {
	return f.completeFrom(func(ctx context.Context, c *api.Client) ([]cobra.Completion, error) {
		list, err := c.Services(ctx)
		if err != nil {
			return nil, err
		}
		var out []cobra.Completion
		for _, s := range list {
			out = append(out, cobra.CompletionWithDesc(s.Name, fmt.Sprintf("version %d, %d × %s", s.Version, s.Count, s.Task.Image)))
		}
		return out, nil
	})
}

// completeManagers completes a manager's raft ID (cube members remove),
// the leader described so.
func (f *clientFlags) completeManagers() cobra.CompletionFunc {
	return f.completeFrom(func(ctx context.Context, c *api.Client) ([]cobra.Completion, error) {
		info, err := c.Cluster(ctx)
		if err != nil {
			return nil, err
		}
		var out []cobra.Completion
		for _, s := range info.Servers {
			desc := s.Addr
			if s.Leader {
				desc += ", leader"
			}
			out = append(out, cobra.CompletionWithDesc(s.ID, desc))
		}
		slices.Sort(out)
		return out, nil
	})
}

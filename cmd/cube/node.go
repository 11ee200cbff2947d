package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newNodeCmd is cube node (the workers) with its subcommands drain and undrain.
func newNodeCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "node",
		Short: "List workers: liveness, capacity, what is allocated and their labels",
		Long: `List the workers: liveness, scheduling (eligible or draining), API address,
cpu, memory and disk allocated of their capacity, live tasks, whether their
Docker engine answers, and their labels. -o wide adds since when a worker is
in its state and what it allows tasks beyond an ordinary container. -o json
prints GET /nodes' objects as the API returns them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				nodes, err := c.Nodes(ctx, false)
				if err != nil {
					return err
				}
				return printColumns(cmd.OutOrStdout(), *output, nodes, nodeColumns)
			})
		},
	}
	output = addListOutputFlag(cmd) // cube node's own: not inherited by drain
	cf.register(cmd)                // drain and undrain inherit the flags
	cmd.AddCommand(newDrainCmd(cf, true), newDrainCmd(cf, false))
	return cmd
}

// nodeColumns are the columns of cube node; -o wide adds SINCE and ALLOWS.
var nodeColumns = []column[api.Node]{
	{head: "NAME", cell: func(n api.Node) string { return n.Name }},
	{head: "STATE", cell: func(n api.Node) string { return n.State }},
	{head: "SINCE", show: wideOnly, cell: func(n api.Node) string { return ago(n.Since) }},
	{head: "SCHEDULING", cell: func(n api.Node) string {
		if n.Drain {
			return "draining"
		}
		return "eligible"
	}},
	{head: "API", cell: func(n api.Node) string { return n.API }},
	{head: "CPU", cell: func(n api.Node) string { return fmt.Sprintf("%.2f/%.0f", n.AllocatedCpu, n.Cpu) }},
	{head: "MEMORY", cell: func(n api.Node) string { return bytesHuman(n.AllocatedMemory) + "/" + bytesHuman(n.Memory) }},
	{head: "DISK", cell: func(n api.Node) string { return bytesHuman(n.AllocatedDisk) + "/" + bytesHuman(n.Disk) }},
	{head: "TASKS", cell: func(n api.Node) string { return fmt.Sprint(n.TaskCount) }},
	{head: "RUNTIME", cell: func(n api.Node) string {
		if !n.RuntimeAvailable {
			return "down"
		}
		return "up"
	}},
	{head: "LABELS", cell: func(n api.Node) string { return orDash(api.FormatLabels(n.Labels)) }},
	{head: "ALLOWS", show: wideOnly, cell: func(n api.Node) string { return orDash(strings.Join(n.Allows, ",")) }},
}

// newDrainCmd is cube node drain (drain true) or cube node undrain.
func newDrainCmd(cf *clientFlags, drain bool) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "drain WORKER [--wait]",
		Short: "Drain a worker: place nothing new on it and move its tasks elsewhere",
		Long: `Drain a worker before maintenance or retirement.

The leader places nothing new on the worker and moves each of its running tasks
to a worker with room: the task starts there at a new generation (not counted
as a restart) and its old container is stopped. A task no other worker has room
for keeps running where it is until room appears. The drain stays set, across
worker and manager restarts, until "cube node undrain".

--wait returns once no task is placed on the worker any more (the old
containers are then being stopped), printing how many are left as that
changes; it waits up to --timeout (5m unless given).

Exit status: 0 drained (or, without --wait, the drain committed); 1 an error
(no such worker, no manager reachable, ...); 4 --wait: tasks still on the
worker after --timeout (the message lists them: typically no other worker
has room for them, or their constraints fit no other worker).`,
		Example: `  cube node drain w1 --wait && ssh w1 sudo reboot
  cube node undrain w1`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cf.completeWorkers(),
		RunE: func(cmd *cobra.Command, args []string) error {
			var c *api.Client
			err := cf.call(cmd, func(ctx context.Context, cl *api.Client) error {
				n, err := cl.DrainNode(ctx, args[0], drain)
				if err != nil {
					return err
				}
				c = cl
				if drain {
					fmt.Fprintf(cmd.OutOrStdout(), "worker %s is draining: nothing new is placed on it and its %d task(s) move to other workers (cube node shows TASKS fall to 0)\n", n.Name, n.TaskCount)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "worker %s is eligible again: new and restarted tasks may be placed on it\n", n.Name)
				}
				return nil
			})
			if err != nil || !wait {
				return err
			}
			return waitDrained(cmd, c, args[0], cf.waitTimeout(cmd))
		},
	}
	if drain {
		cmd.Flags().BoolVar(&wait, "wait", false, "return once no task is placed on the worker, printing how many are left; see the exit statuses above")
	} else {
		cmd.Use = "undrain WORKER"
		cmd.Short = "Make a drained worker eligible for placements again"
		cmd.Long = `Make a drained worker eligible again. Tasks already moved away stay where
they are; new, pending and restarted tasks may be placed on it again.`
		cmd.Example = ""
	}
	return cmd
}

// waitDrained polls the worker (through the leader, so that a count of 0
// is the committed state) until no task is placed on it, printing how many
// are left whenever that changes.
func waitDrained(cmd *cobra.Command, c *api.Client, name string, timeout time.Duration) error {
	out := cmd.OutOrStdout()
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	left := -1
	err := pollUntil(ctx, func(ctx context.Context) (bool, error) {
		nodes, err := c.Nodes(ctx, true)
		if err != nil {
			return false, err
		}
		i := slices.IndexFunc(nodes, func(n api.Node) bool { return n.Name == name })
		if i < 0 {
			return false, fmt.Errorf("worker %q: %w (cube node lists the workers)", name, api.ErrNotFound)
		}
		if n := nodes[i].TaskCount; n != left {
			left = n
			fmt.Fprintf(out, "%s  worker %s: %d task(s) placed on it\n", time.Now().Format("15:04:05"), name, n)
		}
		return left == 0, nil
	})
	switch {
	case err == nil:
		fmt.Fprintf(out, "worker %s is drained: no task is placed on it\n", name)
		return nil
	case errors.Is(err, errWaitTimedOut):
		return &exitError{exitTimedOut, fmt.Errorf("worker %s still has %d task(s) after %s%s (%w)", name, left, timeout, tasksOn(c, name), err)}
	}
	return explainUnreachable(err)
}

// tasksOn lists the live tasks placed on a worker, one a line, for the
// message of a drain that timed out ("" when they cannot be read).
func tasksOn(c *api.Client, worker string) string {
	ctx, cancel := context.WithTimeout(context.Background(), pollCallTimeout)
	defer cancel()
	tasks, err := c.Tasks(ctx, false)
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, t := range tasks {
		if t.Worker == worker && (t.State == api.Scheduled || t.State == api.Running) && !t.Finished() {
			fmt.Fprintf(&b, "\n  %s  %s  %s", t.ID, orDash(t.Name), t.State)
			if t.Reason != "" {
				b.WriteString(": " + t.Reason)
			}
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return ":" + b.String()
}

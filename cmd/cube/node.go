package main

import (
	"context"
	"fmt"
	"io"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newNodeCmd is cube node (the workers) with its subcommands drain and undrain.
func newNodeCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "node",
		Short: "List workers: liveness, capacity, what is allocated and their labels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				nodes, err := c.Nodes(ctx, false)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), *output, nodes, func(w io.Writer) {
					fmt.Fprintln(w, "NAME\tSTATE\tSCHEDULING\tAPI\tCPU\tMEMORY\tDISK\tTASKS\tRUNTIME\tLABELS")
					for _, n := range nodes {
						rt := "up"
						if !n.RuntimeAvailable {
							rt = "down"
						}
						sched := "eligible"
						if n.Drain {
							sched = "draining"
						}
						labels := api.FormatLabels(n.Labels)
						if labels == "" {
							labels = "-"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.2f/%.0f\t%s/%s\t%s/%s\t%d\t%s\t%s\n", n.Name, n.State, sched, n.API,
							n.AllocatedCpu, n.Cpu, bytesHuman(n.AllocatedMemory), bytesHuman(n.Memory),
							bytesHuman(n.AllocatedDisk), bytesHuman(n.Disk), n.TaskCount, rt, labels)
					}
				})
			})
		},
	}
	output = addOutputFlag(cmd) // cube node's own: not inherited by drain
	cf.register(cmd)            // drain and undrain inherit the flags
	cmd.AddCommand(
		newDrainCmd(cf, "drain", "Drain a worker: place nothing new on it and move its tasks elsewhere",
			`Drain a worker before maintenance or retirement.

The leader places nothing new on the worker and moves each of its running tasks
to a worker with room: the task starts there at a new generation (not counted
as a restart) and its old container is stopped. A task no other worker has room
for keeps running where it is until room appears. The drain stays set, across
worker and manager restarts, until "cube node undrain".`, true),
		newDrainCmd(cf, "undrain", "Make a drained worker eligible for placements again",
			`Make a drained worker eligible again. Tasks already moved away stay where
they are; new, pending and restarted tasks may be placed on it again.`, false),
	)
	return cmd
}

// newDrainCmd is cube node drain (drain true) or cube node undrain.
func newDrainCmd(cf *clientFlags, use, short, long string, drain bool) *cobra.Command {
	return &cobra.Command{
		Use:   use + " WORKER",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				n, err := c.DrainNode(ctx, args[0], drain)
				if err != nil {
					return err
				}
				if drain {
					fmt.Fprintf(cmd.OutOrStdout(), "worker %s is draining: nothing new is placed on it and its %d task(s) move to other workers (cube node shows TASKS fall to 0)\n", n.Name, n.TaskCount)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "worker %s is eligible again: new and restarted tasks may be placed on it\n", n.Name)
				}
				return nil
			})
		},
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

func newStatusCmd(cf *clientFlags) *cobra.Command {
	var consistent bool
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "status [ID|PREFIX|NAME]",
		Short: "List tasks (state, worker, restarts, reason), or show one task whole",
		Long: `List the cluster's tasks: state, worker, published ports, restarts and the
reason of the last failure. -o json prints the tasks as GET /tasks returns them
(a JSON array, [] when there are none), for scripts:

  cube status -o json | jq -r '.[] | select(.Name=="web") | .HostPorts'

With an argument, shows one task whole: state and reason, worker, generation,
restarts, ports, resources, health check and times. The argument is the task's
ID, a prefix of it that no other task's ID begins with, or its name when no
other task has that name; -o json prints the task object as GET /tasks/ID
returns it:

  cube status test-chapter-9.1 -o json | jq -r '.HostPorts["7777/tcp"][0].HostPort'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && strings.TrimSpace(args[0]) == "" {
				return fmt.Errorf("empty task ID; want a task ID, a prefix of one, or a task name")
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				if len(args) == 1 {
					t, err := showTask(ctx, c, args[0], consistent)
					if err != nil {
						return err
					}
					return printObject(cmd.OutOrStdout(), *output, t, func(w io.Writer) { taskText(w, t) })
				}
				tasks, err := c.Tasks(ctx, consistent)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), *output, tasks, func(w io.Writer) {
					fmt.Fprintln(w, "ID\tNAME\tCREATED\tSTATE\tCONTAINERNAME\tIMAGE\tWORKER\tPORTS\tRESTARTS\tREASON")
					for _, t := range tasks {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.Name, ago(t.SubmitTime), t.State,
							shortID(t.ContainerID), t.Image, t.Worker, portsText(t.HostPorts), t.RestartCount, t.Reason)
					}
				})
			})
		},
	}
	output = addOutputFlag(cmd)
	cmd.Flags().BoolVar(&consistent, "consistent", false, "linearizable read through the leader")
	cf.register(cmd)
	return cmd
}

// showTask fetches the task ref names (see findTask): a whole UUID with
// GET /tasks/ID, else through the task list.
func showTask(ctx context.Context, c *api.Client, ref string, consistent bool) (api.Task, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return c.Task(ctx, id, consistent)
	}
	tasks, err := c.Tasks(ctx, consistent)
	if err != nil {
		return api.Task{}, err
	}
	return matchTask(tasks, ref)
}

// taskText writes one task whole, a field a line, for cube status ID.
func taskText(w io.Writer, t api.Task) {
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s:\t%s\n", k, v)
		}
	}
	line("ID", t.ID.String())
	line("Name", orDash(t.Name))
	state := t.State.String()
	if t.DesiredState != t.State && t.DesiredState != 0 {
		state += " (desired " + t.DesiredState.String() + ")"
	}
	line("State", state)
	line("Reason", t.Reason)
	if t.State.Terminal() {
		line("Exit code", fmt.Sprint(t.ExitCode))
	}
	if t.Service != "" {
		line("Service", fmt.Sprintf("%s (version %d)", t.Service, t.ServiceVersion))
	}
	worker := orDash(t.Worker)
	if t.LastWorker != "" && t.LastWorker != t.Worker {
		worker += " (before: " + t.LastWorker + ")"
	}
	line("Worker", worker)
	line("Generation", fmt.Sprint(t.Generation))
	restarts := fmt.Sprint(t.RestartCount)
	switch {
	case t.RestartPolicy != "" && t.MaxRestarts > 0:
		restarts += fmt.Sprintf(" (policy %s, at most %d)", t.RestartPolicy, t.MaxRestarts)
	case t.RestartPolicy != "":
		restarts += " (policy " + t.RestartPolicy + ")"
	}
	line("Restarts", restarts)
	line("Image", t.Image)
	if len(t.Cmd) > 0 {
		line("Command", strings.Join(t.Cmd, " "))
	}
	line("Container", orDash(shortID(t.ContainerID)))
	line("Ports", portsText(t.HostPorts))
	if len(t.PortBindings) > 0 {
		line("Port bindings", fmt.Sprint(t.PortBindings))
	}
	line("Resources", fmt.Sprintf("cpu %g, memory %s, disk %s", t.Cpu, sizeText(t.Memory), sizeText(t.Disk)))
	line("Health check", healthText(t))
	if len(t.Constraints) > 0 {
		line("Constraints", strings.Join(t.Constraints, ", "))
	}
	if len(t.Prefer) > 0 {
		line("Prefer", strings.Join(t.Prefer, ", "))
	}
	line("Submitted", whenText(t.SubmitTime))
	line("Started", whenText(t.StartTime))
	line("Finished", whenText(t.FinishTime))
}

// healthText describes a task's health check, or "-" for none.
func healthText(t api.Task) string {
	if t.HealthCheck == "" {
		return "-"
	}
	s := "GET " + t.HealthCheck
	if t.HealthCheckPort != "" {
		s += " on port " + t.HealthCheckPort
	}
	var opts []string
	for _, o := range []struct{ k, v string }{{"every", t.HealthCheckInterval}, {"timeout", t.HealthCheckTimeout}, {"grace", t.HealthCheckGrace}} {
		if o.v != "" {
			opts = append(opts, o.k+" "+o.v)
		}
	}
	if t.HealthCheckThreshold > 0 {
		opts = append(opts, fmt.Sprintf("%d failures in a row", t.HealthCheckThreshold))
	}
	if len(opts) > 0 {
		s += " (" + strings.Join(opts, ", ") + ")"
	}
	return s
}

// whenText is a time with how long ago it was, or "-".
func whenText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return timeText(t) + " (" + ago(t) + ")"
}

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
	var consistent, watching bool
	var interval time.Duration
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "status [ID|PREFIX|NAME]",
		Short: "List tasks (state, worker, restarts, reason), or show one task whole with its history",
		Long: `List the cluster's tasks: state, worker, published ports, restarts and the
reason of the last failure. -o wide adds the desired state, health, the whole
container ID, the worker before, generation, cpu and memory, the service and
the submit and start times. -o json prints the tasks as GET /tasks returns
them (a JSON array, [] when there are none), for scripts:

  cube status -o json | jq -r '.[] | select(.Name=="web") | .HostPorts'

With an argument, shows one task whole: state and reason, worker, generation,
restarts, ports, resources, health check and times, then its history: each
change of state, worker, restarts or health with its time and reason (the
last 20). The argument is the task's ID, a prefix of it that no other task's
ID begins with, or its name when no other task has that name; -o json prints
the task object as GET /tasks/ID returns it, its History included:

  cube status test-chapter-9.1 -o json | jq -r '.HostPorts["7777/tcp"][0].HostPort'
  cube status test-chapter-9.1 -o json | jq -r '.History[] | "\(.Time) \(.State) \(.Reason)"'

--watch redraws the listing (or the task) every --interval until Ctrl-C; on
a terminal it clears the screen first, otherwise it prints each snapshot
after a line with its time.`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: cf.completeTasks(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && strings.TrimSpace(args[0]) == "" {
				return fmt.Errorf("empty task ID; want a task ID, a prefix of one, or a task name")
			}
			if interval <= 0 {
				return fmt.Errorf("--interval %s must be positive", interval)
			}
			draw := func(ctx context.Context, c *api.Client, out io.Writer) error {
				if len(args) == 1 {
					t, err := showTask(ctx, c, args[0], consistent)
					if err != nil {
						return err
					}
					return printObject(out, *output, t, func(w io.Writer) { taskText(w, t, *output == outputWide) })
				}
				tasks, err := c.Tasks(ctx, consistent)
				if err != nil {
					return err
				}
				return printColumns(out, *output, tasks, taskColumns)
			}
			if watching {
				return cf.watch(cmd, interval, draw)
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error { return draw(ctx, c, cmd.OutOrStdout()) })
		},
	}
	output = addListOutputFlag(cmd)
	cmd.Flags().BoolVar(&consistent, "consistent", false, "linearizable read through the leader")
	cmd.Flags().BoolVarP(&watching, "watch", "w", false, "redraw every --interval until Ctrl-C")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between two redraws of --watch")
	cf.register(cmd)
	return cmd
}

// taskColumns are the columns of cube status: -o table's, and -o wide's
// (which adds the desired state, health, the whole container ID, the worker
// before, generation, resources, service and times).
var taskColumns = []column[api.Task]{
	{head: "ID", cell: func(t api.Task) string { return t.ID.String() }},
	{head: "NAME", cell: func(t api.Task) string { return t.Name }},
	{head: "CREATED", cell: func(t api.Task) string { return ago(t.SubmitTime) }},
	{head: "STATE", cell: func(t api.Task) string { return t.State.String() }},
	{head: "DESIRED", show: wideOnly, cell: func(t api.Task) string { return t.DesiredState.String() }},
	{head: "HEALTH", show: wideOnly, cell: healthState},
	{head: "CONTAINERNAME", show: tableOnly, cell: func(t api.Task) string { return shortID(t.ContainerID) }},
	{head: "CONTAINER", show: wideOnly, cell: func(t api.Task) string { return orDash(t.ContainerID) }},
	{head: "IMAGE", cell: func(t api.Task) string { return t.Image }},
	{head: "WORKER", cell: func(t api.Task) string { return t.Worker }},
	{head: "LAST WORKER", show: wideOnly, cell: func(t api.Task) string { return orDash(t.LastWorker) }},
	{head: "GEN", show: wideOnly, cell: func(t api.Task) string { return fmt.Sprint(t.Generation) }},
	{head: "PORTS", cell: func(t api.Task) string { return portsText(t.HostPorts) }},
	{head: "RESTARTS", cell: func(t api.Task) string { return fmt.Sprint(t.RestartCount) }},
	{head: "CPU", show: wideOnly, cell: func(t api.Task) string { return orDash(cpuText(t.Cpu)) }},
	{head: "MEMORY", show: wideOnly, cell: func(t api.Task) string { return sizeText(t.Memory) }},
	{head: "SERVICE", show: wideOnly, cell: func(t api.Task) string {
		if t.Service == "" {
			return "-"
		}
		return fmt.Sprintf("%s v%d", t.Service, t.ServiceVersion)
	}},
	{head: "SUBMITTED", show: wideOnly, cell: func(t api.Task) string { return timeText(t.SubmitTime) }},
	{head: "STARTED", show: wideOnly, cell: func(t api.Task) string { return timeText(t.StartTime) }},
	{head: "REASON", cell: func(t api.Task) string { return t.Reason }},
}

// healthState is a task's health as docker ps words it: "-" without a
// health check or while the task does not run, "healthy" once its
// placement passed its check, "unhealthy" once it failed it (until it is
// restarted), "starting" before either.
func healthState(t api.Task) string {
	switch {
	case t.HealthCheck == "" || t.State != api.Running:
		return "-"
	case t.Healthy:
		return "healthy"
	}
	for i := len(t.History) - 1; i >= 0 && t.History[i].Generation == t.Generation; i-- {
		if strings.HasPrefix(t.History[i].Reason, api.ReasonHealthFailed) {
			return "unhealthy"
		}
	}
	return "starting"
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

// taskText writes one task whole, a field a line, then its history, for
// cube status ID; wide shows the whole container ID.
func taskText(w io.Writer, t api.Task, wide bool) {
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
	container := shortID(t.ContainerID)
	if wide {
		container = t.ContainerID
	}
	line("Container", orDash(container))
	line("Ports", portsText(t.HostPorts))
	if len(t.PortBindings) > 0 {
		line("Port bindings", fmt.Sprint(t.PortBindings))
	}
	line("Resources", fmt.Sprintf("cpu %g, memory %s, disk %s", t.Cpu, sizeText(t.Memory), sizeText(t.Disk)))
	line("Health check", healthText(t))
	if t.HealthCheck != "" {
		line("Health", healthState(t))
	}
	if len(t.Constraints) > 0 {
		line("Constraints", strings.Join(t.Constraints, ", "))
	}
	if len(t.Prefer) > 0 {
		line("Prefer", strings.Join(t.Prefer, ", "))
	}
	line("Submitted", whenText(t.SubmitTime))
	line("Started", whenText(t.StartTime))
	line("Finished", whenText(t.FinishTime))
	historyText(w, t.History)
}

// historyText writes a task's History as a table, oldest first.
func historyText(w io.Writer, h []api.TaskTransition) {
	if len(h) == 0 {
		return
	}
	fmt.Fprintf(w, "\nHistory (oldest first; the last %d changes are kept)\n", api.MaxTaskHistory)
	fmt.Fprintln(w, "TIME\tSTATE\tWORKER\tGEN\tRESTARTS\tREASON")
	for _, e := range h {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", timeText(e.Time), transitionState(e), orDash(e.Worker), e.Generation, e.RestartCount, orDash(e.Reason))
	}
}

// transitionState is an entry's state with what qualifies it: "Running,
// healthy", "Running → Completed" (a stop requested, not yet carried out).
func transitionState(e api.TaskTransition) string {
	s := e.State.String()
	if e.Healthy {
		s += ", healthy"
	}
	if !e.State.Terminal() && e.DesiredState != api.Running && e.DesiredState != e.State {
		s += " → " + e.DesiredState.String()
	}
	return s
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

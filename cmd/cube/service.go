package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/spf13/cobra"
)

// newServiceCmd is cube service with its subcommands create, ls, inspect,
// scale, update, rollback and rm (DESIGN §6 "Services").
func newServiceCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "service",
		Aliases: []string{"services", "svc"},
		Short:   "Run N copies of a task, spread over the workers, updated without downtime",
		Long: `A service is a named task template that the cluster keeps running Count times:
a crashed task restarts, a lost worker's tasks are replaced elsewhere, and the
copies go to different workers as far as possible (Constraints and Prefer
choose among them by their labels). Its tasks are ordinary tasks that name
their service and version: cube status, cube logs and cube events show them.

Changing the template (image, command, environment, resources, ports, health
check, constraints) makes a new version and rolls it out: Update.MaxParallel
tasks at a time, each new task healthy for Update.MinHealthyTime before the
next batch, the whole batch within Update.HealthyDeadline. A batch that fails
stops the rollout and, with Update.AutoRevert, goes back to the last healthy
version; cube service rollback does it by hand. Changing Count alone scales
at once. A service file (JSON or YAML, the API's field names in any case):

  name: web
  count: 3
  task:
    image: cube-echo:latest
    exposedPorts: {7777/tcp: {}}
    healthCheck: /health
  update: {maxParallel: 1, minHealthyTime: 5s, healthyDeadline: 2m, autoRevert: true}
  constraints: [zone==a]        # key==value or key!=value on worker labels
  prefer: [disk==ssd]

cube apply -f FILE creates or updates the services (and tasks) of a file,
printing the plan first.`,
		Example: `  cube service create -f web.yaml
  cube service ls
  cube service scale web 5
  cube service update -f web.yaml        # after changing the image
  cube service inspect web               # versions and the rollout's progress
  cube service rollback web
  cube service rm web`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd) // the subcommands inherit the flags
	cmd.AddCommand(newServiceCreateCmd(cf), newServiceLsCmd(cf), newServiceInspectCmd(cf), newServiceScaleCmd(cf),
		newServiceUpdateCmd(cf), newServiceRollbackCmd(cf), newServiceRmCmd(cf))
	return cmd
}

// serviceError adds what to do next to the API's errors about one service.
func serviceError(name string, err error) error {
	switch {
	case errors.Is(err, api.ErrNotFound):
		return fmt.Errorf("no service is named %s (cube service ls lists them; cube service create -f FILE makes one): %w", name, err)
	}
	return err
}

// readServices reads a file that must hold services only (cube service
// create and update).
func readServices(cmd *cobra.Command, file string) ([]api.Service, error) {
	items, err := readManifest(file, cmd.InOrStdin())
	if err != nil {
		return nil, err
	}
	var out []api.Service
	for _, it := range items {
		if it.Service == nil {
			return nil, fmt.Errorf("%s:%d: %s is a task, not a service: submit it with cube run -f, or give the whole file to cube apply -f", manifestName(file), it.Line, it.what())
		}
		out = append(out, *it.Service)
	}
	return out, nil
}

func manifestName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}

// fileFlag adds the required -f/--file of a command that reads a file.
func fileFlag(cmd *cobra.Command, file *string, what string) {
	cmd.Flags().StringVarP(file, "file", "f", "", what+" (JSON or YAML; - reads stdin)")
	_ = cmd.MarkFlagRequired("file")
}

func newServiceCreateCmd(cf *clientFlags) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create the service(s) a file describes (an error if one exists)",
		Long: `Create each service of FILE (JSON or YAML; see cube service --help for the
fields). The cluster starts Count tasks of version 1 at once, spread over the
workers. A service of the same name is an error: change it with cube service
update -f or cube apply -f. The file is checked whole before anything is sent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svcs, err := readServices(cmd, file)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				for _, s := range svcs {
					st, err := c.CreateService(ctx, s)
					if errors.Is(err, api.ErrConflict) {
						return fmt.Errorf("%w\n(change it with cube service update -f %s, or cube apply -f %s)", err, file, file)
					}
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "service %s created: version %d, %d × %s (cube service inspect %s follows it)\n",
						st.Name, st.Version, st.Count, st.Task.Image, st.Name)
				}
				return nil
			})
		},
	}
	fileFlag(cmd, &file, "the service file")
	return cmd
}

func newServiceLsCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the services: version, count, running and healthy tasks, rollout",
		Long: `List the services: the current version and its image, Count (desired),
the tasks Running and Healthy (passing their health check, or Running when
the template has none), and the last rollout. -o wide adds the template's
cpu, memory, ports, health check and constraints and when the service was
created. -o json prints GET /services' objects as the API returns them (a
JSON array, [] when there are none).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				list, err := c.Services(ctx)
				if err != nil {
					return err
				}
				return printColumns(cmd.OutOrStdout(), *output, list, serviceColumns)
			})
		},
	}
	output = addListOutputFlag(cmd)
	return cmd
}

// serviceColumns are the columns of cube service ls; -o wide adds the
// template's resources, ports, health check and constraints, and CREATED.
var serviceColumns = []column[api.ServiceStatus]{
	{head: "NAME", cell: func(s api.ServiceStatus) string { return s.Name }},
	{head: "VERSION", cell: func(s api.ServiceStatus) string { return strconv.FormatUint(s.Version, 10) }},
	{head: "IMAGE", cell: func(s api.ServiceStatus) string { return s.Task.Image }},
	{head: "COUNT", cell: func(s api.ServiceStatus) string { return strconv.Itoa(s.Count) }},
	{head: "RUNNING", cell: func(s api.ServiceStatus) string { return strconv.Itoa(s.Running) }},
	{head: "HEALTHY", cell: func(s api.ServiceStatus) string { return strconv.Itoa(s.Healthy) }},
	{head: "ROLLOUT", cell: func(s api.ServiceStatus) string { return rolloutShort(s.Rollout) }},
	{head: "UPDATED", cell: func(s api.ServiceStatus) string { return ago(s.UpdateTime) }},
	{head: "CPU", show: wideOnly, cell: func(s api.ServiceStatus) string { return orDash(cpuText(s.Task.Cpu)) }},
	{head: "MEMORY", show: wideOnly, cell: func(s api.ServiceStatus) string { return sizeText(s.Task.Memory) }},
	{head: "PORTS", show: wideOnly, cell: func(s api.ServiceStatus) string {
		return orDash(strings.Join(slices.Sorted(maps.Keys(s.Task.ExposedPorts)), ","))
	}},
	{head: "HEALTH CHECK", show: wideOnly, cell: func(s api.ServiceStatus) string { return orDash(s.Task.HealthCheck) }},
	{head: "CONSTRAINTS", show: wideOnly, cell: func(s api.ServiceStatus) string { return orDash(strings.Join(s.Constraints, ",")) }},
	{head: "CREATED", show: wideOnly, cell: func(s api.ServiceStatus) string { return ago(s.CreateTime) }},
}

// rolloutShort is a rollout in a column: "1→2 running (1 replaced)".
func rolloutShort(r *api.Rollout) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("%d→%d %s", r.From, r.To, r.State)
	if r.State == api.RolloutRunning {
		s += fmt.Sprintf(" (%d replaced)", r.Replaced)
	}
	return s
}

func newServiceInspectCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:               "inspect NAME",
		Short:             "Show a service: its template, tasks, rollout progress and version history",
		ValidArgsFunction: cf.completeServices(),
		Long: `Show one service: its current template and update policy, the tasks running
by version, the progress of its last rollout (which versions, how many tasks
replaced, why it failed or rolled back), its live tasks, and its last versions
(when, by whom, whether each was healthy, what changed from the one before).
-o json prints GET /services/NAME's object as the API returns it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				st, err := c.Service(ctx, args[0])
				if err != nil {
					return serviceError(args[0], err)
				}
				if *output == outputJSON {
					return writeJSON(cmd.OutOrStdout(), st)
				}
				tasks, err := c.Tasks(ctx, false)
				if err != nil {
					return err
				}
				tasks = slices.DeleteFunc(tasks, func(t api.Task) bool { return t.Service != st.Name || t.Finished() })
				slices.SortFunc(tasks, func(a, b api.Task) int {
					return cmp.Or(cmp.Compare(b.ServiceVersion, a.ServiceVersion), strings.Compare(a.Name, b.Name), strings.Compare(a.ID.String(), b.ID.String()))
				})
				return printTable(cmd.OutOrStdout(), func(w io.Writer) { printService(w, st, tasks) })
			})
		},
	}
	output = addOutputFlag(cmd)
	return cmd
}

// printService writes cube service inspect's text.
func printService(w io.Writer, st api.ServiceStatus, tasks []api.Task) {
	t := st.Task
	orNone := func(s string) string { return cmp.Or(s, "-") }
	fmt.Fprintf(w, "Name:\t%s\n", st.Name)
	fmt.Fprintf(w, "Version:\t%d\n", st.Version)
	fmt.Fprintf(w, "Count:\t%d desired, %d running, %d healthy%s\n", st.Count, st.Running, st.Healthy, byVersionText(st.ByVersion))
	fmt.Fprintf(w, "Image:\t%s\n", t.Image)
	if len(t.Cmd) > 0 {
		fmt.Fprintf(w, "Command:\t%s\n", strings.Join(t.Cmd, " "))
	}
	fmt.Fprintf(w, "Resources:\tcpu %s, memory %s, disk %s\n", orNone(cpuText(t.Cpu)), sizeText(t.Memory), sizeText(t.Disk))
	if len(t.ExposedPorts) > 0 {
		fmt.Fprintf(w, "Ports:\t%s\n", strings.Join(slices.Sorted(maps.Keys(t.ExposedPorts)), ", "))
	}
	if t.HealthCheck != "" {
		fmt.Fprintf(w, "Health check:\t%s\n", t.HealthCheck)
	}
	if len(t.Env) > 0 {
		fmt.Fprintf(w, "Env:\t%d variable(s)\n", len(t.Env))
	}
	fmt.Fprintf(w, "Constraints:\t%s\n", orNone(strings.Join(st.Constraints, ", ")))
	fmt.Fprintf(w, "Prefer:\t%s\n", orNone(strings.Join(st.Prefer, ", ")))
	fmt.Fprintf(w, "Update:\t%s\n", policyText(st.Update))
	fmt.Fprintf(w, "Created:\t%s (%s)\n", timeText(st.CreateTime), ago(st.CreateTime))
	fmt.Fprintf(w, "Updated:\t%s (%s)\n", timeText(st.UpdateTime), ago(st.UpdateTime))

	fmt.Fprintln(w)
	if r := st.Rollout; r == nil {
		fmt.Fprintln(w, "Rollout:\tnone yet")
	} else {
		fmt.Fprintf(w, "Rollout:\tversion %d → %d, %s\n", r.From, r.To, r.State)
		progress := fmt.Sprintf("%d task(s) of version %d replaced", r.Replaced, r.From)
		if n, ok := st.ByVersion[r.To]; ok {
			progress += fmt.Sprintf("; %d of %d running version %d", n, st.Count, r.To)
		}
		fmt.Fprintf(w, "Progress:\t%s\n", progress)
		if r.Reason != "" {
			fmt.Fprintf(w, "Reason:\t%s\n", r.Reason)
		}
		fmt.Fprintf(w, "Started:\t%s (%s), last step %s\n", timeText(r.StartTime), ago(r.StartTime), ago(r.UpdateTime))
	}

	fmt.Fprintln(w, "\nVersions (oldest first)")
	fmt.Fprintln(w, "VERSION\tCREATED\tBY\tHEALTHY\tIMAGE\tCHANGES")
	for i, h := range st.History {
		v := strconv.FormatUint(h.Version, 10)
		if h.Version == st.Version {
			v += " (current)"
		}
		healthy := "-"
		if h.Healthy {
			healthy = "yes"
		}
		changes := "-"
		if i > 0 {
			prev := st.History[i-1].Task
			if c := fieldChanges("", reflect.ValueOf(fsm.ServiceTemplate(api.Service{Task: prev})), reflect.ValueOf(fsm.ServiceTemplate(api.Service{Task: h.Task}))); len(c) > 0 {
				changes = strings.Join(c, ", ")
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", v, ago(h.Time), orNone(h.By), healthy, h.Task.Image, changes)
	}

	fmt.Fprintln(w, "\nTasks")
	if len(tasks) == 0 {
		fmt.Fprintln(w, "none")
		return
	}
	fmt.Fprintln(w, "ID\tVERSION\tSTATE\tWORKER\tPORTS\tRESTARTS\tREASON")
	for _, t := range tasks {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.ServiceVersion, t.State, orNone(t.Worker),
			portsText(t.HostPorts), t.RestartCount, t.Reason)
	}
}

func byVersionText(m map[uint64]int) string {
	if len(m) < 2 {
		return ""
	}
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d of version %d", m[v], v))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func cpuText(c float64) string {
	if c == 0 {
		return ""
	}
	return strconv.FormatFloat(c, 'f', -1, 64)
}

func sizeText(n int64) string {
	if n == 0 {
		return "-"
	}
	return bytesHuman(n)
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

// policyText says an update policy with its defaults filled in.
func policyText(u api.UpdatePolicy) string {
	par := fmt.Sprintf("%d at a time", cmp.Or(max(u.MaxParallel, 0), api.DefaultMaxParallel))
	healthy := cmp.Or(u.MinHealthyTime, api.DefaultMinHealthyTime.String())
	deadline := cmp.Or(u.HealthyDeadline, api.DefaultHealthyDeadline.String())
	revert := "off"
	if u.AutoRevert {
		revert = "on"
	}
	return fmt.Sprintf("%s, each healthy for %s, within %s; auto-revert %s", par, healthy, deadline, revert)
}

func newServiceScaleCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "scale NAME COUNT",
		Short:             "Set how many tasks of a service run (at once, no new version)",
		ValidArgsFunction: cf.completeServices(),
		Long: fmt.Sprintf(`Set a service's Count (0 to %d). The leader starts or stops tasks of the
current version at once; no rollout, no new version. Scaling to 0 keeps the
service (and its history) with no task running.`, api.MaxServiceCount),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(2)(cmd, args); err != nil {
				return err
			}
			if n, err := strconv.Atoi(args[1]); err != nil || n < 0 || n > api.MaxServiceCount {
				return fmt.Errorf("COUNT %q must be a whole number from 0 to %d", args[1], api.MaxServiceCount)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			n, _ := strconv.Atoi(args[1]) // checked by Args
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				st, err := c.ScaleService(ctx, args[0], n)
				if err != nil {
					return serviceError(args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s scaled to %d (running now: %d; cube service ls follows it)\n", st.Name, st.Count, st.Running)
				return nil
			})
		},
	}
}

func newServiceUpdateCmd(cf *clientFlags) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "update -f FILE",
		Short: "Change existing service(s) as a file describes: a new template rolls out",
		Long: `Change each service of FILE, which must exist (cube service create or cube
apply make new ones). What changes is printed first, as cube apply prints it.
A changed template (image, command, env, resources, ports, health check,
constraints) makes a new version, rolled out Update.MaxParallel tasks at a
time; a changed Count alone scales at once; an unchanged service is left as
it is. cube service inspect NAME follows the rollout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svcs, err := readServices(cmd, file)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				// Every service is looked up before any is changed: a name
				// the cluster does not know changes nothing.
				var steps []planStep
				for _, s := range svcs {
					cur, err := c.Service(ctx, s.Name)
					if err != nil {
						return serviceError(s.Name, err)
					}
					steps = append(steps, computePlan([]api.ServiceStatus{cur}, nil, []manifestItem{{Service: &s}})[0])
				}
				for _, step := range steps {
					fmt.Fprintln(out, step)
					if step.Action == planUnchanged {
						continue
					}
					st, _, err := c.PutService(ctx, *step.item.Service)
					if err != nil {
						return err
					}
					fmt.Fprintln(out, "  "+appliedText(step, st))
				}
				return nil
			})
		},
	}
	fileFlag(cmd, &file, "the service file")
	return cmd
}

// appliedText says what a step did, from the service the cluster answered.
func appliedText(step planStep, st api.ServiceStatus) string {
	switch {
	case step.Action == planCreate:
		return fmt.Sprintf("service %s created: version %d, %d × %s", st.Name, st.Version, st.Count, st.Task.Image)
	case step.Rollout:
		return fmt.Sprintf("service %s is at version %d: rolling out, %d at a time (cube service inspect %s follows it)", st.Name, st.Version, step.MaxParallel, st.Name)
	}
	return fmt.Sprintf("service %s updated (version %d, count %d)", st.Name, st.Version, st.Count)
}

func newServiceRollbackCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "rollback NAME",
		Short:             "Go back to the service's last healthy version before the current one",
		ValidArgsFunction: cf.completeServices(),
		Long: `Make the last version before the current one that was healthy (all its tasks
healthy together once) current again, and roll the tasks back to it as an
update does (Update.MaxParallel at a time). Refused when no earlier version
was healthy. A rollout that fails with Update.AutoRevert does this by itself.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				st, err := c.RollbackService(ctx, args[0])
				if errors.Is(err, api.ErrConflict) {
					return fmt.Errorf("%w\n(cube service inspect %s shows which versions were healthy)", err, args[0])
				}
				if err != nil {
					return serviceError(args[0], err)
				}
				from := "the version before"
				if st.Rollout != nil {
					from = "version " + strconv.FormatUint(st.Rollout.From, 10)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s rolling back from %s to version %d (%s); cube service inspect %s follows it\n",
					st.Name, from, st.Version, st.Task.Image, st.Name)
				return nil
			})
		},
	}
}

func newServiceRmCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "rm NAME",
		Aliases:           []string{"remove", "delete"},
		Short:             "Delete a service and stop its tasks",
		ValidArgsFunction: cf.completeServices(),
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				if err := c.DeleteService(ctx, args[0]); err != nil {
					return serviceError(args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s deleted; its tasks are being stopped\n", args[0])
				return nil
			})
		},
	}
}

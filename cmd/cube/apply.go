package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newApplyCmd is cube apply -f FILE [--dry-run]: the declarative way in, as
// nomad job run after nomad job plan.
func newApplyCmd(cf *clientFlags) *cobra.Command {
	var (
		file   string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--dry-run]",
		Short: "Create or update the services and tasks of a file, printing the plan first",
		Long: `Make the cluster run what FILE describes: one or more services and/or tasks,
in JSON or YAML, with the API's field names (any case). FILE may hold one
object, a list of them, several YAML documents (---) or JSON values, or
{"Services": [...], "Tasks": [...]}; "Kind: Service" or "Kind: Task" says what
an object is where its fields do not (a service has Name, Count and Task; a
task has Image, or is the seed's TaskEvent {"ID","State","Task"}).

apply first compares the file with the cluster and prints the plan, as
nomad job plan does:

  + create service web (3 × cube-echo:latest)
  ~ update service api: Image cube-echo:1 → cube-echo:2, Count 2 → 4 (rolling, 2 at a time)
    unchanged service x
  + submit task migrate (cube-echo:latest)

then applies it (services through PUT /services/NAME, tasks as cube run) unless
--dry-run is given. Services of the cluster the file does not name are left
alone. A file read twice changes nothing the second time, except for tasks
without an ID, which are new tasks each time: give a task an ID to make it
apply once. The file is checked whole before the cluster is asked anything.`,
		Example: `  cube apply -f stack.yaml --dry-run     # the plan only
  cube apply -f stack.yaml
  generate-stack | cube apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			items, err := readManifest(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				current, err := c.Services(ctx)
				if err != nil {
					return err
				}
				known := map[string]api.State{}
				for _, it := range items {
					if it.Task == nil || it.Task.ID == [16]byte{} {
						continue
					}
					t, err := c.Task(ctx, it.Task.ID, false)
					if errors.Is(err, api.ErrNotFound) {
						continue
					}
					if err != nil {
						return err
					}
					known[t.ID.String()] = t.State
				}
				steps := computePlan(current, known, items)
				for _, s := range steps {
					fmt.Fprintln(out, s)
				}
				fmt.Fprintln(out, planSummary(steps))
				switch {
				case dryRun:
					fmt.Fprintln(out, "Dry run: nothing was changed.")
					return nil
				case !planChanges(steps):
					fmt.Fprintln(out, "Nothing to change.")
					return nil
				}
				fmt.Fprintln(out)
				done := 0
				for _, s := range steps {
					if err := applyStep(ctx, c, s, out); err != nil {
						return fmt.Errorf("apply stopped at %s %s after %d change(s) (running it again is safe): %w", s.Kind, s.Name, done, err)
					}
					if s.Action != planUnchanged && s.Action != planKnown {
						done++
					}
				}
				return nil
			})
		},
	}
	fileFlag(cmd, &file, "the file of services and tasks")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan only; change nothing")
	cf.register(cmd)
	return cmd
}

// applyStep carries out one step of a plan and says what it did.
func applyStep(ctx context.Context, c *api.Client, s planStep, out io.Writer) error {
	switch s.Action {
	case planCreate, planUpdate:
		st, _, err := c.PutService(ctx, *s.item.Service)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, appliedText(s, st))
	case planSubmit:
		t, created, err := c.SubmitTask(ctx, *s.item.Task)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(out, "task %s submitted: %s (%s)\n", s.Name, t.ID, t.State)
		} else if t.Finished() {
			fmt.Fprintf(out, "task %s was known already and has ended: %s (%s: %s), nothing runs; give it a new ID to run it again\n", s.Name, t.ID, t.State, cmp.Or(t.Reason, fmt.Sprintf("exit code %d", t.ExitCode)))
		} else {
			fmt.Fprintf(out, "task %s was known already: %s (%s), nothing new runs\n", s.Name, t.ID, t.State)
		}
	}
	return nil
}

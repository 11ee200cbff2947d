package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

func newRunCmd(cf *clientFlags) *cobra.Command {
	var file string
	var constraints, prefer []string
	cmd := &cobra.Command{
		Use:   "run -f task.json",
		Short: "Submit a task (the seed's TaskEvent JSON, or a bare Task)",
		Long: `Submit a task to the cluster. The file holds the seed's TaskEvent
({"ID":..,"State":2,"Task":{..}}) or just the Task object; "-" reads stdin.
Memory and Disk take a number of bytes or, as Docker does, a number with a
unit: "Memory": "64m", "Disk": "1g".
The task ID is yours (generated if absent): submitting the same ID again
creates nothing new, so a retry after an error is always safe. A task that
has ended for good (stopped, or given up on) is not run again under its ID:
cube run says so and fails; submit it under a new ID (remove "ID" from the
file) to run it again.

--constraint KEY==VALUE (or KEY!=VALUE) adds to the task's Constraints: it is
placed only on a worker whose labels (cube worker --label) meet them all,
and waits Pending, with the reason, while none does. --prefer adds to its
Prefer: among the workers that meet the constraints, those meeting more of
these come first. Both are repeatable.`,
		Example: `  cube run -f task.json
  cube run -f task.json --constraint zone==a --constraint disk!=hdd --prefer rack==r1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ev, err := readTaskFile(file)
			if err != nil {
				return err
			}
			if ev, err = withPlacement(ev, constraints, prefer); err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				t, created, err := c.SubmitTask(ctx, ev)
				if err != nil {
					return err
				}
				if !created && t.Finished() {
					return endedTaskError(t)
				}
				verb := "submitted"
				if !created {
					verb = "already known, nothing new created:"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "task %s %s (%s)\n", verb, t.ID, t.State)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "task file (required)")
	cmd.Flags().StringArrayVar(&constraints, "constraint", nil, "KEY==VALUE or KEY!=VALUE a worker's labels must meet (added to the task's Constraints); repeatable")
	cmd.Flags().StringArrayVar(&prefer, "prefer", nil, "KEY==VALUE or KEY!=VALUE ranking the workers that meet the constraints (added to the task's Prefer); repeatable")
	_ = cmd.MarkFlagRequired("file")
	cf.register(cmd)
	return cmd
}

// readTaskFile reads a TaskEvent, or a bare Task wrapped into one.
func readTaskFile(path string) (api.TaskEvent, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, api.MaxBodyBytes+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return api.TaskEvent{}, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return api.TaskEvent{}, fmt.Errorf("%s: %v", path, err)
	}
	if data, err = taskFileSizes(data); err != nil {
		return api.TaskEvent{}, fmt.Errorf("%s: %w", path, err)
	}
	if _, ok := probe["Task"]; !ok {
		data = append(append([]byte(`{"State":2,"Task":`), bytes.TrimSpace(data)...), '}')
	}
	ev, err := api.DecodeTaskEvent(bytes.NewReader(data))
	if err == nil {
		err = ev.Validate()
	}
	if err != nil {
		return api.TaskEvent{}, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// withPlacement adds the --constraint and --prefer flags' entries to the
// task's Constraints and Prefer, checked as the API checks them.
func withPlacement(ev api.TaskEvent, constraints, prefer []string) (api.TaskEvent, error) {
	if len(constraints) == 0 && len(prefer) == 0 {
		return ev, nil
	}
	ev.Task.Constraints = append(append([]string(nil), ev.Task.Constraints...), constraints...)
	ev.Task.Prefer = append(append([]string(nil), ev.Task.Prefer...), prefer...)
	for _, f := range []struct {
		flag, field string
		list        []string
	}{{"--constraint", "Constraints", ev.Task.Constraints}, {"--prefer", "Prefer", ev.Task.Prefer}} {
		if _, err := api.ParseConstraints(f.field, f.list); err != nil {
			return ev, fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	return ev, nil
}

// endedTaskError is what cube run says when the file's task ID names a task
// that has ended for good: the cluster answered with it and runs nothing.
func endedTaskError(t api.Task) error {
	why := t.Reason
	if why == "" {
		why = fmt.Sprintf("exit code %d", t.ExitCode)
	}
	return fmt.Errorf("task %s already exists and is %s (%s); nothing was run. "+
		"Submit it under a new ID to run it again, e.g. remove its ID from the file", t.ID, t.State, why)
}

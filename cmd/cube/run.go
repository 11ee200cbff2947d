package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

func newRunCmd(cf *clientFlags) *cobra.Command {
	var file string
	var constraints, prefer []string
	var wait, quiet bool
	cmd := &cobra.Command{
		Use:   "run -f task.json [--wait]",
		Short: "Submit a task (the seed's TaskEvent JSON, or a bare Task); --wait follows it until it runs",
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
these come first. Both are repeatable.

--wait follows the task after the submission, printing each change of its
state, worker, restarts or health as the cluster commits it (one line each),
until it runs: Running, and passing its health check once if it has one (a
task that completes by itself with exit code 0 counts too). Without a health
check, Running is all Cube knows of a task: --wait then wants it Running for
2 s in a row, at the same placement, so that a task that exits at start-up
is not taken for one that runs; give it a HealthCheck to wait until it
answers. It waits up to --timeout (5m unless given) and rides out leader
elections on the way.

Exit status:
  0  submitted (with --wait: running, healthy if it has a health check)
  1  cube failed: a bad flag, a file it cannot read, no manager
     reachable, or another error
  2  the task was refused, by cube before sending it or by the cluster:
     invalid (the message says which field), over the cluster's task
     quota, or its ID is that of a task that ended
  3  --wait: the task ended before it ran (failed and given up on, or
     stopped); the message has its state and reason
  4  --wait: not running (healthy) within --timeout; the message has its
     state and why (for example Pending: no worker meets zone==c)`,
		Example: `  cube run -f task.json
  cube run -f task.json --wait --timeout 2m
  id=$(cube run -f task.json --wait -q) || echo "not running: exit status $?"
  cube run -f task.json --constraint zone==a --constraint disk!=hdd --prefer rack==r1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ev, err := readTaskFile(file)
			if err == nil {
				ev, err = withPlacement(ev, constraints, prefer)
			}
			var pathErr *fs.PathError
			if err != nil && !errors.As(err, &pathErr) {
				return &exitError{exitRefused, err} // the task itself is wrong
			}
			if err != nil {
				return err
			}
			var t api.Task
			var c *api.Client
			err = cf.call(cmd, func(ctx context.Context, cl *api.Client) error {
				var created bool
				t, created, err = cl.SubmitTask(ctx, ev)
				if err != nil {
					return refusedOr(err)
				}
				if !created && t.Finished() {
					return &exitError{exitRefused, endedTaskError(t)}
				}
				verb := "submitted"
				if !created {
					verb = "already known, nothing new created:"
				}
				if quiet {
					fmt.Fprintln(cmd.OutOrStdout(), t.ID)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "task %s %s (%s)\n", verb, t.ID, t.State)
				}
				c = cl
				return nil
			})
			if err != nil || !wait {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				out = io.Discard // the ID only; the verdict is the exit status (and stderr)
			}
			return waitRunning(cmd.Context(), out, c, t, cf.waitTimeout(cmd))
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "task file (required)")
	cmd.Flags().StringArrayVar(&constraints, "constraint", nil, "KEY==VALUE or KEY!=VALUE a worker's labels must meet (added to the task's Constraints); repeatable")
	cmd.Flags().StringArrayVar(&prefer, "prefer", nil, "KEY==VALUE or KEY!=VALUE ranking the workers that meet the constraints (added to the task's Prefer); repeatable")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the task until it runs (and passes its health check), printing each change; see the exit statuses above")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print the task's ID only (with --wait: nothing more; the exit status says how it went)")
	_ = cmd.MarkFlagRequired("file")
	cf.register(cmd)
	return cmd
}

// refusedOr marks an answer that refuses a submission (400, 409, 413,
// 429: the task is invalid, conflicts, or is over the quota) with exit
// status 2; other errors are returned as they are.
func refusedOr(err error) error {
	var se *api.StatusError
	if errors.As(err, &se) && se.StatusCode >= 400 && se.StatusCode < 500 {
		return &exitError{exitRefused, err}
	}
	return err
}

// waitRunning follows t after its submission until it runs (healthy),
// ends, or timeout passes, printing its History as it grows. It reads
// GET /tasks/ID through the leader (?consistent), so that what it prints
// is what the cluster committed, and a manager that has not applied the
// submission yet never answers "no such task".
func waitRunning(ctx context.Context, out io.Writer, c *api.Client, t api.Task, timeout time.Duration) error {
	hp := &historyPrinter{w: out}
	hp.print(t.History)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var running time.Time // when this wait first saw the placement Running, for a task without a health check
	var runningGen uint64
	err := pollUntil(ctx, func(ctx context.Context) (bool, error) {
		cur, err := c.Task(ctx, t.ID, true)
		if err != nil {
			return false, err
		}
		t = cur
		hp.print(t.History)
		if t.State == api.Running && t.DesiredState == api.Running && t.HealthCheck == "" {
			// Measured on this process's clock: a worker's StartTime is
			// its own wall clock's.
			if running.IsZero() || runningGen != t.Generation {
				running, runningGen = time.Now(), t.Generation
			}
			return time.Since(running) >= runSettle, nil
		}
		running = time.Time{}
		done, _ := runVerdict(t)
		return done, nil
	})
	if err != nil {
		if errors.Is(err, errWaitTimedOut) {
			return &exitError{exitTimedOut, fmt.Errorf("task %s is not running%s after %s: %s (%w)", t.ID, healthyWord(t), timeout, whyNotRunning(t), err)}
		}
		return explainUnreachable(err)
	}
	_, verdict := runVerdict(t)
	if verdict != nil {
		return verdict
	}
	switch {
	case t.State == api.Running && t.HealthCheck != "":
		fmt.Fprintf(out, "task %s is running on %s and passed its health check\n", t.ID, t.Worker)
	case t.State == api.Running:
		fmt.Fprintf(out, "task %s is running on %s\n", t.ID, t.Worker)
	default:
		fmt.Fprintf(out, "task %s completed on %s (exit code 0)\n", t.ID, orDash(t.Worker))
	}
	return nil
}

// runSettle is how long --wait wants a task without a health check Running
// at one placement before it takes it for running: a task that exits at
// start-up runs for well under it (the echo image's: about 0.1 s), and a
// person waits little more.
const runSettle = 2 * time.Second

// runVerdict says whether a wait for t to run is over, and if so whether
// it failed: running (and healthy, for a task with a health check), or
// completed by itself with exit code 0, is done and well; ended for good
// otherwise (failed and given up on, stopped) is done and an error with
// exit status 3. Anything else (pending, starting, failed but to be
// restarted, stopping) waits on.
func runVerdict(t api.Task) (bool, error) {
	switch {
	case t.State == api.Running && t.DesiredState == api.Running:
		return t.HealthCheck == "" || t.Healthy, nil
	case t.State == api.Completed && t.DesiredState == api.Running && t.ExitCode == 0:
		return true, nil
	case t.Finished():
		why := t.Reason
		if why == "" {
			why = fmt.Sprintf("exit code %d", t.ExitCode)
		}
		return true, &exitError{exitEnded, fmt.Errorf("task %s ended before it ran: %s (%s)", t.ID, t.State, why)}
	}
	return false, nil
}

// healthyWord is " healthy" for a task with a health check.
func healthyWord(t api.Task) string {
	if t.HealthCheck != "" {
		return " healthy"
	}
	return ""
}

// whyNotRunning says where a task that a wait gave up on stands.
func whyNotRunning(t api.Task) string {
	s := t.State.String()
	if t.Worker != "" {
		s += " on " + t.Worker
	}
	switch {
	case t.State == api.Running && t.HealthCheck != "":
		s += ", " + healthState(t) + " (health check " + healthText(t) + ")"
	case t.Reason != "":
		s += ": " + t.Reason
	}
	if t.RestartCount > 0 {
		s += fmt.Sprintf("; restarted %d time(s)", t.RestartCount)
	}
	return s
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

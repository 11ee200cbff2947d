package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// exitGap is the exit status of cube events when changes were lost: a
// script that follows the stream re-reads the state on it, and restarts.
const exitGap = 3

// newEventsCmd is cube events. It streams until interrupted: --timeout bounds
// neither the stream nor its client's retries (the client's default).
func newEventsCmd(cf *clientFlags) *cobra.Command {
	var (
		output *outputFormat
		after  string
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream task state changes as they commit (until Ctrl-C)",
		Long: `Stream the tasks' state changes as they commit, until Ctrl-C: one line per
change, with the raft index it committed at (INDEX.SEQ when one entry changed
several tasks: deleting a service stops its tasks). A stream has no end to
close an array at, so -o json prints one JSON object per line (JSON Lines), each
a change as GET /events sends it ({"Index":..,"Seq":..,"Task":{..}}, Seq
omitted when 0):

  cube events -o json | jq -c 'select(.Task.State == 4) | .Task.Reason'

It follows the cluster, not one manager: when its manager dies or shuts down,
is cut off from the other managers (it then ends the stream, saying it has
not heard from a leader), or goes silent (no change and no heartbeat for 15 s:
it hung, or the network path to it did), cube events resumes on the next
manager given with -m after the last change it printed, says so on stderr,
and prints every change once, in order. --after INDEX[.SEQ] starts after that
change instead of now (INDEX alone: after every change of that entry), to
pick up where an earlier run stopped; a position the cluster has not reached
(a typo) is refused, naming the cluster's last index.

Every manager keeps the last 4096 changes, and none from before its last
restart. If none of the managers reachable holds every change after the last
one printed, cube events says which changes are unknown and exits with status
3: re-read the state (cube status) and follow on with --after.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var opts api.EventsOptions
			if after != "" {
				p, err := api.ParsePosition(after)
				if err != nil {
					return fmt.Errorf("--after: %w", err)
				}
				opts.After = &p
			}
			c, err := cf.newClient(0) // 0: api.DefaultRetryFor
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errOut := cmd.ErrOrStderr()
			opts.OnResume = func(r api.Resume) {
				fmt.Fprintf(errOut, "cube events: manager %s stopped streaming (%v); resumed after %s on %s\n", r.From, r.Cause, r.After, r.To)
			}
			out := cmd.OutOrStdout()
			var emit func(api.Change) error
			if *output == outputJSON {
				enc := json.NewEncoder(out) // one object a line
				emit = func(ch api.Change) error { return enc.Encode(ch) }
			} else {
				fmt.Fprintln(out, "INDEX\tTASK\tNAME\tSTATE\tWORKER\tGEN\tRESTARTS\tREASON")
				emit = func(ch api.Change) error {
					t := ch.Task
					_, err := fmt.Fprintf(out, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", changeIndex(ch), t.ID, t.Name, t.State, t.Worker, t.Generation, t.RestartCount, t.Reason)
					return err
				}
			}
			err = c.EventsWith(ctx, opts, emit)
			if ctx.Err() != nil {
				return nil
			}
			return explainEventsEnd(err)
		},
	}
	output = addOutputFlag(cmd)
	cmd.Flags().StringVar(&after, "after", "", "start after this change (INDEX[.SEQ], as printed) instead of now")
	cf.register(cmd)
	return cmd
}

// changeIndex is a change's INDEX column: its raft index, with .SEQ when it
// is not the entry's first change.
func changeIndex(ch api.Change) string {
	if ch.Seq == 0 {
		return fmt.Sprint(ch.Index)
	}
	return ch.Position().String()
}

// explainedError is an error with a message of its own that still
// unwraps to its cause (errors.As finds the *api.GapError under it).
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

// explainEventsEnd turns the end of a stream into what the user must know:
// on a gap, which changes are unknown and how to go on (exit status 3).
func explainEventsEnd(err error) error {
	var gap *api.GapError
	if !errors.As(err, &gap) {
		return explainUnreachable(err)
	}
	msg := fmt.Sprintf("events: no manager reachable holds every change after %s", gap.After)
	next := "cube events"
	if gap.Oldest != nil {
		msg += fmt.Sprintf(": the changes after %s up to and including %s are unknown (%s holds only those after %s", gap.After, gap.Oldest, gap.Manager, gap.Oldest)
		next = "cube events --after " + gap.Oldest.String()
	} else {
		msg += fmt.Sprintf(" (%s", gap.Manager)
	}
	if gap.Reason != "" {
		msg += ": " + gap.Reason
	}
	msg += fmt.Sprintf("); re-read the state with `cube status`, and follow on with `%s`", next)
	return &exitError{code: exitGap, err: &explainedError{msg: msg, err: err}}
}

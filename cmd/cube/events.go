package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// newEventsCmd is cube events. It streams until interrupted: --timeout bounds
// neither the stream nor its client's retries (the client's default).
func newEventsCmd(cf *clientFlags) *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream task state changes as they commit (until Ctrl-C)",
		Long: `Stream the tasks' state changes as they commit, until Ctrl-C: one line per
change, with the raft index it committed at. A stream has no end to close an
array at, so -o json prints one JSON object per line (JSON Lines), each a
change as GET /events sends it ({"Index":..,"Task":{..}}):

  cube events -o json | jq -c 'select(.Task.State == 4) | .Task.Reason'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.newClient(0) // 0: api.DefaultRetryFor
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			if *output == outputJSON {
				enc := json.NewEncoder(out) // one object a line
				err = c.Events(ctx, func(ch api.Change) error { return enc.Encode(ch) })
				if ctx.Err() != nil {
					return nil
				}
				return explainUnreachable(err)
			}
			fmt.Fprintln(out, "INDEX\tTASK\tNAME\tSTATE\tWORKER\tGEN\tRESTARTS\tREASON")
			err = c.Events(ctx, func(ch api.Change) error {
				t := ch.Task
				_, err := fmt.Fprintf(out, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", ch.Index, t.ID, t.Name, t.State, t.Worker, t.Generation, t.RestartCount, t.Reason)
				return err
			})
			if ctx.Err() != nil {
				return nil
			}
			return explainUnreachable(err)
		},
	}
	output = addOutputFlag(cmd)
	cf.register(cmd)
	return cmd
}

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
	cmd := &cobra.Command{
		Use:   "run -f task.json",
		Short: "Submit a task (the seed's TaskEvent JSON, or a bare Task)",
		Long: `Submit a task to the cluster. The file holds the seed's TaskEvent
({"ID":..,"State":2,"Task":{..}}) or just the Task object; "-" reads stdin.
The task ID is yours (generated if absent): submitting the same ID again
creates nothing new, so a retry after an error is always safe.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ev, err := readTaskFile(file)
			if err != nil {
				return err
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				t, created, err := c.SubmitTask(ctx, ev)
				if err != nil {
					return err
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

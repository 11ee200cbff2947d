package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// This file resolves the task a command names (cube status ID, cube stop
// ID, cube logs ID): a whole UUID, a prefix of one that only one task's ID
// begins with (as docker and git take), or the name of one task.

// oneTaskRef is the Args of the commands on one task: exactly one argument,
// not blank. resolveTaskRef turns it into a task.
func oneTaskRef(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return err
	}
	if strings.TrimSpace(args[0]) == "" {
		return fmt.Errorf("empty task ID; want a task ID, a prefix of one, or a task name")
	}
	return nil
}

// taskLister is what resolving a reference needs of a client.
type taskLister interface {
	Tasks(ctx context.Context, consistent bool) ([]api.Task, error)
}

// resolveTaskID returns the ID of the task ref names. A whole UUID is taken
// as it is, without asking the cluster; a prefix or a name is looked up in
// the task list.
func resolveTaskID(ctx context.Context, c taskLister, ref string) (uuid.UUID, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return id, nil
	}
	t, err := findTask(ctx, c, ref)
	return t.ID, err
}

// findTask looks ref up in the task list: the tasks whose ID begins with ref
// (case-insensitive, hyphens as in the UUID's usual spelling) or whose name
// is ref. One match is the task; none or several are an error, the latter
// listing the candidates.
func findTask(ctx context.Context, c taskLister, ref string) (api.Task, error) {
	tasks, err := c.Tasks(ctx, false)
	if err != nil {
		return api.Task{}, err
	}
	return matchTask(tasks, ref)
}

// matchTask is findTask on a task list already fetched.
func matchTask(tasks []api.Task, ref string) (api.Task, error) {
	prefix := strings.ToLower(ref)
	var found []api.Task
	for _, t := range tasks {
		if strings.HasPrefix(t.ID.String(), prefix) || (t.Name != "" && t.Name == ref) {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return api.Task{}, fmt.Errorf("no task has the ID, ID prefix or name %q (cube status lists them)", ref)
	}
	slices.SortFunc(found, func(a, b api.Task) int { return a.SubmitTime.Compare(b.SubmitTime) })
	var b strings.Builder
	fmt.Fprintf(&b, "%q names %d tasks; give more of the ID:", ref, len(found))
	for _, t := range found {
		fmt.Fprintf(&b, "\n  %s  %s  %s  submitted %s", t.ID, orDash(t.Name), t.State, ago(t.SubmitTime))
	}
	return api.Task{}, fmt.Errorf("%s", b.String())
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

func newLogsCmd(cf *clientFlags) *cobra.Command {
	var tail int
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID|PREFIX|NAME [-f]",
		Short: "Show a task's container output (read through its worker); -f follows it",
		Long: `Show the output (stdout and stderr) of a task's container, read through the
worker it runs on; --tail N shows only the last N lines.

-f/--follow goes on printing what the container writes, as it writes it,
until Ctrl-C or the task ends for good; then it says how the task ended (on
stderr: stdout holds the container's output only). When the task is
restarted or moved, it follows the new container from its first line, after
a line (on stderr) saying so. A stream that breaks (its manager or worker went
away) is opened again through another manager, without printing a line twice
(unless --tail was given: then the tail is shown again).`,
		Example: `  cube logs web.1 --tail 20
  cube logs -f 5b7e`,
		Args:              oneTaskRef,
		ValidArgsFunction: cf.completeTasks(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow {
				return followLogs(cmd, cf, args[0], tail)
			}
			return cf.call(cmd, func(ctx context.Context, c *api.Client) error {
				id, err := resolveTaskID(ctx, c, args[0])
				if err != nil {
					return err
				}
				out, err := c.Logs(ctx, id, tail)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			})
		},
	}
	cmd.Flags().IntVar(&tail, "tail", 0, "show only the last N lines (0: all)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "go on printing what the container writes until the task ends or Ctrl-C")
	cf.register(cmd)
	return cmd
}

// followLogs is cube logs -f: it follows the task's current container
// through Client.FollowLogs and, each time that stream ends, reads the task
// to learn why: ended for good (say so, done), restarted or moved (follow
// the new container from its start), or the same container (the stream
// broke, or the end of the container is not reported yet: open it again,
// skipping what was printed). Ctrl-C ends it without an error. --timeout
// bounds each read of the task and how long the cluster may stay out of
// reach; the following itself has no bound.
func followLogs(cmd *cobra.Command, cf *clientFlags, ref string, tail int) error {
	c, err := cf.newClient(cf.timeout)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	id, err := resolveTaskID(rctx, c, ref)
	cancel()
	if err != nil {
		return explainUnreachable(err)
	}
	f := &follower{c: c, id: id, out: cmd.OutOrStdout(), note: cmd.ErrOrStderr(), tail: tail, giveUp: cf.timeout}
	err = f.run(ctx)
	if ctx.Err() != nil {
		return nil // Ctrl-C
	}
	return explainUnreachable(err)
}

// follower is the state of one cube logs -f.
type follower struct {
	c         *api.Client
	id        uuid.UUID
	out, note io.Writer
	tail      int // of the first container only
	giveUp    time.Duration

	container string // the container followed, "" before the first
	seen      int64  // bytes of its output printed (or skipped) so far
	whole     bool   // seen counts from its first byte (no --tail)
}

func (f *follower) run(ctx context.Context) error {
	var failingSince time.Time
	ended := "" // a container whose stream ended: it stopped, its report is on its way
	for {
		t, err := f.task(ctx)
		if err != nil {
			if !transient(err) || f.outOfReach(&failingSince) {
				return err
			}
			f.pause(ctx)
			continue
		}
		if t.Finished() {
			fmt.Fprintln(f.note, endedText(t))
			return nil
		}
		if t.ContainerID == "" || t.ContainerID == ended {
			// Pending or Scheduled (no container yet), or the container
			// ended and the task does not say so yet.
			f.pause(ctx)
			continue
		}
		tail := 0
		switch {
		case f.container == "":
			f.container, f.seen, f.whole = t.ContainerID, 0, f.tail == 0
			tail = f.tail
		case t.ContainerID != f.container:
			fmt.Fprintf(f.note, "cube: task %s is now %s on %s (container %s, restart %d)%s; following it from its start\n",
				t.ID, t.State, t.Worker, shortID(t.ContainerID), t.RestartCount, reasonSuffix(t.Reason))
			f.container, f.seen, f.whole = t.ContainerID, 0, true
		case !f.whole:
			// The stream broke after a tail: where it stood in the whole
			// output is unknown, so the tail is shown again.
			fmt.Fprintf(f.note, "cube: following task %s again from its last %d line(s)\n", t.ID, f.tail)
			f.seen, tail = 0, f.tail
		}
		w := &skipWriter{w: f.out, skip: f.seen}
		err = f.c.FollowLogs(ctx, t.ID, tail, w)
		f.seen = w.n
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			// The stream ends when the container does (a break upstream
			// is an error, never an end: api.serveLogs aborts).
			ended, failingSince = t.ContainerID, time.Time{}
		case w.n > 0:
			failingSince = time.Time{} // it broke after a while: follow again
		case errors.Is(err, api.ErrNotFound) || transient(err):
			if f.outOfReach(&failingSince) {
				return err
			}
			f.pause(ctx)
		default:
			return err
		}
	}
}

// task reads the task, bounded as one call.
func (f *follower) task(ctx context.Context) (api.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, pollCallTimeout)
	defer cancel()
	return f.c.Task(ctx, f.id, false)
}

// outOfReach records a failure and reports whether failures have gone on
// for longer than giveUp.
func (f *follower) outOfReach(since *time.Time) bool {
	if since.IsZero() {
		*since = time.Now()
	}
	return time.Since(*since) > f.giveUp
}

// pause waits pollInterval or until ctx ends.
func (f *follower) pause(ctx context.Context) {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// endedText says how a task ended, for the last line of cube logs -f.
func endedText(t api.Task) string {
	s := fmt.Sprintf("cube: task %s ended: %s", t.ID, t.State)
	if t.State.Terminal() {
		s += fmt.Sprintf(" (exit code %d)", t.ExitCode)
	}
	return s + reasonSuffix(t.Reason)
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + reason
}

// skipWriter writes what comes to w, after skipping the first skip bytes
// (printed already from an earlier stream of the same output), and counts
// every byte it was given in n.
type skipWriter struct {
	w    io.Writer
	skip int64
	n    int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	total := len(p)
	if k := min(int64(len(p)), s.skip); k > 0 {
		p, s.skip = p[k:], s.skip-k
	}
	if len(p) > 0 {
		if _, err := s.w.Write(p); err != nil {
			return 0, err
		}
	}
	s.n += int64(total)
	return total, nil
}

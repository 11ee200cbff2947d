package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/spf13/cobra"
)

// clearScreen moves the cursor home and clears the screen (ANSI), as
// watch(1) redraws.
const clearScreen = "\x1b[H\x1b[2J"

// watch runs draw every interval until Ctrl-C (or SIGTERM), which ends it
// without an error. Each round is drawn into a buffer first and written at
// once: on a terminal after clearing the screen, so that the listing is
// redrawn in place; elsewhere (a pipe, a file) after a line with the time,
// so that the snapshots follow each other readably. A round that fails
// shows its error in place of the listing and the watch goes on: a leader
// election or a manager restart is something to watch, not a reason to stop.
// Every round is bounded by --timeout.
func (f *clientFlags) watch(cmd *cobra.Command, interval time.Duration, draw func(ctx context.Context, c *api.Client, w io.Writer) error) error {
	c, err := f.newClient(f.timeout)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := cmd.OutOrStdout()
	tty := isTerminal(out)
	title := strings.TrimSpace(cmd.CommandPath() + " " + strings.Join(cmd.Flags().Args(), " "))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var buf bytes.Buffer
		rctx, cancel := context.WithTimeout(ctx, f.timeout)
		err := draw(rctx, c, &buf)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fmt.Fprintf(&buf, "cube: %v\n", explainUnreachable(err))
		}
		now := time.Now().Format(time.RFC3339)
		if tty {
			fmt.Fprintf(out, "%sEvery %s: %s    %s\n\n", clearScreen, interval, title, now)
		} else {
			fmt.Fprintf(out, "=== %s (every %s)\n", now, interval)
		}
		if _, err := out.Write(buf.Bytes()); err != nil {
			return err // the reader went away (a closed pipe)
		}
		if !tty {
			fmt.Fprintln(out)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a terminal (a character device), where
// the screen may be cleared.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

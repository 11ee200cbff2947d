package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/spf13/cobra"
)

// snapshotWarning is said in the help of every snapshot command.
const snapshotWarning = `A snapshot holds the whole replicated state: every task with its Env values,
the workers, and the token table (hashes of the secrets, never a secret, but
whoever restores it decides who may call the cluster). Keep the file as you
would a credential: it is written readable by its owner only (0600).`

func newSnapshotCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, restore and inspect snapshots of the whole replicated state",
		Long: `Back up and restore the managers' replicated state.

A snapshot file starts with one line of JSON: the file format, the state's
version, the raft index and term it reflects, the size and SHA-256 of the
state that follows, and how many tasks, workers and tokens it holds. A restore
refuses a file whose checksum fails or that a newer Cube wrote, and changes
nothing then.

` + snapshotWarning,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSnapshotSaveCmd(cf), newSnapshotRestoreCmd(cf), newSnapshotInspectCmd())
	return cmd
}

// callLong is clientFlags.call for a request that may take the whole
// --timeout (a snapshot of a large state), not DefaultRequestTimeout.
func (f *clientFlags) callLong(cmd *cobra.Command, fn func(ctx context.Context, c *api.Client) error) error {
	tlsCfg, err := f.creds.tls()
	if err != nil {
		return err
	}
	c, err := api.NewClient(splitList(f.managers), api.ClientOptions{RetryFor: f.timeout, Timeout: f.timeout, Token: f.creds.token, TLS: tlsCfg, GiveUpUnreachable: giveUpUnreachable})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	// Ask first who leads (any manager answers, and the client follows the
	// X-Cube-Leader of the answer), so that the snapshot goes to the leader
	// itself: a follower would forward it, and give up after its forward
	// timeout (10 s) on a large state that the leader is still restoring.
	_, _ = c.Cluster(ctx)
	return explainUnreachable(fn(ctx, c))
}

func newSnapshotSaveCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Save the cluster's whole state into FILE (written 0600)",
		Long: `Save the cluster's whole state into FILE. Any manager may be named: the leader
takes the snapshot after a barrier, so it holds every write acknowledged
before the command began. The file is checked whole before it is written
(through a temporary file, then renamed), and never world-readable.

` + snapshotWarning,
		Example: `  cube operator snapshot save backup.snap`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.callLong(cmd, func(ctx context.Context, c *api.Client) error {
				file, err := c.SaveSnapshot(ctx)
				if err != nil {
					return err
				}
				info, _, err := fsm.DecodeSnapshotFile(bytes.NewReader(file))
				if err != nil {
					return fmt.Errorf("the manager's snapshot does not check out, nothing written: %w", err)
				}
				if err := writePrivate(args[0], file); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "saved %s: index %d, term %d, %d tasks, %d workers, %d tokens, sha256 %s\n",
					args[0], info.Index, info.Term, info.Tasks, info.Workers, info.Tokens, info.SHA256)
				return nil
			})
		},
	}
	cf.register(cmd)
	return cmd
}

// writePrivate writes data to path, readable by its owner only, through a
// temporary file in the same directory so that a failure never leaves half
// a file at path.
func writePrivate(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readSnapshotFile reads and checks a snapshot file.
func readSnapshotFile(path string) ([]byte, api.SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, api.SnapshotInfo{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, api.MaxSnapshotBytes+maxSnapshotHeader))
	if err != nil {
		return nil, api.SnapshotInfo{}, fmt.Errorf("read %s: %w", path, err)
	}
	info, _, err := fsm.DecodeSnapshotFile(bytes.NewReader(data))
	if err != nil {
		return nil, info, fmt.Errorf("%s: %w", path, err)
	}
	return data, info, nil
}

// maxSnapshotHeader is room for a snapshot file's header line beyond its
// state.
const maxSnapshotHeader = 4096

func newSnapshotRestoreCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's whole state with FILE's",
		Long: `Replace the cluster's whole state (tasks, workers, tokens) with a snapshot's,
on every manager: into the running cluster it was saved from (to undo a bad
change), or into a new cluster (to seed it from a backup). The file is checked
here and again by the leader; a damaged file, or one a newer Cube wrote, is
refused and nothing changes.

What follows: tasks the snapshot holds and the workers do not run are placed
again; containers of tasks it does not hold are stopped; a task whose worker
runs a newer generation of it is placed again above it. Workers the snapshot
names that this cluster has never seen are recorded dead, and their tasks
placed elsewhere. The token table becomes the snapshot's: afterwards, use the
tokens of the cluster the snapshot came from (certificates are not in it).

` + snapshotWarning,
		Example: `  cube operator snapshot restore backup.snap`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, _, err := readSnapshotFile(args[0])
			if err != nil {
				return err
			}
			return cf.callLong(cmd, func(ctx context.Context, c *api.Client) error {
				info, err := c.RestoreSnapshot(ctx, file)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "restored %s: index %d, term %d, %d tasks, %d workers, %d tokens (taken %s)\n",
					args[0], info.Index, info.Term, info.Tasks, info.Workers, info.Tokens, info.Created.Format(time.RFC3339))
				return nil
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func newSnapshotInspectCmd() *cobra.Command {
	var output *outputFormat
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a snapshot file and print its version, index, term, checksum and counts",
		Long: `Check a snapshot file whole (format, version, size, SHA-256, that the state
decodes) and print what it holds. No manager is needed. A file that does not
check out is reported with what is wrong, and the command fails.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, info, err := readSnapshotFile(args[0])
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), *output, info, func(w io.Writer) {
				fmt.Fprintf(w, "Format\t%d\n", info.Format)
				fmt.Fprintf(w, "Version\t%d\n", info.Version)
				fmt.Fprintf(w, "Index\t%d\n", info.Index)
				fmt.Fprintf(w, "Term\t%d\n", info.Term)
				fmt.Fprintf(w, "Created\t%s\n", info.Created.Format(time.RFC3339))
				fmt.Fprintf(w, "Size\t%d\n", info.Size)
				fmt.Fprintf(w, "SHA256\t%s\n", info.SHA256)
				fmt.Fprintf(w, "Tasks\t%d\n", info.Tasks)
				fmt.Fprintf(w, "Workers\t%d\n", info.Workers)
				fmt.Fprintf(w, "Tokens\t%d\n", info.Tokens)
			})
		},
	}
	output = addOutputFlag(cmd)
	return cmd
}

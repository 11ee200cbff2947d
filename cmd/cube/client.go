package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// defaultManagers are the managers of `make cluster` (and `cube dev` on the first).
const defaultManagers = "127.0.0.1:5556,127.0.0.1:5566,127.0.0.1:5576"

// clientFlags are shared by the commands that talk to the managers.
type clientFlags struct {
	managers string
	timeout  time.Duration
}

func (f *clientFlags) register(cmd *cobra.Command) {
	def := defaultManagers
	if env := os.Getenv("CUBE_MANAGERS"); env != "" {
		def = env
	}
	cmd.PersistentFlags().StringVarP(&f.managers, "manager", "m", def, "comma-separated manager addresses; the client finds the leader itself (env CUBE_MANAGERS)")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 20*time.Second, "give up after this long (retries while no leader is elected included)")
}

func (f *clientFlags) client() (*api.Client, context.Context, context.CancelFunc, error) {
	c, err := api.NewClient(splitList(f.managers), api.ClientOptions{RetryFor: f.timeout})
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	return c, ctx, cancel, nil
}

func addClientCommands(root *cobra.Command) {
	var cf clientFlags
	cf.register(root)

	var file string
	run := &cobra.Command{
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
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
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
		},
	}
	run.Flags().StringVarP(&file, "file", "f", "", "task file (required)")
	_ = run.MarkFlagRequired("file")

	stop := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a task (from any state that has not ended)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := uuid.Parse(args[0])
			if err != nil {
				return fmt.Errorf("task ID %q is not a UUID", args[0])
			}
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
			t, err := c.StopTask(ctx, id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stop of task %s committed (state %s)\n", t.ID, t.State)
			return nil
		},
	}

	var consistent bool
	status := &cobra.Command{
		Use:   "status",
		Short: "List tasks: state, worker, restarts and the reason of the last failure",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
			tasks, err := c.Tasks(ctx, consistent)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tCREATED\tSTATE\tCONTAINERNAME\tIMAGE\tWORKER\tPORTS\tRESTARTS\tREASON")
			for _, t := range tasks {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.Name, ago(t.SubmitTime), t.State,
					shortID(t.ContainerID), t.Image, t.Worker, portsText(t.HostPorts), t.RestartCount, t.Reason)
			}
			return w.Flush()
		},
	}
	status.Flags().BoolVar(&consistent, "consistent", false, "linearizable read through the leader")

	node := &cobra.Command{
		Use:   "node",
		Short: "List workers: liveness, capacity and what is allocated",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
			nodes, err := c.Nodes(ctx, false)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSTATE\tSCHEDULING\tAPI\tCPU\tMEMORY\tDISK\tTASKS\tRUNTIME")
			for _, n := range nodes {
				rt := "up"
				if !n.RuntimeAvailable {
					rt = "down"
				}
				sched := "eligible"
				if n.Drain {
					sched = "draining"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.2f/%.0f\t%s/%s\t%s/%s\t%d\t%s\n", n.Name, n.State, sched, n.API,
					n.AllocatedCpu, n.Cpu, bytesHuman(n.AllocatedMemory), bytesHuman(n.Memory),
					bytesHuman(n.AllocatedDisk), bytesHuman(n.Disk), n.TaskCount, rt)
			}
			return w.Flush()
		},
	}
	drainCmd := func(use, short, long string, drain bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " WORKER",
			Short: short,
			Long:  long,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, ctx, cancel, err := cf.client()
				if err != nil {
					return err
				}
				defer cancel()
				n, err := c.DrainNode(ctx, args[0], drain)
				if err != nil {
					return err
				}
				if drain {
					fmt.Fprintf(cmd.OutOrStdout(), "worker %s is draining: nothing new is placed on it and its %d task(s) move to other workers (cube node shows TASKS fall to 0)\n", n.Name, n.TaskCount)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "worker %s is eligible again: new and restarted tasks may be placed on it\n", n.Name)
				}
				return nil
			},
		}
	}
	node.AddCommand(
		drainCmd("drain", "Drain a worker: place nothing new on it and move its tasks elsewhere",
			`Drain a worker before maintenance or retirement.

The leader places nothing new on the worker and moves each of its running tasks
to a worker with room: the task starts there at a new generation (not counted
as a restart) and its old container is stopped. A task no other worker has room
for keeps running where it is until room appears. The drain stays set, across
worker and manager restarts, until "cube node undrain".`, true),
		drainCmd("undrain", "Make a drained worker eligible for placements again",
			`Make a drained worker eligible again. Tasks already moved away stay where
they are; new, pending and restarted tasks may be placed on it again.`, false),
	)

	members := &cobra.Command{
		Use:   "members",
		Short: "List the raft servers (leader marked) and the gossip members with their state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
			info, err := c.Cluster(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "raft (term %d, answered by %s at index %d)\n", info.Term, info.Self, info.AppliedIndex)
			fmt.Fprintln(w, "ID\tRAFT ADDR\tAPI\tVOTER\tLEADER")
			for _, s := range info.Servers {
				lead := ""
				if s.Leader {
					lead = "*"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\n", s.ID, s.Addr, s.API, s.Voter, lead)
			}
			fmt.Fprintln(w, "\ngossip")
			fmt.Fprintln(w, "NAME\tADDR\tROLE\tAPI\tSTATE")
			for _, m := range info.Members {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.Role, m.API, m.State)
			}
			return w.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a manager from the raft configuration (before retiring its machine)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
			if err := c.RemoveManager(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "manager %s removed from the raft configuration\n", args[0])
			return nil
		},
	}
	members.AddCommand(remove)

	events := &cobra.Command{
		Use:   "events",
		Short: "Stream task state changes as they commit (until Ctrl-C)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := api.NewClient(splitList(cf.managers), api.ClientOptions{})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "INDEX\tTASK\tNAME\tSTATE\tWORKER\tGEN\tRESTARTS\tREASON")
			err = c.Events(ctx, func(ch api.Change) error {
				t := ch.Task
				_, err := fmt.Fprintf(out, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", ch.Index, t.ID, t.Name, t.State, t.Worker, t.Generation, t.RestartCount, t.Reason)
				return err
			})
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}

	var tail int
	logs := &cobra.Command{
		Use:   "logs ID",
		Short: "Show a task's container output (read through its worker)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := uuid.Parse(args[0])
			if err != nil {
				return fmt.Errorf("task ID %q is not a UUID", args[0])
			}
			c, ctx, cancel, err := cf.client()
			if err != nil {
				return err
			}
			defer cancel()
			out, err := c.Logs(ctx, id, tail)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	logs.Flags().IntVar(&tail, "tail", 0, "show only the last N lines (0: all)")
	root.AddCommand(run, stop, status, node, members, events, logs)
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

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

// portsText shows where a task's ports are published on its worker's host,
// as docker ps does ("49153->7777/tcp"); an address is named only when the
// port is not published on every interface. A port published on IPv4 is
// shown with its IPv4 binding only (the engine may give its IPv6 twin
// another host port).
func portsText(pm api.PortMap) string {
	if len(pm) == 0 {
		return "-"
	}
	seen := map[string]bool{}
	var out []string
	for _, cport := range slices.Sorted(maps.Keys(pm)) {
		binds := pm[cport]
		if v4 := slices.DeleteFunc(slices.Clone(binds), func(b api.PortBinding) bool { return strings.Contains(b.HostIp, ":") }); len(v4) > 0 {
			binds = v4
		}
		for _, b := range binds {
			host := b.HostPort
			if ip := b.HostIp; ip != "" && ip != "0.0.0.0" && ip != "::" {
				host = net.JoinHostPort(ip, b.HostPort)
			}
			s := host + "->" + cport
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

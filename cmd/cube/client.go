package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// This file holds what the client commands (run.go, stop.go, status.go,
// node.go, members.go, logs.go, events.go) share: the flags that name the
// managers, the client they build, and the helpers of their output.

// defaultManagers are the managers of `make cluster` (and `cube dev` on the first).
const defaultManagers = "127.0.0.1:5556,127.0.0.1:5566,127.0.0.1:5576"

// clientFlags are shared by the commands that talk to the managers.
type clientFlags struct {
	managers string
	timeout  time.Duration
}

// register adds -m/--manager and --timeout to cmd and to its subcommands
// (cube node drain, cube members remove). Only client commands take them.
func (f *clientFlags) register(cmd *cobra.Command) {
	def := defaultManagers
	if env := os.Getenv("CUBE_MANAGERS"); env != "" {
		def = env
	}
	cmd.PersistentFlags().StringVarP(&f.managers, "manager", "m", def, "comma-separated manager addresses; the client finds the leader itself (env CUBE_MANAGERS)")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 20*time.Second, "give up after this long (retries while no leader is elected included)")
}

// newClient returns a client of the --manager addresses that retries for
// retryFor while no leader answers.
func (f *clientFlags) newClient(retryFor time.Duration) (*api.Client, error) {
	return api.NewClient(splitList(f.managers), api.ClientOptions{RetryFor: retryFor})
}

// call runs fn with a client of the managers and a context bounded by
// --timeout (the client's retries included).
func (f *clientFlags) call(cmd *cobra.Command, fn func(ctx context.Context, c *api.Client) error) error {
	c, err := f.newClient(f.timeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	return fn(ctx, c)
}

// oneTaskID is the Args of the commands on one task (cube stop ID, cube
// logs ID): exactly one argument, a task ID. Their RunE parses it with
// uuid.MustParse.
func oneTaskID(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return err
	}
	if _, err := uuid.Parse(args[0]); err != nil {
		return fmt.Errorf("task ID %q is not a UUID", args[0])
	}
	return nil
}

// newTable returns the writer of the client commands' tables: columns
// aligned, two spaces apart. Flush it at the end.
func newTable(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
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

package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/docker/go-units"
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
	creds    credentials
}

// register adds -m/--manager and --timeout to cmd and to its subcommands
// (cube node drain, cube members remove). Only client commands take them.
func (f *clientFlags) register(cmd *cobra.Command) {
	env := clusterEnv(os.LookupEnv)
	def := defaultManagers
	if v := env("CUBE_MANAGERS"); v != "" {
		def = v
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&f.managers, "manager", "m", def, "comma-separated manager addresses; the client finds the leader itself (env CUBE_MANAGERS)")
	pf.DurationVar(&f.timeout, "timeout", 20*time.Second, "give up after this long (retries while no leader is elected included)")
	f.creds.register(pf, env)
}

// newClient returns a client of the --manager addresses that retries for
// retryFor while no leader answers.
func (f *clientFlags) newClient(retryFor time.Duration) (*api.Client, error) {
	tlsCfg, err := f.creds.tls()
	if err != nil {
		return nil, err
	}
	return api.NewClient(splitList(f.managers), api.ClientOptions{RetryFor: retryFor, Token: f.creds.token, TLS: tlsCfg, GiveUpUnreachable: giveUpUnreachable})
}

// giveUpUnreachable is how long a client command keeps trying while no
// manager accepts a connection at all: a cluster that is not running
// fails in about this long, with the addresses tried, instead of after
// --timeout. Leader elections (503s) are retried for --timeout as before.
const giveUpUnreachable = time.Second

// explainUnreachable adds to an *api.UnreachableError how to start a
// cluster or name another one; other errors are returned as they are.
func explainUnreachable(err error) error {
	var ue *api.UnreachableError
	if !errors.As(err, &ue) {
		return err
	}
	return fmt.Errorf("%w\nIs a cluster running? Start one with `make cluster` (three managers on %s), "+
		"or try Cube in one process with `cube dev`; or point -m/--manager (env CUBE_MANAGERS) at a running manager", err, defaultManagers)
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
	return explainUnreachable(fn(ctx, c))
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	// As docker ps: "5 seconds ago", "about an hour ago", "3 days ago".
	d := units.HumanDuration(time.Since(t))
	return strings.ToLower(d[:1]) + d[1:] + " ago"
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

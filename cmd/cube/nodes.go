package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
	"github.com/hashicorp/go-hclog"
)

// This file holds what `cube manager`, `cube worker` and `cube dev` share:
// each parses its flags into a config, calls the node's constructor
// (manager.NewServer, worker.NewAgent), and hands the running node to
// runUntilSignal. No behaviour of a node lives in this package.

// node is a running manager or worker.
type node interface {
	// Err receives the error of the node's API server if it stops.
	Err() <-chan error
	// Close stops everything the node started, in order.
	Close() error
}

// runUntilSignal starts the nodes in order and runs them until SIGINT or
// SIGTERM, or until one's API server fails, then closes them in reverse
// order. pprofAddr, if set, serves Go's profiles there for as long as the
// nodes run.
func runUntilSignal(ctx context.Context, logger hclog.Logger, pprofAddr string, starts ...func() (node, error)) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if pprofAddr != "" {
		_, stopPprof, err := api.ServeProfiles(pprofAddr, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	var nodes []node
	closeAll := func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			_ = nodes[i].Close()
		}
	}
	for _, start := range starts {
		n, err := start()
		if err != nil {
			closeAll()
			return err
		}
		nodes = append(nodes, n)
	}
	// At most two nodes (cube dev); a nil channel never fires.
	var errA, errB <-chan error
	errA = nodes[0].Err()
	if len(nodes) > 1 {
		errB = nodes[1].Err()
	}
	var err error
	select {
	case <-ctx.Done():
		logger.Info("signal received, shutting down")
	case err = <-errA:
		logger.Error("http server stopped", "error", err)
	case err = <-errB:
		logger.Error("http server stopped", "error", err)
	}
	closeAll()
	logger.Info("stopped")
	return err
}

// parsePeers parses "id=host:port,id=host:port".
func parsePeers(s string) ([]cluster.Peer, error) {
	var out []cluster.Peer
	for _, item := range splitList(s) {
		id, addr, ok := strings.Cut(item, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %q is not ID=HOST:PORT", item)
		}
		out = append(out, cluster.Peer{ID: id, Addr: addr})
	}
	return out, nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

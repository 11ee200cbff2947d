package manager

import (
	"context"
	"errors"
	"fmt"
)

// readyMaxLag is how many committed entries a ready manager may still have
// to apply: a few passes' worth of writes under load, far below what a
// manager replaying or restoring its log at start is behind.
const readyMaxLag = 1024

// Ready reports whether this manager can serve the API (GET /health/ready):
// its state machine has not stalled (upgrade.go), it knows a raft leader
// (there is a quorum and it is a member of it), and its state machine has
// applied the log up to within readyMaxLag entries of the commit index it
// knows. A manager that is not ready still answers; reads may be stale and
// writes are forwarded to the leader, if any.
func (m *Manager) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.Stalled(); err != nil {
		return err // what to upgrade; no address or ID in it
	}
	if _, addr := m.raft.Leader(); addr == "" {
		return errors.New("no raft leader known: no quorum of managers, or this manager is not a member yet")
	}
	// The FSM's own index, not raft's AppliedIndex, which counts entries
	// handed to the FSM goroutine (see cluster/DESIGN.md).
	if commit, applied := m.raft.CommitIndex(), m.fsm.AppliedIndex(); applied+readyMaxLag < commit {
		return fmt.Errorf("catching up: %d committed log entries not applied yet", commit-applied)
	}
	return nil
}

package api

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// ServerStatus answers GET /cluster/self: the answering manager's own raft
// progress. The leader asks a joining manager (a raft non-voter) for it
// before promoting it to voter, since raft keeps the leader's view of each
// follower's progress private.
type ServerStatus struct {
	// ID and RaftAddr are the manager's raft server ID and address.
	ID       string
	RaftAddr string
	// State is follower, candidate, leader or shutdown.
	State string
	// Term is the manager's current raft term.
	Term uint64
	// LastIndex, CommitIndex and AppliedIndex are its raft log's last index,
	// the commit index it knows, and the last index handed to its state
	// machine.
	LastIndex, CommitIndex, AppliedIndex uint64
	// LeaderID is the raft leader it knows ("" if none).
	LeaderID string
	// LastContact is how long ago (nanoseconds in JSON) it last heard from
	// a leader; negative when it never has since it started.
	LastContact time.Duration
	// MaxCommand is the highest replicated command type this manager's
	// state machine applies (fsm.MaxCommand; also in its gossip metadata).
	MaxCommand uint8 `json:",omitempty"`
}

// serverStatus answers GET /cluster/self from this manager, never
// forwarded: the point is what this one manager has seen. It is an
// internal route (the leader calls it with a manager certificate); an
// operator may call it too, to see why a manager is not promoted yet.
func (h *managerHandler) serverStatus(w http.ResponseWriter, r *http.Request) {
	st, err := h.svc.ServerStatus(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// ServerStatus asks one manager for its own raft progress (GET
// /cluster/self). Build the Client with that manager's address alone: the
// answer is about whichever manager answers.
func (c *Client) ServerStatus(ctx context.Context) (ServerStatus, error) {
	var st ServerStatus
	if _, err := c.call(ctx, http.MethodGet, "/cluster/self", nil, &st); err != nil {
		return ServerStatus{}, fmt.Errorf("server status: %w", err)
	}
	return st, nil
}

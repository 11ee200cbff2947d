package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/cluster"
)

// AddManager adds a manager to the raft configuration as a non-voter; the
// leader's promoter makes it a voter once it has caught up and stayed
// healthy for Autopilot.StabilizationTime. Replacing a live voter, or a
// replacement that would leave fewer reachable voters than a quorum, is
// refused with api.ErrConflict (see cluster.Raft.Join).
func (m *Manager) AddManager(ctx context.Context, id, raftAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.WriteTimeout)
	defer cancel()
	if err := m.raft.Join(ctx, id, raftAddr, m.liveness()); err != nil {
		if errors.Is(err, cluster.ErrUnsafeChange) {
			m.log.Warn("membership change refused", "change", "add manager", "id", id, "raft", raftAddr, "reason", err)
		}
		return m.clusterError("add manager "+id, err)
	}
	m.log.Info("manager in the raft configuration; a non-voter until promoted", "id", id, "raft", raftAddr)
	return nil
}

// RemoveManager removes a manager from the raft configuration. Removing the
// last voter, or a voter without which fewer reachable voters than a quorum
// would remain, is refused with api.ErrConflict; removing a dead voter or a
// non-voter is how an operator replaces a lost machine.
func (m *Manager) RemoveManager(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.WriteTimeout)
	defer cancel()
	if err := m.raft.Remove(ctx, id, m.liveness()); err != nil {
		if errors.Is(err, cluster.ErrUnsafeChange) {
			m.log.Warn("membership change refused", "change", "remove manager", "id", id, "reason", err)
		}
		return m.clusterError("remove manager "+id, err)
	}
	m.log.Info("manager removed from the raft configuration", "id", id)
	return nil
}

// ServerStatus is this manager's own raft progress (GET /cluster/self),
// which the leader reads before promoting it.
//
// A stalled manager answers its stall instead (the API turns it into a 503;
// the handler refuses first, this is for other callers): its raft applied
// index goes on counting entries its state machine skips, so the leader
// must not judge it caught up and promote it.
func (m *Manager) ServerStatus(context.Context) (api.ServerStatus, error) {
	if err := m.Stalled(); err != nil {
		return api.ServerStatus{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	st := m.raft.Status()
	return api.ServerStatus{
		ID: st.ID, RaftAddr: st.RaftAddr, State: st.State, Term: st.Term,
		LastIndex: st.LastIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LeaderID: st.LeaderID, LastContact: st.LastContact,
		MaxCommand: uint8(m.fsm.MaxCommand()),
	}, nil
}

// liveness is gossip's view of the managers, which membership changes are
// checked against.
func (m *Manager) liveness() cluster.Liveness {
	return cluster.GossipLiveness(m.gossip.Members())
}

// managerStatus asks a manager's API for its ServerStatus (GET
// /cluster/self) with a client of options opts, each call bounded by
// timeout. One HTTP client is shared by every call (opts.HTTP, else a
// plain one leaving from sourceIP), so connections are reused across
// checks. With security on, opts must present this manager's certificate:
// the route is for managers and operators.
func managerStatus(opts api.ClientOptions, sourceIP string, timeout time.Duration) cluster.StatusFunc {
	if opts.HTTP == nil {
		opts.HTTP = api.NewHTTPClient(sourceIP)
	}
	opts.Timeout, opts.RetryFor = timeout, timeout
	return func(ctx context.Context, apiAddr string) (cluster.ServerStatus, error) {
		c, err := api.NewClient([]string{apiAddr}, opts)
		if err != nil {
			return cluster.ServerStatus{}, err
		}
		st, err := c.ServerStatus(ctx)
		if err != nil {
			return cluster.ServerStatus{}, err
		}
		return cluster.ServerStatus{
			ID: st.ID, RaftAddr: st.RaftAddr, State: st.State, Term: st.Term,
			LastIndex: st.LastIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
			LeaderID: st.LeaderID, LastContact: st.LastContact,
		}, nil
	}
}

// startPromoter builds the promoter the leader runs (runPromoter) with
// status as its way of asking a non-voter for its progress.
func (m *Manager) startPromoter(status cluster.StatusFunc) error {
	p, err := cluster.NewPromoter(m.cfg.Autopilot, m.raft, m.gossip, status, m.log)
	if err != nil {
		return err
	}
	m.promoter = p
	return nil
}

// runPromoter runs the promoter until ctx ends (the end of this term of
// leadership) or the returned function is called, which stops it and waits
// for it. Without a promoter (the unit tests' managers) it does nothing.
func (m *Manager) runPromoter(ctx context.Context) (stop func()) {
	if m.promoter == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.promoter.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// promotions is how each non-voter's promotion stands, by raft ID, as the
// promoter last saw it (empty unless this manager leads).
func (m *Manager) promotions() map[string]string {
	if m.promoter == nil {
		return nil
	}
	return m.promoter.Waiting()
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// AutopilotConfig configures the Promoter, the leader's promotion of
// non-voters (Consul's autopilot "server stabilization"). Start from
// DefaultAutopilotConfig or FastAutopilotConfig.
type AutopilotConfig struct {
	// Interval is how often the leader checks each non-voter.
	Interval time.Duration
	// StabilizationTime is how long a non-voter must have been healthy
	// (reachable, hearing the leader, caught up) at every check, without a
	// gap, before it is promoted. A server that flaps never gets a vote.
	StabilizationTime time.Duration
	// MaxLag is how many entries a non-voter's applied index may trail the
	// leader's commit index and still count as caught up. Writes keep
	// committing while the leader asks, so zero would rarely hold under
	// load; a few hundred is a second or less of writes.
	MaxLag uint64
	// LastContactThreshold is how long ago the non-voter may have last
	// heard from the leader (heartbeats come every tenth of the raft
	// heartbeat timeout) and still count as reachable.
	LastContactThreshold time.Duration
	// StatusTimeout bounds one status request to a non-voter.
	StatusTimeout time.Duration
}

// DefaultAutopilotConfig is the production profile: checks every second,
// promotion after 10 s of health (Consul's ServerStabilizationTime), at
// most 256 entries behind, last contact within 1 s (the default raft
// heartbeat timeout), a status request bounded at 2 s.
func DefaultAutopilotConfig() AutopilotConfig {
	return AutopilotConfig{
		Interval:             time.Second,
		StabilizationTime:    10 * time.Second,
		MaxLag:               256,
		LastContactThreshold: time.Second,
		StatusTimeout:        2 * time.Second,
	}
}

// FastAutopilotConfig is the profile of `make cluster` and the tests:
// checks every 200 ms, promotion after 1 s of health, last contact within
// 500 ms (2.5 fast heartbeat timeouts: margin for a loaded test machine),
// a status request bounded at 1 s.
func FastAutopilotConfig() AutopilotConfig {
	c := DefaultAutopilotConfig()
	c.Interval = 200 * time.Millisecond
	c.StabilizationTime = time.Second
	c.LastContactThreshold = 500 * time.Millisecond
	c.StatusTimeout = time.Second
	return c
}

// Validate reports the first problem with c, naming the field and its
// bound; the error wraps ErrInvalidConfig.
func (c AutopilotConfig) Validate() error {
	switch {
	case c.Interval <= 0:
		return invalid("autopilot: Interval (%s) must be positive", c.Interval)
	case c.StabilizationTime < c.Interval:
		return invalid("autopilot: StabilizationTime (%s) must be at least Interval (%s): a server must pass two checks to be promoted", c.StabilizationTime, c.Interval)
	case c.LastContactThreshold <= 0:
		return invalid("autopilot: LastContactThreshold (%s) must be positive", c.LastContactThreshold)
	case c.StatusTimeout <= 0:
		return invalid("autopilot: StatusTimeout (%s) must be positive", c.StatusTimeout)
	}
	return nil
}

// promoteTimeout bounds one promotion: raft's ApplyTimeout bounds handing
// it over, this the wait for its commit.
const promoteTimeout = 5 * time.Second

// ServerStatus is a raft server's own account of its progress, which the
// leader asks a non-voter for before promoting it: raft (v1.7.3) keeps the
// leader's per-follower match index private, so the follower is asked.
type ServerStatus struct {
	// ID and RaftAddr are the server's raft identity, which the leader
	// matches against the configuration entry it is checking.
	ID       string
	RaftAddr string
	// State is "follower", "candidate", "leader" or "shutdown".
	State string
	// Term is the server's current term.
	Term uint64
	// LastIndex, CommitIndex and AppliedIndex are its log's last index,
	// the commit index it knows, and the last index handed to its FSM.
	LastIndex, CommitIndex, AppliedIndex uint64
	// LeaderID is the leader it knows ("" if none).
	LeaderID string
	// LastContact is how long ago it last heard from a leader; negative
	// when it never has (since it started).
	LastContact time.Duration
}

// Status returns this server's ServerStatus.
func (r *Raft) Status() ServerStatus {
	leaderID, _ := r.Leader()
	st := ServerStatus{
		ID:           r.cfg.ID,
		RaftAddr:     r.addr,
		State:        r.State(),
		Term:         r.raft.CurrentTerm(),
		LastIndex:    r.raft.LastIndex(),
		CommitIndex:  r.raft.CommitIndex(),
		AppliedIndex: r.raft.AppliedIndex(),
		LeaderID:     leaderID,
		LastContact:  -1,
	}
	if last := r.raft.LastContact(); !last.IsZero() {
		st.LastContact = time.Since(last)
	}
	return st
}

// StatusFunc asks the manager serving the HTTP API at apiAddr for its
// ServerStatus. The caller supplies it (the manager asks GET /cluster/self
// through the api package's client), so that this package does not speak
// the HTTP API itself.
type StatusFunc func(ctx context.Context, apiAddr string) (ServerStatus, error)

// PromoterRaft is what the Promoter needs from raft; *Raft implements it.
type PromoterRaft interface {
	IsLeader() bool
	Term() uint64
	CommitIndex() uint64
	Servers(ctx context.Context) ([]Server, error)
	Promote(ctx context.Context, id, addr string) error
}

// Promoter promotes the raft configuration's non-voters to voters once
// each has caught up and stayed healthy for StabilizationTime, as Consul's
// autopilot does. Joining managers enter as non-voters (Raft.Join), so a
// server that never catches up (a wrong or hostile address) never counts
// toward a quorum and can never stop the cluster from electing a leader.
//
// A non-voter is healthy at a check when gossip sees a manager of its ID
// alive at its raft address, and that manager's API (the address it
// gossips) answers a ServerStatus with the same ID and raft address, the
// leader's term, a last contact within LastContactThreshold, and an
// applied index at most MaxLag behind the leader's commit index. Any
// failed check starts its stabilization over.
//
// Run it on the leader only, for as long as it leads; a new leader starts
// every stabilization over (it has not watched the non-voters itself).
type Promoter struct {
	cfg     AutopilotConfig
	raft    PromoterRaft
	members MemberSource
	status  StatusFunc
	log     hclog.Logger
	now     func() time.Time

	mu      sync.Mutex
	healthy map[string]time.Time // non-voter "id@addr" → healthy since
	verdict map[string]string    // non-voter ID → what its last check found
}

// NewPromoter returns a Promoter; Run does the work.
func NewPromoter(cfg AutopilotConfig, r PromoterRaft, m MemberSource, status StatusFunc, log hclog.Logger) (*Promoter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r == nil || m == nil || status == nil {
		return nil, errors.New("autopilot: raft, a member source and a status function are required")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Promoter{cfg: cfg, raft: r, members: m, status: status, log: log.Named("autopilot"), now: time.Now,
		healthy: map[string]time.Time{}, verdict: map[string]string{}}, nil
}

// Run checks the non-voters every Interval and promotes those that have
// been healthy for StabilizationTime, until ctx ends.
func (p *Promoter) Run(ctx context.Context) {
	p.reset()
	defer p.reset()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reset forgets every stabilization (a new term of leadership starts over).
func (p *Promoter) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.healthy)
	clear(p.verdict)
}

// Waiting describes each non-voter's promotion as the last check saw it,
// by raft ID ("healthy for 1.2s of 10s", "not alive in gossip at its raft
// address", ...). It is empty on a server that does not run the Promoter.
func (p *Promoter) Waiting() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.verdict))
	for k, v := range p.verdict {
		out[k] = v
	}
	return out
}

// Check runs one pass: each non-voter is checked and promoted when it has
// been healthy long enough. Run calls it every Interval.
func (p *Promoter) Check(ctx context.Context) {
	if !p.raft.IsLeader() {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.StatusTimeout)
	servers, err := p.raft.Servers(sctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.log.Debug("read the raft configuration", "error", err)
		}
		return
	}
	members := p.members.Members()
	seen, seenID := map[string]bool{}, map[string]bool{}
	for _, s := range servers {
		if s.Voter {
			continue
		}
		key := s.ID + "@" + s.Addr
		seen[key], seenID[s.ID] = true, true
		why := p.unhealthy(ctx, s, members)
		now := p.now()
		p.mu.Lock()
		since, was := p.healthy[key]
		if why != "" {
			delete(p.healthy, key)
			p.verdict[s.ID] = "not promoted: " + why
		} else {
			if !was {
				since = now
				p.healthy[key] = now
			}
			p.verdict[s.ID] = fmt.Sprintf("caught up; healthy for %s of %s", now.Sub(since).Round(time.Millisecond), p.cfg.StabilizationTime)
		}
		p.mu.Unlock()
		if why != "" {
			if was {
				p.log.Info("non-voter no longer healthy; its stabilization starts over", "id", s.ID, "addr", s.Addr, "reason", why)
			}
			continue
		}
		if now.Sub(since) < p.cfg.StabilizationTime {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, promoteTimeout)
		err := p.raft.Promote(pctx, s.ID, s.Addr)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("promote non-voter", "id", s.ID, "addr", s.Addr, "error", err)
			}
			continue
		}
		p.log.Info("promoted non-voter to voter: it caught up and stayed healthy", "id", s.ID, "addr", s.Addr, "healthy_for", now.Sub(since).Round(time.Millisecond))
		p.mu.Lock()
		delete(p.healthy, key)
		delete(p.verdict, s.ID)
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.healthy {
		if !seen[k] {
			delete(p.healthy, k)
		}
	}
	for id := range p.verdict {
		if !seenID[id] {
			delete(p.verdict, id)
		}
	}
}

// unhealthy returns why non-voter s cannot count as healthy now, or "".
func (p *Promoter) unhealthy(ctx context.Context, s Server, members []Member) string {
	var api string
	state := MemberState("")
	for _, m := range members {
		if m.Meta.Role == RoleManager && m.Meta.RaftID == s.ID {
			if m.Meta.RaftAddr != s.Addr {
				return fmt.Sprintf("gossip knows manager %s at raft address %q, not %s", s.ID, m.Meta.RaftAddr, s.Addr)
			}
			api, state = m.Meta.API, m.State
		}
	}
	switch {
	case state == "":
		return "no manager " + s.ID + " in gossip"
	case state != StateAlive:
		return "gossip sees it " + string(state)
	case api == "":
		return "it gossips no API address"
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.StatusTimeout)
	st, err := p.status(sctx, api)
	cancel()
	commit, term := p.raft.CommitIndex(), p.raft.Term()
	switch {
	case err != nil:
		return fmt.Sprintf("its API at %s did not answer its status: %v", api, err)
	case st.ID != s.ID || st.RaftAddr != s.Addr:
		return fmt.Sprintf("its API at %s answers for %s at %s", api, st.ID, st.RaftAddr)
	case st.Term != term:
		return fmt.Sprintf("it is at term %d, the leader at %d", st.Term, term)
	case st.LastContact < 0:
		return "it has not heard from a leader yet"
	case st.LastContact > p.cfg.LastContactThreshold:
		return fmt.Sprintf("it last heard from the leader %s ago (more than %s)", st.LastContact.Round(time.Millisecond), p.cfg.LastContactThreshold)
	case st.AppliedIndex+p.cfg.MaxLag < commit:
		return fmt.Sprintf("catching up: applied index %d, leader's commit index %d", st.AppliedIndex, commit)
	}
	return ""
}

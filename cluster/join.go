package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// AskFunc asks one of the managers serving the given HTTP API addresses to
// add raft server id at raftAddr (as a non-voter, which the leader
// promotes once it has caught up; see Promoter). The caller supplies it (the
// api package's Client.AddManager, in practice), so that this package does
// not speak the HTTP API itself.
type AskFunc func(ctx context.Context, apiAddrs []string, id, raftAddr string) error

// JoinConfig configures a Joiner.
type JoinConfig struct {
	// ID and RaftAddr are this manager's raft server ID and address.
	ID       string
	RaftAddr string
	// Interval is the pause between two rounds of asking.
	Interval time.Duration
	// AskTimeout bounds one round (one AskFunc call).
	AskTimeout time.Duration
	// Logger receives one line per failed round and one on success.
	Logger hclog.Logger
}

// DefaultJoinConfig asks once a second, each round bounded at 10 s.
func DefaultJoinConfig() JoinConfig {
	return JoinConfig{Interval: time.Second, AskTimeout: 10 * time.Second}
}

// Validate checks the configuration, naming the field and its bound.
func (c JoinConfig) Validate() error {
	switch {
	case c.ID == "" || c.RaftAddr == "":
		return invalid("join: ID and RaftAddr are required")
	case c.Interval <= 0:
		return invalid("join: Interval (%s) must be positive", c.Interval)
	case c.AskTimeout <= 0:
		return invalid("join: AskTimeout (%s) must be positive", c.AskTimeout)
	}
	return nil
}

// LeaderSource tells whether this server has heard from a leader; *Raft
// implements it.
type LeaderSource interface {
	Leader() (id, addr string)
}

// MemberSource lists the gossip pool; *Pool implements it.
type MemberSource interface {
	Members() []Member
}

// Joiner brings a manager started without initial peers into the raft
// configuration, as rqlite's cluster/join.go does: until the manager hears
// from a leader (which means it is in the configuration), it asks the
// managers gossip knows to add it. It enters as a non-voter: hearing from
// the leader means it is in the configuration, and the leader's Promoter
// makes it a voter once it has caught up and stayed healthy, so the joiner
// does not wait for that. Adding is idempotent on the leader (Raft.Join),
// so asking twice is harmless, and a manager restarted on its data dir,
// already a member, stops asking at once.
type Joiner struct {
	cfg     JoinConfig
	raft    LeaderSource
	members MemberSource
	ask     AskFunc
	log     hclog.Logger
}

// NewJoiner returns a Joiner; Run does the work.
func NewJoiner(cfg JoinConfig, r LeaderSource, m MemberSource, ask AskFunc) (*Joiner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r == nil || m == nil || ask == nil {
		return nil, errors.New("join: a leader source, a member source and an ask function are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Joiner{cfg: cfg, raft: r, members: m, ask: ask, log: cfg.Logger.Named("join")}, nil
}

// Run asks until this server hears from a leader or a manager accepts the
// request (nil), or until ctx ends (ctx's error).
func (j *Joiner) Run(ctx context.Context) error {
	t := time.NewTicker(j.cfg.Interval)
	defer t.Stop()
	for {
		if leader, _ := j.raft.Leader(); leader != "" {
			return nil
		}
		if addrs := j.targets(); len(addrs) > 0 {
			actx, cancel := context.WithTimeout(ctx, j.cfg.AskTimeout)
			err := j.ask(actx, addrs, j.cfg.ID, j.cfg.RaftAddr)
			cancel()
			if err == nil {
				j.log.Info("asked the cluster to add this manager", "id", j.cfg.ID, "raft", j.cfg.RaftAddr)
				return nil
			}
			if ctx.Err() == nil {
				j.log.Warn("ask to join the cluster; will retry", "managers", addrs, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// targets are the API addresses of the other managers gossip sees alive.
func (j *Joiner) targets() []string {
	var addrs []string
	for _, m := range j.members.Members() {
		if m.Meta.Role == RoleManager && m.Meta.RaftID != j.cfg.ID && m.State == StateAlive && m.Meta.API != "" {
			addrs = append(addrs, m.Meta.API)
		}
	}
	return addrs
}

// ParseGossipAddr splits a gossip address "IP:PORT" into the BindAddr and
// BindPort of a GossipConfig, with an error a person can act on.
func ParseGossipAddr(addr string) (ip string, port int, err error) {
	parsed, port, err := splitIPPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("gossip address %q: %w", addr, err)
	}
	if port == 0 {
		return "", 0, fmt.Errorf("gossip address %q: the port must be from 1 to 65535", addr)
	}
	return parsed.String(), port, nil
}

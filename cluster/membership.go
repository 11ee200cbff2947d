package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Liveness tells, from gossip, how the manager with raft ID id listening
// on raft address addr is doing: StateAlive, StateSuspect, StateDead or
// StateLeft, or "" when no manager with that ID is known at that address
// (never seen, or seen only at another raft address: then the server the
// configuration names is not the one gossip sees). GossipLiveness builds
// one from the pool's members.
type Liveness func(id, addr string) MemberState

// GossipLiveness is the Liveness of a gossip view: a manager is known by
// its Meta.RaftID and Meta.RaftAddr.
func GossipLiveness(members []Member) Liveness {
	type key struct{ id, addr string }
	states := make(map[key]MemberState, len(members))
	for _, m := range members {
		if m.Meta.Role == RoleManager && m.Meta.RaftID != "" {
			states[key{m.Meta.RaftID, m.Meta.RaftAddr}] = m.State
		}
	}
	return func(id, addr string) MemberState { return states[key{id, addr}] }
}

// reachable reports whether s counts as reachable for a quorum: the leader
// itself, or a server gossip sees alive at its configured address. A
// suspect is not counted: it may be dying, and a change that needs it to
// keep a quorum must wait until gossip makes up its mind.
func reachable(s raft.Server, leaderID string, live Liveness) bool {
	if string(s.ID) == leaderID {
		return true
	}
	return live != nil && live(string(s.ID), string(s.Address)) == StateAlive
}

// isLive reports whether s looks alive enough that replacing it would take
// a working server out of the cluster: the leader, or a server gossip sees
// alive or suspect at its configured address.
func isLive(s raft.Server, leaderID string, live Liveness) bool {
	if string(s.ID) == leaderID {
		return true
	}
	if live == nil {
		return false
	}
	st := live(string(s.ID), string(s.Address))
	return st == StateAlive || st == StateSuspect
}

// checkRemoval refuses (ErrUnsafeChange) to take server id out of servers
// when that would leave no voter, or fewer reachable voters than a quorum
// of the voters that remain: the remaining cluster could then not commit
// anything, and would never elect again if the unreachable ones are gone
// for good. Removing a non-voter, or an ID that is not there, is always
// safe. The check is about the configuration that results, so removing a
// dead voter (the way to replace a lost machine) passes whenever the
// cluster has a quorum now.
func checkRemoval(servers []raft.Server, leaderID, id string, live Liveness) error {
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return string(s.ID) == id })
	if i < 0 || servers[i].Suffrage != raft.Voter {
		return nil
	}
	var rest, unreachable []string
	reach := 0
	for _, s := range servers {
		if s.Suffrage != raft.Voter || string(s.ID) == id {
			continue
		}
		rest = append(rest, string(s.ID))
		if reachable(s, leaderID, live) {
			reach++
		} else {
			unreachable = append(unreachable, string(s.ID))
		}
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: %s is the last voter; removing it would leave a cluster that can never elect a leader", ErrUnsafeChange, id)
	}
	if need := len(rest)/2 + 1; reach < need {
		return fmt.Errorf("%w: removing voter %s would leave %d reachable voter(s) of %d (unreachable: %s), fewer than the %d a quorum needs; bring %s back, or remove the unreachable voters first",
			ErrUnsafeChange, id, reach, len(rest), strings.Join(unreachable, ", "), need, strings.Join(unreachable, ", "))
	}
	return nil
}

// planJoin decides how server id at addr joins servers: done is true when
// it is already there (a voter, or a non-voter awaiting promotion), else
// remove lists the entries to take out first (the same ID at another
// address, another ID at the same address). Each removal is checked as
// checkRemoval does, on the configuration left by the ones before it, and
// a live voter is never replaced: it has to be removed explicitly first.
func planJoin(servers []raft.Server, leaderID, id, addr string, live Liveness) (done bool, remove []raft.Server, err error) {
	cur := slices.Clone(servers)
	for _, s := range servers {
		sameID, sameAddr := string(s.ID) == id, string(s.Address) == addr
		switch {
		case sameID && sameAddr:
			return true, nil, nil
		case !sameID && !sameAddr:
			continue
		}
		if string(s.ID) == leaderID {
			return false, nil, fmt.Errorf("%w: %s at %s conflicts with the leader itself (%s at %s); move leadership elsewhere first", ErrUnsafeChange, id, addr, s.ID, s.Address)
		}
		if s.Suffrage == raft.Voter && isLive(s, leaderID, live) {
			return false, nil, fmt.Errorf("%w: %s is a live voter at %s; remove it first (DELETE /cluster/servers/%s) if it is really to be replaced by %s at %s",
				ErrUnsafeChange, s.ID, s.Address, s.ID, id, addr)
		}
		if err := checkRemoval(cur, leaderID, string(s.ID), live); err != nil {
			return false, nil, fmt.Errorf("replace %s at %s by %s at %s: %w", s.ID, s.Address, id, addr, err)
		}
		cur = slices.DeleteFunc(cur, func(c raft.Server) bool { return c.ID == s.ID })
		remove = append(remove, s)
	}
	return false, remove, nil
}

// heartbeatObserverBuffer is the buffer of the heartbeat observer's
// channel; raft drops observations that do not fit (they repeat).
const heartbeatObserverBuffer = 64

// watchHeartbeats records, from raft's observations, the followers this
// server (as leader) fails to heartbeat. Gossip takes about a second (fast
// profile) to several seconds to declare a crashed manager dead; the
// leader's heartbeats to a crashed process fail at once, every tenth of a
// heartbeat timeout. Membership checks use both (reachableLiveness), so a
// removal right after a crash is not judged on gossip's stale view.
func (r *Raft) watchHeartbeats() {
	defer r.wg.Done()
	ch := make(chan raft.Observation, heartbeatObserverBuffer)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.raft.RegisterObserver(obs)
	defer r.raft.DeregisterObserver(obs)
	for {
		select {
		case <-r.stopCh:
			return
		case o := <-ch:
			r.hbMu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				r.failedHeartbeat[d.PeerID] = time.Now()
			case raft.ResumedHeartbeatObservation:
				delete(r.failedHeartbeat, d.PeerID)
			}
			r.hbMu.Unlock()
		}
	}
}

// heartbeatFailing reports whether this server's last heartbeat to id
// failed recently. raft retries a failing heartbeat at least every half
// heartbeat timeout, so a mark older than two timeouts is stale (an old
// term's, or a follower whose next attempt still hangs on a silent
// machine; gossip covers that one).
func (r *Raft) heartbeatFailing(id string) bool {
	r.hbMu.Lock()
	defer r.hbMu.Unlock()
	at, ok := r.failedHeartbeat[raft.ServerID(id)]
	return ok && time.Since(at) < 2*r.cfg.HeartbeatTimeout
}

// reachableLiveness refines live with this leader's heartbeats: a server
// gossip sees alive but that the leader currently fails to heartbeat is
// treated as suspect, which counts as live (it is not replaced without an
// explicit removal) but not as reachable (no quorum is counted on it).
func (r *Raft) reachableLiveness(live Liveness) Liveness {
	return func(id, addr string) MemberState {
		if live == nil {
			return ""
		}
		st := live(id, addr)
		if st == StateAlive && r.heartbeatFailing(id) {
			return StateSuspect
		}
		return st
	}
}

// configChangeRetries bounds how often a membership change is planned
// again after another change slipped in between its check and its write.
const configChangeRetries = 3

// errConfigChanged marks a change raft refused because the configuration
// moved past the index it was planned on (raft reports it as a plain
// formatted error).
func errConfigChanged(err error) bool {
	return err != nil && strings.Contains(err.Error(), "configuration changed since")
}

// Join adds server id at raft address addr as a non-voter; the leader's
// Promoter makes it a voter once it has caught up and been stable a while
// (autopilot), so a server that never catches up (a wrong address, a
// machine that is not there) never counts toward a quorum. It must run on
// the leader (ErrNotLeader otherwise).
//
// It is idempotent: a server with the same ID and address, voter or not,
// is left alone. A server known under the same ID at another address, or
// under another ID at the same address, is removed first, unless it is a
// live voter (alive or suspect in gossip at its address, per live) or its
// removal would leave fewer reachable voters than a quorum (see
// checkRemoval): those changes fail with ErrUnsafeChange and change
// nothing. A nil live knows no server but the leader as reachable; a
// server the leader's heartbeats currently fail to reach is not counted
// as reachable whatever live says.
//
// Each change is written with the configuration index it was checked
// against, so a concurrent change makes raft refuse it and it is checked
// again. The new server must already be running (with empty Peers).
func (r *Raft) Join(ctx context.Context, id, addr string, live Liveness) error {
	if id == "" || addr == "" {
		return fmt.Errorf("join: %w: server ID and address are required", ErrInvalidConfig)
	}
	if err := r.checkLeader(); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := r.join(ctx, id, addr, live)
		if !errConfigChanged(err) || attempt >= configChangeRetries {
			return err
		}
	}
}

// join is one attempt of Join.
func (r *Raft) join(ctx context.Context, id, addr string, live Liveness) error {
	conf, index, err := r.configurationIndex(ctx)
	if err != nil {
		return err
	}
	done, remove, err := planJoin(conf.Servers, r.cfg.ID, id, addr, r.reachableLiveness(live))
	if err != nil || done {
		return err
	}
	for _, s := range remove {
		r.log.Info("removing stale raft server before join", "id", s.ID, "addr", s.Address, "voter", s.Suffrage == raft.Voter, "new_id", id, "new_addr", addr)
		f := r.raft.RemoveServer(s.ID, index, r.enqueueTimeout(ctx))
		if err := r.wait(ctx, f); err != nil {
			return r.configErr("remove stale server "+string(s.ID), err)
		}
		index = f.Index()
	}
	if err := r.wait(ctx, r.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), index, r.enqueueTimeout(ctx))); err != nil {
		return r.configErr("add non-voter "+id, err)
	}
	r.log.Info("raft server joined as a non-voter; it is promoted once caught up and stable", "id", id, "addr", addr)
	return nil
}

// Remove takes server id out of the raft configuration. It must run on
// the leader (ErrNotLeader otherwise); an unknown ID is not an error.
// Removing a voter is refused with ErrUnsafeChange when it is the last one
// or when fewer reachable voters (the leader, and servers live reports
// alive that the leader's heartbeats reach) than a quorum would remain; removing a dead voter or a non-voter
// is how an operator replaces a lost machine, and passes. Removing the
// leader itself makes it step down and shut its raft down once the change
// commits.
func (r *Raft) Remove(ctx context.Context, id string, live Liveness) error {
	if err := r.checkLeader(); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := r.remove(ctx, id, live)
		if !errConfigChanged(err) || attempt >= configChangeRetries {
			return err
		}
	}
}

// remove is one attempt of Remove.
func (r *Raft) remove(ctx context.Context, id string, live Liveness) error {
	conf, index, err := r.configurationIndex(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return nil
	}
	if err := checkRemoval(conf.Servers, r.cfg.ID, id, r.reachableLiveness(live)); err != nil {
		return err
	}
	if err := r.wait(ctx, r.raft.RemoveServer(raft.ServerID(id), index, r.enqueueTimeout(ctx))); err != nil {
		return r.configErr("remove server "+id, err)
	}
	r.log.Info("raft server removed", "id", id)
	return nil
}

// Promote makes non-voter id at addr a voter (raft AddVoter with the same
// ID and address). It must run on the leader. A server that is already a
// voter at addr is left alone; one that is absent or at another address
// is an ErrUnsafeChange (the configuration moved on since the caller
// looked). The Promoter calls it; see Join.
func (r *Raft) Promote(ctx context.Context, id, addr string) error {
	if err := r.checkLeader(); err != nil {
		return err
	}
	conf, index, err := r.configurationIndex(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == id })
	switch {
	case i < 0 || string(conf.Servers[i].Address) != addr:
		return fmt.Errorf("%w: promote %s at %s: no such non-voter in the configuration", ErrUnsafeChange, id, addr)
	case conf.Servers[i].Suffrage == raft.Voter:
		return nil
	}
	if err := r.wait(ctx, r.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), index, r.enqueueTimeout(ctx))); err != nil {
		return r.configErr("promote "+id, err)
	}
	r.log.Info("raft non-voter promoted to voter", "id", id, "addr", addr)
	return nil
}

// configErr is futureErr for configuration changes: a change refused
// because the configuration moved on keeps raft's message (Join and Remove
// retry on it), anything else maps as futureErr does.
func (r *Raft) configErr(op string, err error) error {
	if errConfigChanged(err) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return r.futureErr(op, err)
}

// configurationIndex returns the latest raft configuration and the log
// index it was written at, the prevIndex a change checked against it must
// name.
func (r *Raft) configurationIndex(ctx context.Context) (raft.Configuration, uint64, error) {
	f := r.raft.GetConfiguration()
	if err := r.wait(ctx, f); err != nil {
		return raft.Configuration{}, 0, r.futureErr("get configuration", err)
	}
	return f.Configuration(), f.Index(), nil
}
